"""One entry point for every tuner: `tune_images(method, G, targets, w_init, cfg, loss)`.

Every method that optimises runs `cfg.steps` steps (`tune.steps`); e4e runs none."""
from __future__ import annotations

import gc
import time
from typing import Optional

import torch

from gani.config.schema import TuneSection
from gani.losses import SimilarityLoss

from .common import ProgressFn, autocast, is_oom, synth
from .gani import tune_gani
from .projection import tune_projection
from .pti import tune_pti
from .result import TunedImage, TuningOOM

METHODS = ("gani", "pti", "wplus_projection", "w_projection", "e4e")


def steps_of(method: str, cfg: TuneSection) -> int:
    """The optimisation steps `method` runs under `cfg`: `cfg.steps`, or 0 for e4e (the start
    latent as is). A result's loss curve holds steps + 1 values unless it stopped early."""
    return 0 if method == "e4e" else cfg.steps


@torch.no_grad()
def _e4e_only(G, targets, w_init, cfg, loss, **_) -> list[TunedImage]:
    """No tuning: the start latent as is (the curve holds its one L_sim value)."""
    t0 = time.perf_counter()
    with autocast(G, cfg.precision):
        l, parts = loss(synth(G, w_init), targets)
    sec = (time.perf_counter() - t0) / targets.shape[0]
    out = []
    for i in range(targets.shape[0]):
        v = float(l[i])
        err = None if torch.isfinite(l[i]) else f"non-finite loss ({v}) of the start latent"
        out.append(TunedImage(method="e4e", latent=w_init[i].detach().float().cpu(),
                              loss_curve=[v], error=err, seconds=sec,
                              parts={k: [float(p[i])] for k, p in parts.items()}))
    return out


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_batch(method, G, targets, w_init, cfg, loss, **kw) -> list[TunedImage]:
    if method == "gani":
        return tune_gani(G, targets, w_init, cfg, loss, **kw)
    if method == "pti":
        return tune_pti(G, targets, w_init, cfg, loss, **kw)
    if method in ("wplus_projection", "w_projection"):
        return tune_projection(G, targets, w_init, cfg, loss,
                               w_plus=method == "wplus_projection", **kw)
    if method == "e4e":
        return _e4e_only(G, targets, w_init, cfg, loss)
    raise ValueError(f"unknown tune method {method!r}; one of {METHODS}")


def tune_images(method: str, G, targets: torch.Tensor, w_init: torch.Tensor,
                cfg: TuneSection, loss: SimilarityLoss, progress: Optional[ProgressFn] = None,
                *, verbose: bool = False, on_oom: str = "raise") -> list[TunedImage]:
    """Tune N images in batches of `cfg.batch_size`; one `TunedImage` per image, in order.

    G: the generator (frozen; its device is the tuning device). targets [N, 3, H, W] in
    [−1, 1] at G's resolution; w_init [N, n_latent, style_dim] (e.g. e4e's output + latent
    average). loss: Eq. 1 (`SimilarityLoss`); the regularizer and PTI's loss are derived from
    it. progress(info: dict) is called every `cfg.log_every` steps with the step and the
    per-image losses; verbose shows a tqdm bar.

    Out of device memory: on_oom="raise" raises `TuningOOM(batch_size)`; "halve" retries the
    failed batch in halves (down to 1 image, then raises); "isolate" halves the same way, and
    an image that runs out of memory alone gets a result with `error` and
    `reason="out_of_memory"` (its start latent, no deltas) instead of stopping the others.
    Before a retry the failed attempt's tensors are released (the exception and its frames
    are dropped, then the CUDA cache is emptied), so the halves get the memory back.
    """
    if method not in METHODS:
        raise ValueError(f"unknown tune method {method!r}; one of {METHODS}")
    if on_oom not in ("raise", "halve", "isolate"):
        raise ValueError("on_oom must be 'raise', 'halve' or 'isolate'")
    G.requires_grad_(False)
    p = next(G.parameters())
    targets = targets.to(p.device, p.dtype)
    w_init = w_init.to(p.device, p.dtype)
    if w_init.dim() == 2:
        w_init = w_init.unsqueeze(1).repeat(1, G.n_latent, 1)
    if targets.shape[0] != w_init.shape[0]:
        raise ValueError(f"{targets.shape[0]} targets but {w_init.shape[0]} latents")
    if tuple(targets.shape[-2:]) != (G.size, G.size):
        raise ValueError(f"targets are {tuple(targets.shape[-2:])} px, the generator makes "
                         f"{G.size} px")

    def run(start: int, stop: int) -> list[TunedImage]:
        message = None
        try:
            return _run_batch(method, G, targets[start:stop], w_init[start:stop], cfg, loss,
                              progress=progress, verbose=verbose, first_index=start)
        except Exception as exc:  # noqa: BLE001 - only OOM is translated
            if not is_oom(exc):
                raise
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # out of the except block: the exception, its traceback and the failed batch's
        # frames (activations, optimizer state) are gone; give their memory back first
        _release_memory()
        n = stop - start
        if on_oom != "raise" and n > 1:
            mid = start + n // 2
            return run(start, mid) + run(mid, stop)
        if on_oom == "isolate":
            return [TunedImage(method=method, latent=w_init[start].detach().float().cpu(),
                               error=f"out of device memory tuning this image alone: {message}",
                               reason="out_of_memory", meta={"oom_batch_size": n})]
        raise TuningOOM(n, message)

    results: list[TunedImage] = []
    bs = cfg.batch_size
    for start in range(0, targets.shape[0], bs):
        results += run(start, min(start + bs, targets.shape[0]))
    return results
