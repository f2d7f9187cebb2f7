"""The GANI loop of the reparam reading (θ' = θ − M_φ(g), paper Eq. 2) on a tiny generator:
identity start, descent, input dependence, stability, non-finite stops. The optimizer reading
(the default) is in test_learned_optimizer.py."""
from __future__ import annotations

import math

import pytest
import torch

from gani.gmm import to_rows
from gani.losses import SimilarityLoss, rec_loss
from gani.tuning import loss_gradients, render, tune_images

from tuning_helpers import pixel_loss, reparam_cfg


def test_identity_start_step0_equals_original_generator(G, targets, w0):
    cfg = reparam_cfg(steps=1)
    loss = pixel_loss(cfg)
    res = tune_images("gani", G, targets, w0, cfg, loss)
    with torch.no_grad():
        orig, _ = loss(G.synthesis(w0, noise_mode="const"), targets)
    for i, r in enumerate(res):
        # θ' = θ at step 0 (zero deltas): equal up to float summation order, since the tuned
        # pass folds the batch into a grouped convolution (seen: 2e-7 relative)
        assert r.loss_curve[0] == pytest.approx(float(orig[i]), rel=1e-6, abs=1e-9)
        assert r.parts["reg"][0] < 1e-10  # G(w_r; θ) vs itself (batch-size float noise only)


def test_literal_identity_path_does_not_start_at_identity(G, targets, w0):
    cfg = reparam_cfg(steps=0, **{"gmm.identity_path": True})
    loss = pixel_loss(cfg)
    res = tune_images("gani", G, targets, w0, cfg, loss)
    ref = tune_images("e4e", G, targets, w0, cfg, loss)
    assert res[0].loss_curve[0] != ref[0].loss_curve[0]


@pytest.mark.parametrize("over", [
    {},
    {"gmm.blocks": 1, "gmm.pre_norm": "in", "gmm.post_norm": "in"},
    {"optimizer.name": "ranger", "optimizer.warmup_steps": 5, "optimizer.lr": 1e-5},
    {"gmm.gradient_source": "current", "optimizer.lr": 1e-5},
])
def test_loss_decreases_without_divergence(G, targets, w0, over):
    cfg = reparam_cfg(steps=15, **over)
    res = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))
    for r in res:
        c = r.loss_curve
        assert r.error is None and len(c) == 16 and all(math.isfinite(v) for v in c)
        assert c[-1] < 0.9 * c[0], c
        assert max(c) < 1.5 * c[0], c  # no blow-up on the way
        img = render(G, r)
        assert torch.isfinite(img).all()


def test_gradient_is_per_image_and_corrections_depend_on_it(G, targets, w0):
    cfg = reparam_cfg(steps=10)
    loss = pixel_loss(cfg)
    grads, _ = loss_gradients(G, w0, loss.prepare(targets), loss)
    solo, _ = loss_gradients(G, w0[1:], loss.prepare(targets[1:]), loss)
    for k in grads:
        assert torch.allclose(grads[k][1], solo[k][0], atol=1e-7, rtol=1e-4)
    res = tune_images("gani", G, targets, w0, cfg, loss)
    d = to_rows(res[0].deltas["convs.1"])  # correction rows of one layer
    d = torch.nn.functional.normalize(d, dim=1)
    cos = d @ d.T
    off = cos[~torch.eye(len(d), dtype=torch.bool)]
    assert off.mean() < 0.8, float(off.mean())  # not one shared offset (pre_norm none: ~0.99)
    # the two images got different corrections (different gradients in, same modules start)
    assert not torch.allclose(res[0].deltas["convs.1"], res[1].deltas["convs.1"])


def test_only_module_parameters_are_trained(G, targets, w0):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    cfg = reparam_cfg(steps=3)
    res = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.equal(res[0].latent, w0[0])
    assert set(res[0].deltas) == set(G.modulated_convs())
    assert res[0].state and all(v.dim() >= 1 for v in res[0].state.values())


class NaNFromStep(SimilarityLoss):
    """L_sim whose image-0 value turns NaN from objective step `at` on (call 0 = gradient)."""

    def __init__(self, weights, at):
        super().__init__(weights)
        self.at, self.calls = at, 0

    def forward(self, x, target):
        total, parts = super().forward(x, target)
        step = self.calls - 1
        self.calls += 1
        if step >= self.at and x.shape[0] == 2:
            total = total.clone()
            total[0] = float("nan")
        return total, parts


def test_non_finite_loss_stops_that_image_with_a_reason(G, targets, w0):
    cfg = reparam_cfg(steps=8)
    res = tune_images("gani", G, targets, w0, cfg, NaNFromStep(cfg.loss, at=4))
    r0, r1 = res
    assert r0.error and "non-finite loss" in r0.error and "step 4" in r0.error
    assert len(r0.loss_curve) == 5 and math.isnan(r0.loss_curve[-1])
    # image 0 keeps its step-3 state: re-evaluating it gives the step-3 loss
    loss = pixel_loss(cfg)
    with torch.no_grad():
        l3, _ = loss(render(G, r0), targets[:1])
    assert float(l3) == pytest.approx(r0.parts["rec"][3], rel=1e-4)
    # the other image is untouched by its neighbour's failure
    solo = tune_images("gani", G, targets[1:], w0[1:], cfg, pixel_loss(cfg))[0]
    assert r1.error is None
    assert r1.loss_curve == pytest.approx(solo.loss_curve, rel=1e-4)


def test_non_finite_target_is_reported_not_tuned(G, targets, w0):
    bad = targets.clone()
    bad[0, :, 0, 0] = float("nan")
    cfg = reparam_cfg(steps=3)
    res = tune_images("gani", G, bad, w0, cfg, pixel_loss(cfg))
    assert "non-finite gradient" in res[0].error and res[0].deltas == {}
    assert res[1].error is None and res[1].loss_curve[-1] < res[1].loss_curve[0]


def test_rec_improves_on_both_testbed_targets(G, targets, w0):
    cfg = reparam_cfg(steps=20)
    res = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))
    with torch.no_grad():
        start = rec_loss(G.synthesis(w0, noise_mode="const"), targets)
        for i, r in enumerate(res):
            assert float(rec_loss(render(G, r), targets[i:i + 1])) < 0.8 * float(start[i])


class CountingLoss(SimilarityLoss):
    def __init__(self, weights):
        super().__init__(weights)
        self.calls = 0

    def forward(self, x, target):
        self.calls += 1
        return super().forward(x, target)


@pytest.mark.parametrize("source,extra", [("original", 0), ("current", 4)])
def test_gradient_taken_once_at_theta_or_every_step(G, targets, w0, source, extra):
    cfg = reparam_cfg(steps=4, **{"gmm.gradient_source": source})
    loss = CountingLoss(cfg.loss)
    tune_images("gani", G, targets, w0, cfg, loss)
    assert loss.calls == 1 + (4 + 1) + extra  # gradient(s) + objective at steps 0..T
