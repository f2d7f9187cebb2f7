"""Compact artifacts: round trip to the same rendered image, far smaller than a generator."""
from __future__ import annotations

import os

import pytest
import torch

from gani.tuning import render, tune_images
from gani.tuning.artifact import encode_target, load_artifact, save_artifact

from tuning_helpers import cfg_for, pixel_loss


def _quantised(x):
    """Targets as the pipeline makes them: uint8 → ToTensor → Normalize(0.5, 0.5)."""
    u8 = ((x * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)
    return (u8.float() / 255 - 0.5) / 0.5


def test_gani_modules_artifact_round_trip(G, targets, w0, tmp_path):
    cfg = cfg_for(steps=6)
    loss = pixel_loss(cfg)
    tg = _quantised(targets[:1])
    r = tune_images("gani", G, tg, w0[:1], cfg, loss)[0]
    p = save_artifact(tmp_path / "a.safetensors", r, tg[0])
    art = load_artifact(p)
    assert art.mode == "modules" and art.target.dtype == torch.float32
    assert torch.equal(art.target, tg[0])  # stored as uint8, losslessly
    back = art.result(G, loss)
    with torch.no_grad():
        a, b = render(G, r), render(G, back)
    assert (a - b).abs().max() < 1e-4
    assert back.loss_curve == pytest.approx(r.loss_curve)
    # far smaller than the deltas (and than the generator)
    pd = save_artifact(tmp_path / "d.safetensors", r, mode="deltas")
    g_bytes = sum(v.numel() * v.element_size() for v in G.state_dict().values())
    assert os.path.getsize(p) < 0.5 * os.path.getsize(pd) < g_bytes
    with pytest.raises(ValueError, match="loss terms"):
        from gani.config.schema import LossWeights
        from gani.losses import SimilarityLoss

        art.result(G, SimilarityLoss(LossWeights(lambda_rec=0.0), lpips=lambda x, y: (x - y).abs().mean((1, 2, 3))))


@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-6), ("fp16", 1e-2)])
def test_pti_deltas_artifact(G, targets, w0, tmp_path, dtype, tol):
    cfg = cfg_for(steps=4)
    cfg.pti.lr = 3e-3
    r = tune_images("pti", G, targets[:1], w0[:1], cfg, pixel_loss(cfg))[0]
    p = save_artifact(tmp_path / "p.safetensors", r, dtype=dtype)
    back = load_artifact(p).result()
    with torch.no_grad():
        assert (render(G, r) - render(G, back)).abs().max() < tol


def test_projection_artifact_keeps_latent_and_noise(G, targets, w0, tmp_path):
    cfg = cfg_for(steps=3)
    r = tune_images("wplus_projection", G, targets[:1], w0[:1], cfg, pixel_loss(cfg))[0]
    back = load_artifact(save_artifact(tmp_path / "w.safetensors", r)).result()
    assert back.deltas == {} and torch.equal(back.latent, r.latent)
    assert all(torch.equal(a, b) for a, b in zip(back.noise, r.noise))
    with torch.no_grad():
        assert torch.equal(render(G, r), render(G, back))


def test_unquantised_target_is_stored_exactly():
    x = torch.rand(3, 8, 8) * 2 - 1
    t, enc = encode_target(x)
    assert enc == "f32" and torch.equal(t, x)
    t, enc = encode_target(_quantised(x))
    assert enc == "u8_normalize" and t.dtype == torch.uint8
