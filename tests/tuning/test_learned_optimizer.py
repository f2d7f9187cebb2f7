"""GANI's optimizer reading (issue 13 point 2): M_φ(g_t) drives PTI's Adam on the deltas, φ
trained by the look-ahead hypergradient. φ frozen ⇒ PTI; batched = sequential is in
test_batched.py, the artifact in test_artifact.py, the descent in test_sign.py."""
from __future__ import annotations

import math

import pytest
import torch

from gani.tuning import render, tune_images
from gani.tuning.learned_optimizer import adam_step

from test_gani import NaNFromStep
from tuning_helpers import cfg_for, pixel_loss


def _optimizer_cfg(steps, **over):
    cfg = cfg_for(steps=steps, **{"gmm.reading": "optimizer", **over})
    cfg.pti.lr = 3e-3  # the tiny 32-px G moves visibly in a few steps
    return cfg


def _max_delta_diff(a, b) -> float:
    return max(float((a.deltas[k] - b.deltas[k]).abs().max()) for k in a.deltas)


def test_frozen_phi_is_pti(G, targets, w0):
    """lookahead 0: φ never trained, W₂ = 0 ⇒ M_φ(g) = g ⇒ PTI's Adam on the same objective
    (pixel loss + the locality term, the same w_r sequence), same seed, steps and lr."""
    cfg = _optimizer_cfg(8, **{"gmm.lookahead": 0})
    pti = tune_images("pti", G, targets, w0, cfg, pixel_loss(cfg))
    ours = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))
    for a, b in zip(pti, ours):
        assert b.loss_curve == pytest.approx(a.loss_curve, rel=1e-6, abs=1e-9)
        assert set(a.deltas) == set(b.deltas)
        scale = max(float(v.abs().max()) for v in a.deltas.values())
        assert scale > 1e-3  # PTI really moved the weights
        assert _max_delta_diff(a, b) <= 1e-6 * scale
        assert b.loss_curve[-1] < 0.9 * b.loss_curve[0]


@pytest.mark.parametrize("steps,changed", [(3, False), (4, True)])
def test_lookahead_k_updates_phi_at_the_end_of_each_window(G, targets, w0, steps, changed):
    """K = 3: φ is first updated at step 3 (after the loss of step 3), so a 3-step run is
    still PTI and a 4-step run is not."""
    cfg = _optimizer_cfg(steps, **{"gmm.lookahead": 3})
    pti = tune_images("pti", G, targets, w0, cfg, pixel_loss(cfg))
    ours = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))
    diff = max(_max_delta_diff(a, b) for a, b in zip(pti, ours))
    assert (diff > 1e-6) == changed, diff


@pytest.mark.parametrize("over", [{}, {"gmm.lookahead": 2, "gmm.sharing": "channels_affine"}])
def test_trained_phi_moves_the_deltas_and_still_descends(G, targets, w0, over):
    cfg = _optimizer_cfg(10, **over)
    pti = tune_images("pti", G, targets, w0, cfg, pixel_loss(cfg))
    ours = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))
    for a, b in zip(pti, ours):
        assert b.error is None and all(math.isfinite(v) for v in b.loss_curve)
        assert _max_delta_diff(a, b) > 1e-5  # the learned part is not a no-op
        assert b.loss_curve[-1] < 0.9 * b.loss_curve[0]
        assert b.state == {} and b.meta["gmm"]["reading"] == "optimizer"
        assert torch.isfinite(render(G, b)).all()


def test_adam_step_is_torch_adam():
    """The differentiable update equals torch.optim.Adam fed the same directions."""
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 7, generator=gen))
    opt = torch.optim.Adam([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    D, m, v = p.detach().clone(), torch.zeros(4, 7), torch.zeros(4, 7)
    for t in range(1, 6):
        d = torch.randn(4, 7, generator=gen) * 10 ** (-t)
        d[0, 0] = 0.0  # an element that never moves (v = 0): no NaN, no step
        p.grad = d.clone()
        opt.step()
        D, m, v = adam_step(D, m, v, d, t, 1e-2, (0.9, 0.999), 1e-8)
        assert torch.allclose(D, p.detach(), rtol=1e-6, atol=1e-9)


def test_hypergradient_through_k_adam_steps_matches_finite_differences():
    """∂⟨g, D_{t+K}⟩/∂φ through K unrolled steps (m and v carry φ) equals central
    differences, with φ a scalar c in the direction g_s + c·h_s (float64)."""
    gen = torch.Generator().manual_seed(1)
    shape = (3, 5)
    gs = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3)]
    hs = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3)]
    g_next = torch.randn(shape, generator=gen, dtype=torch.float64)

    def look_ahead(c):
        D = m = v = torch.zeros(shape, dtype=torch.float64)
        for t, (g, h) in enumerate(zip(gs, hs), start=1):
            D, m, v = adam_step(D, m, v, g + c * h, t, 1e-2, (0.9, 0.999), 1e-8)
        return (g_next * D).sum()

    c = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(look_ahead(c), c)
    eps = 1e-6
    with torch.no_grad():
        fd = (look_ahead(c + eps) - look_ahead(c - eps)) / (2 * eps)
    assert abs(float(auto)) > 1e-6
    assert float(auto) == pytest.approx(float(fd), rel=1e-5)


@pytest.mark.parametrize("knob,value", [("identity_path", True), ("gradient_source", "current"),
                                        ("row_scale", "grad_norm")])
def test_reparam_only_knobs_are_refused(G, targets, w0, knob, value):
    cfg = _optimizer_cfg(1, **{f"gmm.{knob}": value})
    with pytest.raises(ValueError, match=f"tune.gmm.{knob}"):
        tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))


def test_non_finite_loss_stops_one_image_only(G, targets, w0):
    cfg = _optimizer_cfg(7)
    # NaNFromStep counts a first gradient call that this reading does not make: at=2 → step 3
    r0, r1 = tune_images("gani", G, targets, w0, cfg, NaNFromStep(cfg.loss, at=2))
    assert r0.error and "step 3" in r0.error and len(r0.loss_curve) == 4
    with torch.no_grad():  # image 0 keeps its step-2 deltas
        l2, _ = pixel_loss(cfg)(render(G, r0), targets[:1])
    assert float(l2) == pytest.approx(r0.parts["rec"][2], rel=1e-4)
    solo = tune_images("gani", G, targets[1:], w0[1:], cfg, pixel_loss(cfg))[0]
    assert r1.error is None
    assert r1.loss_curve == pytest.approx(solo.loss_curve, rel=1e-4)


def test_an_image_does_not_see_its_batch_neighbour(G, targets, w0):
    """Image 0 of a batch is bit for bit the same whatever image 1 is (K = 2, per-layer gains):
    nothing couples the images. (Against a batch of one the curves agree to float tolerance
    only, and the look-ahead's φ updates amplify that with the steps: 3e-6 relative after 4
    steps, 1e-4 after 8 here; batched = sequential at K = 1 is in test_batched.py.)"""
    cfg = _optimizer_cfg(8, **{"gmm.lookahead": 2, "gmm.sharing": "channels_affine"})
    other = targets.clone()
    other[1] = -targets[1].flip(-1)
    a = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))[0]
    b = tune_images("gani", G, other, w0, cfg, pixel_loss(cfg))[0]
    assert a.loss_curve == b.loss_curve
    assert all(torch.equal(a.deltas[k], b.deltas[k]) for k in a.deltas)
    cfg.steps = 4
    batched = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))
    for i, r in enumerate(batched):
        solo = tune_images("gani", G, targets[i:i + 1], w0[i:i + 1], cfg, pixel_loss(cfg))[0]
        assert r.loss_curve == pytest.approx(solo.loss_curve, rel=1e-4, abs=1e-7)
