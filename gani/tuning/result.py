"""What a tuner returns for one image, and the errors the pipeline can catch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


class TuningOOM(RuntimeError):
    """The device ran out of memory tuning a batch; retry with a smaller batch.

    `batch_size` is the size that failed; the pipeline halves it (see `tune_images(...,
    on_oom="halve")` for the built-in retry)."""

    def __init__(self, batch_size: int, message: str = ""):
        self.batch_size = int(batch_size)
        super().__init__(f"out of memory tuning a batch of {batch_size} image(s)"
                         + (f": {message}" if message else "")
                         + "; retry with a smaller tune.batch_size")


@dataclass
class TunedImage:
    """One image's tuning result.

    latent: [n_latent, style_dim] W+ latent to render with (the e4e latent, or the projected one).
    deltas: {modulated-conv name: [out, in, k, k]} for `G.synthesis(weight_deltas=)`; empty
      for e4e and projection.
    loss_curve: the objective at steps 0..T (step t evaluated before the t-th update; the last
      value is the returned state's).
    error: None, or why the image stopped (non-finite loss/gradient, out of memory alone):
      the result then holds the last finite state (or the start, if there was none) and the
      pipeline should mark the image failed.
    reason: with `error`, its machine-readable kind when it is not a numerical stop
      ("out_of_memory"); None for non-finite stops and for good results.
    seconds: wall time of the image's batch divided by the batch size.
    noise: projection only (optimize_noise): the optimised noise maps [1, 1, R, R] each.
    state: GANI only: the image's module parameters (what the compact artifact stores).
    parts: per-term curves of L_sim (unweighted) and "reg" (the localization term).
    """

    method: str
    latent: torch.Tensor
    deltas: dict = field(default_factory=dict)
    loss_curve: list = field(default_factory=list)
    error: Optional[str] = None
    seconds: float = 0.0
    noise: Optional[list] = None
    state: dict = field(default_factory=dict)
    parts: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def synthesis_kwargs(self, device=None, dtype=None) -> dict:
        """kwargs for `G.synthesis(latent, noise_mode="const", **kwargs)` that render this result."""
        def mv(t):
            return t.to(device=device, dtype=dtype or t.dtype)

        kw: dict = {}
        if self.deltas:
            kw["weight_deltas"] = {k: mv(v) for k, v in self.deltas.items()}
        if self.noise is not None:
            kw["noise"] = [mv(n) for n in self.noise]
        return kw


def render(G, result: TunedImage, latent: Optional[torch.Tensor] = None) -> torch.Tensor:
    """G with the result's deltas (and noise) at its latent, or at `latent` ([B, n_latent, D]:
    edits of the same image) → [B, 3, H, W]."""
    p = next(G.parameters())
    w = result.latent.unsqueeze(0) if latent is None else latent
    w = w.to(p.device, p.dtype)
    kw = result.synthesis_kwargs(p.device, p.dtype)
    if "noise" in kw and w.shape[0] > 1:
        kw["noise"] = [n.expand(w.shape[0], -1, -1, -1) for n in kw["noise"]]
    return G.synthesis(w, noise_mode="const", **kw)
