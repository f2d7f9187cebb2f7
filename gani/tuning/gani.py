"""GANI: tune a generator for a batch of images with Gradient Modification Modules.

Two readings of the paper (`tune.gmm.reading`). **reparam** reads the paper's Algorithm 1
(docs/method.md):

    w ← E(x)                                   (given: w_init, e.g. from e4e)
    g ← ∇_θ L_sim(x, G(w; θ))                  once, at the original θ, detached
    φ ← identity start (gani.gmm)
    for t = 1..T:
        θ' = θ − M_φ(g)                        (Eq. 2; the sign convention of gani.gmm)
        L  = L_sim(x, G(w; θ')) + λ_R · L_sim(G(w_r; θ), G(w_r; θ'))
        step the optimizer on ∇_φ L            (only φ is trained; θ and w stay fixed)
    output θ' (as weight deltas) and w

`gradient_source: current` (ablation): g is recomputed at the current weights θ_t each step,
θ'_t = θ_t − M_φ(g_t), and the evaluated correction is kept: θ_{t+1} = θ'_t. Its deltas
cannot be rebuilt from φ alone. **optimizer** (default: it dominates reparam at equal steps,
docs/method.md §9.5): the modules transform the current gradient and feed PTI's Adam
(gani.tuning.learned_optimizer).

B images run as one batch: per-sample weight deltas go through G's grouped convolutions in
one pass, each image has its own copy of the modules (dim 0 of every parameter), and the
batch loss is the sum of the per-image losses, so each image's gradient — and its optimizer
state, which is element-wise — is exactly what a run of that image alone would get.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

from gani.config.schema import TuneSection
from gani.gmm import GMMBank, GradientRows
from gani.losses import LossTarget, SimilarityLoss

from .common import (LocalityRegularizer, ProgressFn, Tracker, autocast, make_optimizer,
                     objective, synth)
from .result import TunedImage


def loss_gradients(G, w: torch.Tensor, target: LossTarget, loss: SimilarityLoss,
                   base: Optional[dict] = None) -> tuple[dict, torch.Tensor]:
    """Per-image ∇ of L_sim w.r.t. every modulated-conv weight, at θ (+ base deltas).

    The gradient w.r.t. a per-sample additive delta at 0 is the per-image gradient w.r.t. θ,
    so one batched backward gives all B of them: ({name: [B, out, in, k, k]}, L_sim [B]).
    """
    B = w.shape[0]
    zeros = {name: torch.zeros(B, *m.weight.shape[1:], device=w.device, dtype=m.weight.dtype,
                               requires_grad=True)
             for name, m in G.modulated_convs().items()}
    deltas = {k: z + base[k] for k, z in zeros.items()} if base else zeros
    l, _ = loss(synth(G, w, deltas), target)
    grads = torch.autograd.grad(l.sum(), list(zeros.values()))
    return {k: g.detach() for k, g in zip(zeros, grads)}, l.detach()


def tune_gani(G, targets: torch.Tensor, w_init: torch.Tensor, cfg: TuneSection,
              loss: SimilarityLoss, progress: Optional[ProgressFn] = None,
              verbose: bool = False, first_index: int = 0) -> list[TunedImage]:
    """GANI for a batch of images, in the reading `cfg.gmm.reading`."""
    if cfg.gmm.reading == "optimizer":
        from .learned_optimizer import tune_gani_optimizer

        return tune_gani_optimizer(G, targets, w_init, cfg, loss, progress, verbose,
                                   first_index)
    return tune_gani_reparam(G, targets, w_init, cfg, loss, progress, verbose, first_index)


def tune_gani_reparam(G, targets: torch.Tensor, w_init: torch.Tensor, cfg: TuneSection,
                      loss: SimilarityLoss, progress: Optional[ProgressFn] = None,
                      verbose: bool = False, first_index: int = 0) -> list[TunedImage]:
    t0 = time.perf_counter()
    B, T = targets.shape[0], cfg.steps
    gcfg = cfg.gmm
    current = gcfg.gradient_source == "current"
    w = w_init.detach().to(targets.device)
    with autocast(G, cfg.precision):
        target = loss.prepare(targets)
        grads, _ = loss_gradients(G, w, target, loss)
    rows = GradientRows(grads, gcfg.row_scale)

    bank = GMMBank.for_generator(G, gcfg, batch=B, seed=cfg.seed).to(targets.device)
    params = list(bank.parameters())
    opt = make_optimizer(bank.param_groups(cfg.optimizer.lr, cfg.optimizer.lr_scaling),
                         cfg.optimizer)
    reg = LocalityRegularizer(G, cfg.reg, loss, cfg.seed)
    base = {k: torch.zeros_like(g) for k, g in grads.items()} if current else None
    state = params + (list(base.values()) if base else [])
    track = Tracker(state, B, T, "gani", progress, verbose, cfg.log_every, first_index)
    bad_grad = [i for i in range(B)
                if not all(bool(torch.isfinite(g[i]).all()) for g in grads.values())]
    for i in bad_grad:
        track.stop(i, "non-finite gradient of L_sim at the original weights; not tuned")

    for t in range(T + 1):
        with autocast(G, cfg.precision):
            if current and t > 0:
                grads, _ = loss_gradients(G, w, target, loss, base)
                rows = GradientRows(grads, gcfg.row_scale)
            corr = bank(rows)
            deltas = {k: base[k] + c for k, c in corr.items()} if current else corr
            losses, parts = objective(G, w, deltas, target, loss, reg)
        track.record(t, losses, parts)
        if t == T or not track.any_active:
            break
        opt.zero_grad(set_to_none=True)
        track.loss_to_backprop(losses).backward()
        track.zero_stopped_grads(params)
        opt.step()
        if current:
            with torch.no_grad():
                for k in base:
                    base[k].copy_(deltas[k].detach())
        track.freeze()
    track.freeze()
    track.close()

    with torch.no_grad(), autocast(G, cfg.precision):
        corr = bank(rows)
        final = {k: (base[k] + c if current else c).float() for k, c in corr.items()}
    seconds = (time.perf_counter() - t0) / B
    meta = {"gmm": gcfg.model_dump(), "optimizer": cfg.optimizer.model_dump(),
            "active_terms": loss.active_terms(), "rec": loss.rec_kind,
            "lambdas": dict(loss.lambdas)}
    out = []
    for i in range(B):
        failed_at_start = i in bad_grad or not track.ever_good[i]
        out.append(TunedImage(
            method="gani", latent=w[i].detach().float().cpu(),
            deltas={} if failed_at_start else {k: v[i].detach().cpu() for k, v in final.items()},
            loss_curve=track.curves[i], error=track.errors[i], seconds=seconds,
            state={} if current else bank.image_state(i),
            parts=track.parts[i], meta=meta))
    return out


@torch.no_grad()
def rebuild_gani_deltas(G, target: torch.Tensor, latent: torch.Tensor, state: dict,
                        gmm_cfg, loss: SimilarityLoss) -> dict:
    """The deltas of a GANI result from its module parameters (reading reparam,
    gradient_source original):
    recompute g at θ for (target, latent) and apply the modules. Deterministic up to the
    float reductions of one forward/backward pass."""
    if gmm_cfg.gradient_source != "original" or gmm_cfg.reading != "reparam":
        raise ValueError("only reading=reparam, gradient_source=original results can be "
                         "rebuilt from modules")
    dev = next(G.parameters()).device
    x = target.to(dev).reshape(1, *target.shape[-3:])
    w = latent.to(dev).reshape(1, *latent.shape[-2:])
    with torch.enable_grad():
        grads, _ = loss_gradients(G, w, loss.prepare(x), loss)
    rows = GradientRows(grads, gmm_cfg.row_scale)
    bank = GMMBank.for_generator(G, gmm_cfg, batch=1).to(dev)
    bank.load_image_state(0, {k: v.to(dev) for k, v in state.items()})
    return {k: v[0].float().cpu() for k, v in bank(rows).items()}
