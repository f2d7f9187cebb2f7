"""Pieces every tuner shares: the localization regularizer, per-image bookkeeping (curves,
non-finite stops, last good state, progress) and the optimizer factory."""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional, Sequence

import torch

from gani.config.schema import OptimizerSection, RegularizerSection
from gani.losses import LossTarget, SimilarityLoss

from .result import TunedImage

ProgressFn = Callable[[dict], None]


def device_of(G) -> torch.device:
    return next(G.parameters()).device


def autocast(G, precision: str):
    """bf16 autocast on CUDA when asked, else a no-op (CPU runs fp32)."""
    dev = device_of(G)
    if precision == "bf16" and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def synth(G, w: torch.Tensor, deltas=None, noise=None) -> torch.Tensor:
    kw = {}
    if deltas:
        kw["weight_deltas"] = deltas
    if noise is not None:
        kw["noise"] = noise
    return G.synthesis(w, noise_mode="const", **kw)


def repeat_per_image(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if n == 1 else x.repeat_interleave(n, 0)


class LocalityRegularizer:
    """Eq. 5's second term: L_sim(G(w_r; θ), G(w_r; θ')), w_r = mapping(z), z ~ N(0, I).

    Each step draws `n_latents` z from its own seeded generator — the same sequence whatever
    the batch, so a batched run sees the same w_r as B single runs — and renders G(w_r; θ)
    once, without gradient; every image of the batch is compared on those w_r.
    """

    def __init__(self, G, reg: RegularizerSection, loss: SimilarityLoss, seed: int):
        self.G, self.n = G, int(reg.n_latents)
        self.lambda_r = float(reg.lambda_r)
        self.loss = loss.regularizer(reg)
        self.gen = torch.Generator().manual_seed(int(seed) + 7919)

    @property
    def active(self) -> bool:
        return self.lambda_r > 0 and bool(self.loss.active_terms())

    def __call__(self, deltas: dict, batch: int) -> torch.Tensor:
        """Per-image regularizer [B] (mean over the step's n latents), unweighted."""
        dev = device_of(self.G)
        z = torch.randn(self.n, self.G.style_dim, generator=self.gen).to(dev)
        with torch.no_grad():
            w_r = self.G.mapping(z).unsqueeze(1).repeat(1, self.G.n_latent, 1)
            ref = synth(self.G, w_r)
        w = w_r.repeat(batch, 1, 1)
        d = {k: repeat_per_image(v, self.n) for k, v in deltas.items()}
        out = synth(self.G, w, d)
        l, _ = self.loss(out, ref.repeat(batch, 1, 1, 1))
        return l.view(batch, self.n).mean(1)


def objective(G, w, deltas, target: LossTarget, loss: SimilarityLoss,
              reg: Optional[LocalityRegularizer], noise=None):
    """Eq. 5 per image: (L [B], parts {term: [B]}) with parts['reg'] when the regularizer runs."""
    img = synth(G, w, deltas, noise)
    total, parts = loss(img, target)
    if reg is not None and reg.active:
        r = reg(deltas, w.shape[0])
        parts = dict(parts, reg=r)
        total = total + reg.lambda_r * r
    return total, parts


def make_optimizer(groups, ocfg: OptimizerSection, batch_dims: int = 1):
    """Adam (default) or Ranger over parameter groups; every state is element-wise or
    per-image (Ranger's GC over each image's slice), so images in a batch stay independent."""
    if ocfg.name == "adam":
        return torch.optim.Adam(groups, lr=ocfg.lr, betas=tuple(ocfg.betas),
                                eps=ocfg.eps or 1e-8)
    if ocfg.name == "ranger":
        from gani.optim import Ranger

        return Ranger(groups, lr=ocfg.lr, betas=tuple(ocfg.betas), eps=ocfg.eps or 1e-5,
                      k=ocfg.lookahead_k, alpha=ocfg.lookahead_alpha, gc=ocfg.gc,
                      warmup_steps=ocfg.warmup_steps,
                      degenerate_to_sgd=ocfg.degenerate_to_sgd, batch_dims=batch_dims)
    raise ValueError(f"unknown optimizer {ocfg.name!r}")


class Tracker:
    """Per-image curves, non-finite stops and the last good state of a batch.

    `state` is a list of batched tensors (dim 0 = image) that determine each image's result.
    `record(t, losses, parts)` marks images whose loss is not finite as stopped (error text),
    and for the others copies their current state as the last good one; `freeze()` puts the
    stopped images' last good state back after an optimizer step, so they never move again.
    """

    def __init__(self, state: Sequence[torch.Tensor], batch: int, steps: int, method: str,
                 progress: Optional[ProgressFn] = None, verbose: bool = False,
                 log_every: int = 10, first_index: int = 0):
        self.state = list(state)
        self.good = [s.detach().clone() for s in self.state]
        self.batch, self.steps, self.method = batch, steps, method
        self.curves = [[] for _ in range(batch)]
        self.parts: list[dict] = [{} for _ in range(batch)]
        self.errors: list[Optional[str]] = [None] * batch
        self.ever_good = [False] * batch
        self.active = torch.ones(batch, dtype=torch.bool)
        self.progress, self.log_every, self.first_index = progress, log_every, first_index
        self.bar = None
        if verbose:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, desc=f"{method} ×{batch}", leave=False)

    def stop(self, i: int, reason: str) -> None:
        if self.errors[i] is None:
            self.errors[i] = reason
        self.active[i] = False

    @torch.no_grad()
    def record(self, t: int, losses: torch.Tensor, parts: dict) -> None:
        # one device-to-host copy per step (the losses and every part, stacked): on a GPU
        # each separate copy is a synchronisation, and there were 1 + terms × images of them
        names = list(parts)
        host = torch.stack([losses.detach().float().double(),
                            *(parts[k].detach().double().broadcast_to(losses.shape)
                              for k in names)]).cpu()
        keep = self.log_values(t, host[0], dict(zip(names, host[1:].tolist())))
        if bool(keep.all()):  # the usual step: a plain copy, no mask, no temporary
            for s, g in zip(self.state, self.good):
                g.copy_(s.detach())
        elif bool(keep.any()):
            mask = keep.to(self.state[0].device) if self.state else None
            for s, g in zip(self.state, self.good):
                m = mask.view(-1, *([1] * (s.dim() - 1)))
                g.copy_(torch.where(m, s.detach(), g))
        if self.bar is not None:
            self.bar.update(0 if t == 0 else 1)
            act = [c[-1] for c, a in zip(self.curves, self.active.tolist()) if a and c]
            if act:
                self.bar.set_postfix(loss=f"{sum(act) / len(act):.4g}")
        if self.progress is not None and (t % self.log_every == 0 or t == self.steps):
            self.progress({"method": self.method, "step": t, "steps": self.steps,
                           "first_index": self.first_index,
                           "losses": [c[-1] if c else math.nan for c in self.curves],
                           "active": self.active.tolist()})

    def log_values(self, t: int, vals: torch.Tensor, part_vals: dict) -> torch.Tensor:
        """Append step t's host values (losses [B], {part: [B floats]}) to the active images'
        curves and stop those whose loss is not finite; returns which images' state is the
        new good one ([B] bool, on the host)."""
        finite = torch.isfinite(vals)
        for i in range(self.batch):
            if not self.active[i]:
                continue
            v = float(vals[i])
            self.curves[i].append(v)
            for k, pv in part_vals.items():
                self.parts[i].setdefault(k, []).append(pv[i])
            if not finite[i]:
                kept = f"kept the step-{t - 1} state" if self.ever_good[i] else "no finite state"
                self.stop(i, f"non-finite loss ({v}) at step {t} of {self.method}; stopped "
                             f"this image, {kept}")
            else:
                self.ever_good[i] = True
        return finite & self.active

    @property
    def any_active(self) -> bool:
        return bool(self.active.any())

    def loss_to_backprop(self, losses: torch.Tensor) -> torch.Tensor:
        """Σ over active images (stopped images contribute an exact 0)."""
        if bool(self.active.all()):
            return losses.sum()
        act = self.active.to(losses.device)
        return torch.where(act, losses, torch.zeros_like(losses)).sum()

    @torch.no_grad()
    def zero_stopped_grads(self, params) -> None:
        if bool(self.active.all()):
            return
        idx = (~self.active).nonzero().flatten().tolist()
        for p in params:
            if p.grad is not None:
                p.grad[idx] = 0

    @torch.no_grad()
    def freeze(self) -> None:
        """Restore every stopped image's last good state (after an optimizer step)."""
        if bool(self.active.all()):
            return
        idx = (~self.active).nonzero().flatten().tolist()
        for s, g in zip(self.state, self.good):
            s[idx] = g[idx]

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def results(self, method: str, w: torch.Tensor, deltas: dict, seconds: float,
                meta: dict) -> list[TunedImage]:
        """One `TunedImage` per image of the batch: its latent, its weight deltas (none for
        an image that never had a finite loss), curve, error and parts."""
        return [TunedImage(method=method, latent=w[i].detach().float().cpu(),
                           deltas={} if not self.ever_good[i]
                           else {k: v[i].detach().float().cpu() for k, v in deltas.items()},
                           loss_curve=self.curves[i], error=self.errors[i], seconds=seconds,
                           parts=self.parts[i], meta=meta)
                for i in range(self.batch)]
