"""Compact artifacts: round trip to the same rendered image, far smaller than a generator."""
from __future__ import annotations

import os

import pytest
import torch

from gani.tuning import render, tune_images
from gani.tuning.artifact import (artifact_nbytes, encode_target, load_artifact, lowrank_error,
                                  modulated_conv_shapes, save_artifact)

from tuning_helpers import cfg_for, pixel_loss, reparam_cfg


def _quantised(x):
    """Targets as the pipeline makes them: uint8 → ToTensor → Normalize(0.5, 0.5)."""
    u8 = ((x * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)
    return (u8.float() / 255 - 0.5) / 0.5


def test_gani_modules_artifact_round_trip(G, targets, w0, tmp_path):
    cfg = reparam_cfg(steps=6)
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


# ------------------------------------------- the optimizer reading's artifact (issue 13 point 2)
def _payload_bytes(path) -> int:
    """A safetensors file's tensor bytes: the file less its 8-byte length and JSON header."""
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return os.path.getsize(path) - 8 - header


def _optimizer_result(G, targets, w0):
    cfg = cfg_for(steps=4, **{"gmm.reading": "optimizer"})
    cfg.pti.lr = 3e-3
    return tune_images("gani", G, targets[:1], w0[:1], cfg, pixel_loss(cfg))[0]


def test_optimizer_reading_stores_fp16_deltas(G, targets, w0, tmp_path):
    r = _optimizer_result(G, targets, w0)
    p = save_artifact(tmp_path / "o.safetensors", r, targets[0])  # auto: deltas, fp16
    art = load_artifact(p)
    assert art.mode == "deltas" and art.meta["dtype"] == "fp16"
    assert all(v.dtype == torch.float16 for v in art.deltas.values())
    with torch.no_grad():
        assert (render(G, r) - render(G, art.result())).abs().max() < 1e-2
    shapes = {k: tuple(m.weight.shape[1:]) for k, m in G.modulated_convs().items()}
    assert _payload_bytes(p) == artifact_nbytes(shapes, "deltas", dtype="fp16",
                                                n_latent=G.n_latent, style_dim=G.style_dim)


def test_low_rank_deltas_round_trip_and_size(G, targets, w0, tmp_path):
    r = _optimizer_result(G, targets, w0)
    shapes = {k: tuple(v.shape) for k, v in r.deltas.items()}
    full_rank = max(min(s[0], s[1] * s[2] * s[3]) for s in shapes.values())
    exact = load_artifact(save_artifact(tmp_path / "f.safetensors", r, mode="deltas",
                                        dtype="fp32", rank=full_rank)).result()
    for k, v in r.deltas.items():  # rank ≥ every layer's rank: stored in full or exact factors
        assert torch.allclose(exact.deltas[k], v, atol=1e-6 * float(v.abs().max()) + 1e-12)
    p1 = save_artifact(tmp_path / "r1.safetensors", r, mode="deltas", dtype="fp16", rank=1)
    pf = save_artifact(tmp_path / "full.safetensors", r, mode="deltas", dtype="fp16")
    one = load_artifact(p1).result()
    assert os.path.getsize(p1) < 0.5 * os.path.getsize(pf)
    kw = dict(dtype="fp16", n_latent=G.n_latent, style_dim=G.style_dim)
    assert _payload_bytes(p1) == artifact_nbytes(shapes, "deltas", rank=1, **kw)
    k = "convs.1"  # a [16, 16, 3, 3] layer: rank 1 keeps ‖Δ_1‖ of ‖Δ‖, the rest is the error
    s = torch.linalg.svdvals(r.deltas[k].reshape(16, -1))
    err = float((one.deltas[k] - r.deltas[k]).norm() / r.deltas[k].norm())
    assert err == pytest.approx(float(s[1:].norm() / s.norm()), rel=1e-2)
    assert lowrank_error(r.deltas[k], 1) == pytest.approx(err, rel=1e-2)
    with pytest.raises(ValueError, match="rank"):
        save_artifact(tmp_path / "bad.safetensors", r, mode="deltas", rank=0)


@pytest.mark.parametrize("sharing", ["channels", "layer", "channels_affine"])
def test_modules_artifact_per_sharing_round_trips_at_the_predicted_size(G, targets, w0,
                                                                         tmp_path, sharing):
    cfg = reparam_cfg(steps=3, **{"gmm.sharing": sharing})
    loss = pixel_loss(cfg)
    tg = _quantised(targets[:1])
    r = tune_images("gani", G, tg, w0[:1], cfg, loss)[0]
    p = save_artifact(tmp_path / "m.safetensors", r, tg[0])
    with torch.no_grad():
        assert (render(G, r) - render(G, load_artifact(p).result(G, loss))).abs().max() < 1e-4
    shapes = {k: tuple(m.weight.shape[1:]) for k, m in G.modulated_convs().items()}
    assert _payload_bytes(p) == artifact_nbytes(shapes, "modules", gmm=cfg.gmm, image_size=G.size,
                                                n_latent=G.n_latent, style_dim=G.style_dim)


def test_official_1024_shapes():
    shapes = modulated_conv_shapes(1024)
    assert len(shapes) == 26 and shapes["conv1"] == (512, 512, 3, 3)
    assert shapes["convs.14"] == (32, 64, 3, 3) and shapes["convs.15"] == (32, 32, 3, 3) and shapes["to_rgbs.7"] == (3, 32, 1, 1)
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 23_592_864
    # fp16 deltas of the optimizer reading at 1024 px: 2 bytes a weight + the fp32 W+ latent
    assert artifact_nbytes(shapes, "deltas", dtype="fp16") == 2 * 23_592_864 + 18 * 512 * 4


_SAVE_IN_A_FRESH_PROCESS = """
import sys, torch
from gani.tuning.artifact import save_artifact
from gani.tuning.result import TunedImage
g = torch.Generator().manual_seed(0)
r = TunedImage(method="pti", latent=torch.randn(1, 4, 8, generator=g),
               deltas={"convs.0": torch.randn(4, 4, 3, 3, generator=g)},
               loss_curve=[0.5, 0.25], seconds=float(sys.argv[2]))
save_artifact(sys.argv[1], r, mode="deltas", generator_info={"size": 32, "style_dim": 8})
"""


def test_artifact_bytes_are_a_function_of_the_result_alone(tmp_path):
    """DVC hashes tuned.safetensors: two processes (each with its own hash-map seed, which
    ordered safetensors' metadata before) saving the same result with different tuning
    times write the same bytes, and the file still loads."""
    import subprocess
    import sys

    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for path, seconds in zip(paths, ("1.5", "7.25")):
        subprocess.run([sys.executable, "-c", _SAVE_IN_A_FRESH_PROCESS, str(path), seconds],
                       check=True)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    art = load_artifact(paths[0])
    assert "seconds" not in art.meta and art.meta["method"] == "pti"
    assert art.result().loss_curve == [0.5, 0.25]
    assert set(art.deltas) == {"convs.0"}


def test_canonical_header_orders_metadata_and_tensors():
    """The header is rewritten to one order whatever order it came in; the data is kept."""
    import json

    from safetensors.torch import load, save

    from gani.tuning.artifact import canonical_header

    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, dtype=torch.float16)}
    raw = save(tensors, metadata={"z": "1", "a": "2", "m": "3"})
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    shuffled = {k: header[k] for k in reversed(list(header))}
    shuffled["__metadata__"] = {"m": "3", "z": "1", "a": "2"}
    text = json.dumps(shuffled).encode()
    text += b" " * (-len(text) % 8)
    other = len(text).to_bytes(8, "little") + text + raw[8 + n:]
    assert other != raw and canonical_header(other) == canonical_header(raw)
    out = canonical_header(raw)
    m = int.from_bytes(out[:8], "little")
    assert m % 8 == 0
    assert list(json.loads(out[8:8 + m])["__metadata__"]) == ["a", "m", "z"]
    back = load(out)
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
