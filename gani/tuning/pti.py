"""PTI (Roich et al. 2022) in the GANI harness: tune the generator weights directly.

    Δ ← 0 ;  for t = 1..T:  L = L_rec + λ_lpips·LPIPS (+ λ_R·locality) at θ + Δ;  Adam step on Δ

Choices (docs/method.md): the tuned parameters are the modulated-conv weights — the same set
GANI corrects, > 99 % of the synthesis network's parameters — so both methods share one
output format (weight deltas) and batching; the loss is L_sim restricted to its rec and LPIPS
terms (PTI's L2 + LPIPS); the optional locality term is the same Eq. 5 regularizer GANI uses;
Adam with PyTorch's default betas (0.9, 0.999), lr `tune.pti.lr`, `tune.steps` steps.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

from gani.config.schema import TuneSection
from gani.losses import SimilarityLoss

from .common import LocalityRegularizer, ProgressFn, Tracker, autocast, objective
from .result import TunedImage


PTI_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as PTI's code uses
PTI_EPS = 1e-8


def pti_adam_settings(cfg: TuneSection) -> tuple[float, tuple[float, float], float]:
    """PTI's Adam (lr, betas, eps); GANI's optimizer reading runs the same update."""
    return float(cfg.pti.lr), PTI_BETAS, PTI_EPS


def tune_pti(G, targets: torch.Tensor, w_init: torch.Tensor, cfg: TuneSection,
             loss: SimilarityLoss, progress: Optional[ProgressFn] = None,
             verbose: bool = False, first_index: int = 0) -> list[TunedImage]:
    t0 = time.perf_counter()
    B, T = targets.shape[0], cfg.steps
    dev = targets.device
    w = w_init.detach().to(dev)
    loss = loss.restricted(("rec", "lpips"))
    deltas = {name: torch.nn.Parameter(torch.zeros(B, *m.weight.shape[1:], device=dev,
                                                   dtype=m.weight.dtype))
              for name, m in G.modulated_convs().items()}
    params = list(deltas.values())
    lr, betas, eps = pti_adam_settings(cfg)
    opt = torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)
    reg = LocalityRegularizer(G, cfg.reg, loss, cfg.seed) if cfg.pti.locality else None
    track = Tracker(params, B, T, "pti", progress, verbose, cfg.log_every, first_index)
    with autocast(G, cfg.precision):
        target = loss.prepare(targets)
    for t in range(T + 1):
        with autocast(G, cfg.precision):
            losses, parts = objective(G, w, deltas, target, loss, reg)
        track.record(t, losses, parts)
        if t == T or not track.any_active:
            break
        opt.zero_grad(set_to_none=True)
        track.loss_to_backprop(losses).backward()
        track.zero_stopped_grads(params)
        opt.step()
        track.freeze()
    track.freeze()
    track.close()
    seconds = (time.perf_counter() - t0) / B
    meta = {"pti": cfg.pti.model_dump(), "active_terms": loss.active_terms()}
    return track.results("pti", w, deltas, seconds, meta)
