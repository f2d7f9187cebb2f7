"""Ranger against the textbook RAdam + Lookahead (+ GC) update, computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from gani.optim import Ranger, radam_rectification


def textbook(p0, a, steps, lr, b1, b2, k, alpha, warmup=0, sgd=True):
    """RAdam (Liu et al. 2020, Alg. 2) + Lookahead (Zhang et al. 2019) on f = ½ Σ a·p²,
    in plain Python floats; ε → 0."""
    p = list(p0)
    slow = list(p0)
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, steps + 1):
        g = [ai * pi for ai, pi in zip(a, p)]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        m_hat = [mi / (1 - b1 ** t) for mi in m]
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        step_lr = lr * (min(1.0, t / warmup) if warmup else 1.0)
        if rho > 5:
            v_hat = [vi / (1 - b2 ** t) for vi in v]
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            p = [pi - step_lr * r * mh / math.sqrt(vh) for pi, mh, vh in zip(p, m_hat, v_hat)]
        elif sgd:
            p = [pi - step_lr * mh for pi, mh in zip(p, m_hat)]
        if t % k == 0:
            slow = [s + alpha * (pi - s) for s, pi in zip(slow, p)]
            p = list(slow)
    return p


def run_ranger(p0, a, steps, **kw):
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    at = torch.tensor(a, dtype=torch.float64)
    opt = Ranger([p], eps=1e-30, **kw)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (at * p * p).sum()).backward()
        opt.step()
    return p.detach().tolist()


@pytest.mark.parametrize("steps", [1, 5, 6, 7, 13])
def test_ranger_matches_textbook(steps):
    # β₂ = 0.99: steps 1-5 are RAdam's SGD phase (ρ_t ≤ 5), 6+ adaptive; lookahead at 6, 12
    p0, a = [1.0, -2.0, 0.3], [0.5, 3.0, -1.0]
    kw = dict(lr=0.05, betas=(0.9, 0.99), k=6, alpha=0.5)
    want = textbook(p0, a, steps, kw["lr"], 0.9, 0.99, 6, 0.5)
    got = run_ranger(p0, a, steps, **kw)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_warmup_and_no_sgd_phase_match_textbook():
    p0, a = [1.0, -2.0, 0.3], [0.5, 3.0, -1.0]
    for warmup, sgd in [(4, True), (0, False), (8, False)]:
        want = textbook(p0, a, 9, 0.05, 0.9, 0.99, 6, 0.5, warmup=warmup, sgd=sgd)
        got = run_ranger(p0, a, 9, lr=0.05, betas=(0.9, 0.99), warmup_steps=warmup,
                         degenerate_to_sgd=sgd)
        assert got == pytest.approx(want, rel=1e-10, abs=1e-12)
    # no SGD phase: the first 5 steps leave the parameters alone
    assert run_ranger(p0, a, 5, lr=0.05, betas=(0.9, 0.99), degenerate_to_sgd=False) == p0


def test_rectification_phases():
    assert not radam_rectification(5, 0.9, 0.99)[0]
    assert radam_rectification(6, 0.9, 0.99)[0]
    # reference defaults β₂ = 0.999: the first 5 steps are un-normalised SGD
    assert [radam_rectification(t, 0.95, 0.999)[0] for t in range(1, 8)] == \
        [False] * 5 + [True] * 2


def test_gradient_centralisation_removes_row_means():
    # one SGD-phase step with β₁ = 0: update = −lr · (g − mean over dims ≥ 1) / (1 − 0)
    p = torch.zeros(2, 3, requires_grad=True)
    g = torch.tensor([[1.0, 2.0, 6.0], [0.0, -3.0, 3.0]])
    opt = Ranger([p], lr=0.1, betas=(0.0, 0.99))
    p.grad = g.clone()
    opt.step()
    want = -0.1 * (g - g.mean(1, keepdim=True))
    assert torch.allclose(p.detach(), want, atol=1e-7)
    p2 = torch.zeros(2, 3, requires_grad=True)
    opt2 = Ranger([p2], lr=0.1, betas=(0.0, 0.99), gc=False)
    p2.grad = g.clone()
    opt2.step()
    assert torch.allclose(p2.detach(), -0.1 * g, atol=1e-7)


def test_batch_dims_make_stacked_problems_independent():
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(2, 3, 4, generator=gen) for _ in range(8)]
    stacked = torch.zeros(2, 3, 4, requires_grad=True)
    opt = Ranger([stacked], lr=0.01, batch_dims=1)
    singles = [torch.zeros(3, 4, requires_grad=True) for _ in range(2)]
    opts = [Ranger([s], lr=0.01) for s in singles]
    for g in grads:
        stacked.grad = g.clone()
        opt.step()
        for i in range(2):
            singles[i].grad = g[i].clone()
            opts[i].step()
    for i in range(2):
        assert torch.allclose(stacked[i].detach(), singles[i].detach(), atol=1e-7)
