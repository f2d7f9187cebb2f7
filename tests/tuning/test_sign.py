"""Issue 13 point 1: every GANI variant descends. Weight deltas are added (θ' = θ + Δ) and
Δ = −M(g), so a correction that contains the identity path is −g, not +g (which climbed).

For each variant the tuner offers, its deltas after one step (and, for the literal reading,
its step-0 deltas, which are already −M(g) ≠ 0) point downhill on L_sim at θ: ⟨g, Δ⟩ < 0, and a
short step along Δ lowers L_sim on the fixed targets of the fixtures."""
from __future__ import annotations

import pytest
import torch

from gani.tuning import loss_gradients, tune_images

from tuning_helpers import cfg_for, pixel_loss, reparam_cfg

STEP = 1e-3  # length ‖εΔ‖ of the probing step (the tiny G's weights have norm ~50)

REPARAM = [
    {},
    {"gmm.pre_norm": "none"},
    {"gmm.pre_norm": "sn"},
    {"gmm.identity_path": True, "gmm.pre_norm": "none"},
    {"gmm.identity_path": True, "gmm.pre_norm": "sn"},
    {"gmm.identity_path": True, "gmm.pre_norm": "in"},
    {"gmm.identity_path": True, "gmm.pre_norm": "none", "gmm.zero_init_last": False,
     "gmm.bias": "uniform"},
    {"gmm.gradient_source": "current"},
    {"gmm.gradient_source": "current", "gmm.identity_path": True, "gmm.pre_norm": "none"},
    {"gmm.row_scale": "grad_norm"},
    {"gmm.row_scale": "grad_norm", "gmm.identity_path": True, "gmm.pre_norm": "none"},
    {"gmm.sharing": "layer"},
    {"gmm.sharing": "channels_affine"},
    {"gmm.sharing": "layer", "gmm.identity_path": True, "gmm.pre_norm": "none"},
]
OPTIMIZER = [
    {},
    {"gmm.lookahead": 0},
    {"gmm.sharing": "layer", "gmm.lookahead": 2},
]
VARIANTS = ([{"gmm.reading": "reparam", **v} for v in REPARAM]
            + [{"gmm.reading": "optimizer", **v} for v in OPTIMIZER])


def _ids(over):
    return ",".join(f"{k[4:]}={v}" for k, v in over.items()) or "defaults"


@pytest.fixture(scope="module")
def at_theta(G, targets, w0):
    """g = ∇_θ L_sim and L_sim at the original θ, per image (pixel loss, as the tuner's)."""
    loss = pixel_loss(cfg_for())
    grads, l0 = loss_gradients(G, w0, loss.prepare(targets), loss)
    return grads, l0


def _l_sim(G, w, targets, deltas):
    loss = pixel_loss(cfg_for())
    with torch.no_grad():
        return loss(G.synthesis(w, noise_mode="const", weight_deltas=deltas), targets)[0]


def _check_descends(G, targets, w0, at_theta, results):
    grads, l0 = at_theta
    for i, r in enumerate(results):
        d = {k: r.deltas[k].unsqueeze(0) for k in grads}
        slope = sum(float((grads[k][i] * d[k][0]).sum()) for k in grads)
        norm = sum(float(v.pow(2).sum()) for v in d.values()) ** 0.5
        assert norm > 0 and slope < 0, (i, slope)
        probe = {k: v * (STEP / norm) for k, v in d.items()}
        l_step = _l_sim(G, w0[i:i + 1], targets[i:i + 1], probe)
        assert float(l_step) < float(l0[i]), (i, float(l_step), float(l0[i]))


@pytest.mark.parametrize("over", VARIANTS, ids=_ids)
def test_one_step_of_every_variant_lowers_l_sim(G, targets, w0, at_theta, over):
    cfg = cfg_for(steps=1, **over)
    cfg.reg.lambda_r = 0.0  # the sign of the fit term alone
    res = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))
    _check_descends(G, targets, w0, at_theta, res)


@pytest.mark.parametrize("pre", ["none", "sn", "in"])
def test_literal_reading_starts_with_a_descent_step(G, targets, w0, at_theta, pre):
    """identity_path true: step 0 is already θ − M(g) (M(g) = prenorm(g) with zero W₂)."""
    cfg = reparam_cfg(steps=0, **{"gmm.identity_path": True, "gmm.pre_norm": pre})
    res = tune_images("gani", G, targets, w0, cfg, pixel_loss(cfg))
    _check_descends(G, targets, w0, at_theta, res)
    if pre == "none":  # Δ_0 = −g, up to float summation order (2 threads: 1e-7 of max|g|)
        grads, _ = at_theta
        for i, r in enumerate(res):
            for k in grads:
                g = grads[k][i]
                assert torch.allclose(r.deltas[k], -g, rtol=1e-5, atol=1e-5 * float(g.abs().max()))
