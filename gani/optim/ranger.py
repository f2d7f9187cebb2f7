"""Ranger: RAdam + Lookahead + gradient centralisation (Wright 2019), the paper's optimizer.

One step for a parameter p with gradient g (t = 1, 2, ...):

    g   ← g − mean(g over every dim but the first `batch_dims`+1)   (GC; tensors of dim > 1)
    m   ← β₁ m + (1 − β₁) g
    v   ← β₂ v + (1 − β₂) g²
    ρ∞  = 2/(1 − β₂) − 1 ;  ρ_t = ρ∞ − 2 t β₂ᵗ / (1 − β₂ᵗ)
    if ρ_t > 5 (the "N_sma threshold"):                                   adaptive phase
        r  = √[(1 − β₂ᵗ) (ρ_t − 4)(ρ_t − 2) ρ∞ / ((ρ∞ − 4)(ρ∞ − 2) ρ_t)]
        p ← p − lr_t · r/(1 − β₁ᵗ) · m / (√v + ε)
    else:                                                                  SGD phase
        p ← p − lr_t · m/(1 − β₁ᵗ)          (skipped when degenerate_to_sgd=False)
    every k steps (Lookahead): slow ← slow + α (p − slow);  p ← slow

lr_t = lr · min(1, t / warmup_steps) when warmup_steps > 0 (a linear warm-up: the paper's
Ranger run needs one or an SGD phase that is off, see docs/method.md).

``batch_dims`` (per parameter group, default 0): leading dimensions that index independent
problems (our batched per-image GMM banks stack B images on dim 0). GC then centralises each
image's slice on its own, so a batched run equals B separate runs; every other operation is
element-wise or a per-step scalar and needs no change.

Defaults follow the reference implementation: betas (0.95, 0.999), eps 1e-5, k 6, α 0.5,
threshold 5, GC on every tensor of dim > 1, applied to the gradient before the moments.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim import Optimizer


def radam_rectification(step: int, beta1: float, beta2: float, threshold: float = 5.0
                        ) -> tuple[bool, float]:
    """(adaptive?, step_size) of RAdam at step t ≥ 1, bias corrections included."""
    beta2_t = beta2 ** step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2_t / (1.0 - beta2_t)
    bc1 = 1.0 - beta1 ** step
    if rho_t > threshold:
        r = math.sqrt((1.0 - beta2_t) * (rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                      / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        return True, r / bc1
    return False, 1.0 / bc1


class Ranger(Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.95, 0.999),
                 eps: float = 1e-5, weight_decay: float = 0.0, k: int = 6, alpha: float = 0.5,
                 gc: bool = True, threshold: float = 5.0, warmup_steps: int = 0,
                 degenerate_to_sgd: bool = True, batch_dims: int = 0):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 < alpha <= 1:
            raise ValueError(f"lookahead alpha must be in (0, 1], got {alpha}")
        if k < 1:
            raise ValueError(f"lookahead k must be ≥ 1, got {k}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, k=k,
                        alpha=alpha, gc=gc, threshold=threshold, warmup_steps=warmup_steps,
                        degenerate_to_sgd=degenerate_to_sgd, batch_dims=batch_dims)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            nb = group["batch_dims"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                # half-precision parameters get float32 state; others keep their dtype
                work = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
                grad = p.grad.to(work)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=work)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=work)
                    state["slow"] = p.detach().to(work).clone()
                if group["gc"] and grad.dim() > 1 + nb:
                    grad = grad - grad.mean(dim=tuple(range(1 + nb, grad.dim())), keepdim=True)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                lr = group["lr"]
                if group["warmup_steps"] > 0:
                    lr = lr * min(1.0, t / group["warmup_steps"])
                adaptive, step_size = radam_rectification(t, beta1, beta2, group["threshold"])
                data = p.detach().to(work)
                if group["weight_decay"]:
                    data.mul_(1 - group["weight_decay"] * lr)
                if adaptive:
                    data.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr * step_size)
                elif group["degenerate_to_sgd"]:
                    data.add_(m, alpha=-lr * step_size)
                if t % group["k"] == 0:
                    slow = state["slow"]
                    slow.add_(data - slow, alpha=group["alpha"])
                    data.copy_(slow)
                p.copy_(data)
        return loss
