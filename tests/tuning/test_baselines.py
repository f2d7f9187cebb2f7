"""Each baseline improves reconstruction over the start latent (e4e-only) on a tiny case."""
from __future__ import annotations

import pytest
import torch

from gani.losses import rec_loss
from gani.tuning import render, tune_images

from tuning_helpers import cfg_for, pixel_loss


def l2_of(G, results, targets):
    with torch.no_grad():
        return [float(rec_loss(render(G, r), targets[i:i + 1])) for i, r in enumerate(results)]


def test_e4e_only_is_the_start(G, targets, w0):
    cfg = cfg_for(steps=5)
    res = tune_images("e4e", G, targets, w0, cfg, pixel_loss(cfg))
    assert all(r.deltas == {} and r.noise is None for r in res)
    assert torch.equal(res[0].latent, w0[0])
    with torch.no_grad():
        want = rec_loss(G.synthesis(w0, noise_mode="const"), targets)
    assert [r.loss_curve[0] for r in res] == pytest.approx(want.tolist())


@pytest.mark.parametrize("method", ["pti", "wplus_projection", "w_projection", "gani"])
def test_baseline_improves_over_e4e_only(G, targets, w0, method):
    cfg = cfg_for(steps=20)
    cfg.pti.lr = 3e-3  # tiny 32-px generator: a larger step than PTI's 3e-4 to move in 20
    # steps (GANI's default reading, the optimizer one, takes PTI's step too)
    start = l2_of(G, tune_images("e4e", G, targets, w0, cfg, pixel_loss(cfg)), targets)
    res = tune_images(method, G, targets, w0, cfg, pixel_loss(cfg))
    end = l2_of(G, res, targets)
    assert all(r.error is None for r in res)
    for s, e in zip(start, end):
        assert e < 0.9 * s, (method, start, end)
    if method.endswith("projection"):
        assert all(r.deltas == {} and r.noise is not None for r in res)
        if method == "w_projection":  # one W vector repeated over layers
            assert torch.allclose(res[0].latent, res[0].latent[:1].expand_as(res[0].latent))


def test_projection_lr_schedule_and_noise_regulariser():
    from gani.tuning.projection import noise_normalize_, noise_regularize, projector_lr

    assert projector_lr(0.0, 0.1) == 0.0
    assert projector_lr(0.5, 0.1) == pytest.approx(0.1)
    assert projector_lr(1.0, 0.1) == pytest.approx(0.0)
    n = [torch.randn(2, 1, 16, 16), torch.randn(2, 1, 8, 8)]
    r = noise_regularize(n)
    assert r.shape == (2,)
    smooth = [torch.ones(2, 1, 16, 16), torch.ones(2, 1, 8, 8)]
    assert (noise_regularize(smooth) > r).all()  # correlated noise is penalised
    noise_normalize_(n)
    assert torch.allclose(n[0].mean((1, 2, 3)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(n[0].std(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)
