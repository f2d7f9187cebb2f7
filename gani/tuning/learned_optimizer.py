"""GANI's optimizer reading (`tune.gmm.reading: optimizer`, the default): the modules as a
learned optimizer that transforms PTI's gradient, trained on the same image as it runs.

The paper contrasts Eq. 2 with PTI's "regular gradient step" and ends with "the learning of
the mapping networks and the optimization of the generator occur concurrently". Read that
way, with D the weight deltas (θ' = θ + D) and g_t = ∇_D L(θ + D_t):

    M_φ(g_t)  = g_t + ‖g_row‖ · branch_φ(IN(g_t))        per row (gani.gmm, `direction`)
    m_t       = β₁·m_{t−1} + (1 − β₁)·M_φ(g_t)
    v_t       = β₂·v_{t−1} + (1 − β₂)·M_φ(g_t)²
    D_{t+1}   = D_t − lr/(1 − β₁ᵗ) · m_t / (√v_t / √(1 − β₂ᵗ) + ε)      PTI's Adam
    ∇_φ       = ∂L(θ + D_{t+1})/∂φ = ⟨g_{t+1}, ∂D_{t+1}/∂φ⟩             look-ahead hypergradient

lr, β₁, β₂, ε are PTI's (`pti_adam_settings`): with W₂ = 0 the branch term is an exact 0, so
a run with φ frozen (`lookahead: 0`) *is* PTI on the same objective (tested). φ is trained by
`tune.optimizer` (as the reparametrisation's modules are). With `lookahead: K` φ stays fixed
for K steps and is updated at their end through the K unrolled Adam steps (m and v carry φ's
influence between them); first order: g_s is an input, its dependence on D_s is not
differentiated (that would need second derivatives of the generator). K = 1 is the one-step
look-ahead. The window's graph holds only the modules' and Adam's element-wise work, not the
generator's, and the hypergradient comes from the same backward that gives g_{t+1}, so a
step costs one generator forward/backward, as PTI's does, plus the modules.

The objective is GANI's Eq. 5 (L_sim + λ_R·L_R). The deltas cannot be rebuilt from φ
(they depend on every g_t), so the result stores them (gani.tuning.artifact: fp16, optionally
low rank).

Batched as the rest: D, m, v and φ have a leading image dimension, the loss is the sum of
per-image losses, and Adam (both) is element-wise, so image i of a batch = image i alone.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

from gani.config.schema import TuneSection
from gani.gmm import GMMBank, GradientRows
from gani.losses import SimilarityLoss

from .common import LocalityRegularizer, ProgressFn, Tracker, autocast, make_optimizer, objective
from .pti import pti_adam_settings
from .result import TunedImage

# reparametrisation-only knobs and the value they must keep under the optimizer reading
_REPARAM_ONLY = {"identity_path": False, "gradient_source": "original", "row_scale": "none"}


def check_optimizer_reading(gcfg) -> None:
    """The optimizer reading has its own identity term and gradient source; refuse knobs that
    only mean something for the reparametrisation instead of ignoring them."""
    for knob, want in _REPARAM_ONLY.items():
        if getattr(gcfg, knob) != want:
            raise ValueError(f"tune.gmm.{knob}={getattr(gcfg, knob)!r} applies to reading "
                             f"'reparam' only; with reading 'optimizer' leave it {want!r}")


def adam_step(D: torch.Tensor, m: torch.Tensor, v: torch.Tensor, direction: torch.Tensor,
              t: int, lr: float, betas: tuple, eps: float):
    """One differentiable Adam step (torch.optim.Adam's formula) with `direction` in place of
    the gradient; t = 1, 2, …. Returns (D_{t+1}, m_t, v_t).

        m_t = β₁·m + (1 − β₁)·dir ;  v_t = β₂·v + (1 − β₂)·dir²
        D_{t+1} = D − lr/(1 − β₁ᵗ) · m_t / (√v_t / √(1 − β₂ᵗ) + ε)

    √v is taken of v clamped at the smallest normal float: the same value (it only changes
    exact zeros, which ε swamps) and no 0·∞ = NaN in the backward where dir and v are 0."""
    beta1, beta2 = betas
    m_t = torch.lerp(m, direction, 1 - beta1)
    v_t = torch.addcmul(v * beta2, direction, direction, value=1 - beta2)
    step_size = lr / (1 - beta1 ** t)
    sqrt_bc2 = (1 - beta2 ** t) ** 0.5
    denom = v_t.clamp_min(torch.finfo(v_t.dtype).tiny).sqrt() / sqrt_bc2 + eps
    return torch.addcdiv(D, m_t, denom, value=-step_size), m_t, v_t


class DeltaState:
    """D, m, v per layer ({name: [B, out, in, k, k]}): persistent buffers (what the Tracker
    saves and restores) plus the current graph-carrying tensors of the look-ahead window."""

    def __init__(self, G, batch: int, device):
        def zeros():
            return {n: torch.zeros(batch, *m.weight.shape[1:], device=device,
                                   dtype=m.weight.dtype) for n, m in G.modulated_convs().items()}

        self.buf = {"D": zeros(), "m": zeros(), "v": zeros()}
        self.detach()

    def tensors(self) -> list[torch.Tensor]:
        return [t for part in self.buf.values() for t in part.values()]

    def detach(self) -> None:
        """Start a new window: the live tensors lose their graph to φ."""
        self.live = {k: {n: t.detach() for n, t in part.items()} for k, part in self.buf.items()}

    def set(self, D: dict, m: dict, v: dict, active: torch.Tensor) -> None:
        """Store the new state: buffers for every active image, the live tensors keep the graph
        for active images and the buffered (frozen) values for stopped ones."""
        everyone = bool(active.all())
        # the graph keeps it (the Tracker's flags change later); on the device once, not per
        # tensor (a host→device copy per layer made the host wait for the device each time)
        keep = None if everyone else active.clone().to(next(iter(D.values())).device)
        for key, new in (("D", D), ("m", m), ("v", v)):
            for n, t in new.items():
                if everyone:                  # the usual case: nothing to hold back
                    with torch.no_grad():
                        self.buf[key][n].copy_(t)
                    self.live[key][n] = t
                    continue
                k = keep.view(-1, *([1] * (t.dim() - 1)))
                with torch.no_grad():
                    self.buf[key][n].copy_(torch.where(k, t, self.buf[key][n]))
                self.live[key][n] = torch.where(k, t, self.buf[key][n])


def tune_gani_optimizer(G, targets: torch.Tensor, w_init: torch.Tensor, cfg: TuneSection,
                        loss: SimilarityLoss, progress: Optional[ProgressFn] = None,
                        verbose: bool = False, first_index: int = 0) -> list[TunedImage]:
    gcfg = cfg.gmm
    check_optimizer_reading(gcfg)
    t0 = time.perf_counter()
    B, T, K = targets.shape[0], cfg.steps, int(gcfg.lookahead)
    dev = targets.device
    w = w_init.detach().to(dev)
    lr, betas, eps = pti_adam_settings(cfg)
    bank = GMMBank.for_generator(G, gcfg, batch=B, seed=cfg.seed).to(dev)
    phi = list(bank.parameters())
    opt = make_optimizer(bank.param_groups(cfg.optimizer.lr, cfg.optimizer.lr_scaling),
                         cfg.optimizer)
    reg = LocalityRegularizer(G, cfg.reg, loss, cfg.seed)
    state = DeltaState(G, B, dev)
    track = Tracker(state.tensors() + phi, B, T, "gani", progress, verbose, cfg.log_every,
                    first_index)
    with autocast(G, cfg.precision):
        target = loss.prepare(targets)
    names = list(state.buf["D"])
    for t in range(T + 1):
        D = {n: d if d.requires_grad else d.requires_grad_() for n, d in state.live["D"].items()}
        update_phi = K > 0 and t > 0 and t % K == 0
        with autocast(G, cfg.precision):
            losses, parts = objective(G, w, D, target, loss, reg)
        track.record(t, losses, parts)
        if t == T or not track.any_active:
            break
        wrt = [D[n] for n in names] + (phi if update_phi else [])
        grads = torch.autograd.grad(track.loss_to_backprop(losses), wrt, allow_unused=True)
        g = {n: gr.detach() for n, gr in zip(names, grads[:len(names)])}
        if update_phi:
            for p, gp in zip(phi, grads[len(names):]):
                p.grad = None if gp is None else gp.detach()
            track.zero_stopped_grads(phi)
            opt.step()
            opt.zero_grad(set_to_none=True)
            state.detach()
        elif K == 0 or t == 0:
            state.detach()
        track.freeze()
        with autocast(G, cfg.precision), torch.set_grad_enabled(K > 0):
            direction = bank.direction(GradientRows(g))
            live = state.live
            new = {n: adam_step(live["D"][n], live["m"][n], live["v"][n], direction[n], t + 1,
                                lr, betas, eps) for n in names}
        state.set({n: r[0] for n, r in new.items()}, {n: r[1] for n, r in new.items()},
                  {n: r[2] for n, r in new.items()}, track.active)
    track.freeze()
    track.close()
    seconds = (time.perf_counter() - t0) / B
    meta = {"gmm": gcfg.model_dump(), "optimizer": cfg.optimizer.model_dump(),
            "pti_adam": {"lr": lr, "betas": list(betas), "eps": eps},
            "active_terms": loss.active_terms(), "rec": loss.rec_kind,
            "lambdas": dict(loss.lambdas)}
    final = state.buf["D"]
    return track.results("gani", w, final, seconds, meta)
