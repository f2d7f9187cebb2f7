"""The testbed e4e (benchmarks.testbed.core.encoder): schedule, encoding, training, files,
e4e layout."""
from __future__ import annotations

import pytest
import torch

from gani.testbed import faces as Fc
from benchmarks.testbed.core.encoder import (EncoderConfig, EncoderTrainer, delta_mask, encode,
                                             encode_images, load_encoder)
from gani.models.e4e import e4e_checkpoint, load_e4e_checkpoint
from gani.models.stylegan2 import Generator

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_G():
    torch.manual_seed(0)
    return Generator(32, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16).eval()


@pytest.fixture(scope="module")
def faces():
    return Fc.to_tensor(Fc.render_split(0, "train", 32, 32)[0])


def _trainer(G, faces, **kw):
    cfg = EncoderConfig(**{"width_div": 16, "batch": 8, "progressive_every": 2, **kw})
    return EncoderTrainer(G, cfg, faces=faces)


def test_delta_mask_adds_one_entry_every_k_steps():
    assert delta_mask(0, 4, 3).tolist() == [1, 0, 0, 0]
    assert delta_mask(3, 4, 3).tolist() == [1, 1, 0, 0]
    assert delta_mask(8, 4, 3).tolist() == [1, 1, 1, 0]
    assert delta_mask(9, 4, 3).tolist() == [1, 1, 1, 1]
    assert delta_mask(0, 4, 0).tolist() == [1, 1, 1, 1]


def test_encode_masks_deltas_and_adds_latent_avg(tiny_G, faces):
    tr = _trainer(tiny_G, faces)
    tr.E.eval()                      # BatchNorm on running statistics: batch-independent
    x = faces[:3]
    with torch.no_grad():
        raw = tr.E(torch.nn.functional.interpolate(x, size=64, mode="bilinear",
                                                   align_corners=False))
        full, d = encode(tr.E, tr.latent_avg, x, 64)
        only0, d0 = encode(tr.E, tr.latent_avg, x, 64, mask=delta_mask(0, tiny_G.n_latent, 5))
    assert full.shape == (3, tiny_G.n_latent, 32)
    torch.testing.assert_close(full, raw + tr.latent_avg)
    assert torch.count_nonzero(d[:, 0]) == 0 and torch.count_nonzero(d[:, 1:]) > 0
    # entry 0 only: every row is ŵ_0 + latent_avg's row
    torch.testing.assert_close(only0 - tr.latent_avg, (raw[:, :1]).expand_as(raw))
    assert torch.count_nonzero(d0) == 0
    torch.testing.assert_close(encode_images(tr.E, tr.latent_avg, x, 64, batch=2), full)


def test_training_steps_reduce_the_losses(tiny_G, faces):
    tr = _trainer(tiny_G, faces, lr=1e-3)
    x, w_true = tr.batch()                   # a fixed batch, half generated (true W known)

    def loss():
        tr.E.eval()
        with torch.no_grad():
            w, _ = encode(tr.E, tr.latent_avg, x, 64)
            rec = (tiny_G.synthesis(w, noise_mode="const") - x).square().mean()
            lat = (w[: w_true.shape[0]] - w_true[:, None]).square().mean()
        tr.E.train()
        return float(rec), float(lat)

    rec0, lat0 = loss()
    recs = [tr.train_step() for _ in range(60)]
    rec1, lat1 = loss()
    assert rec1 < 0.8 * rec0 and lat1 < lat0, (rec0, rec1, lat0, lat1)
    assert recs[0]["active"] == 1 and recs[-1]["active"] == tiny_G.n_latent
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in recs)


def test_files_round_trip_resume_and_e4e_layout(tiny_G, faces, tmp_path):
    tr = _trainer(tiny_G, faces)
    for _ in range(3):
        tr.train_step()
    tr.E.eval()
    path = tmp_path / "e4e_encoder.safetensors"
    tr.save_encoder(path)
    E, latent_avg, meta = load_encoder(path)
    assert meta["step"] == 3 and meta["width_div"] == 16 and meta["n_styles"] == tiny_G.n_latent
    x = faces[:2]
    with torch.no_grad():
        assert torch.equal(encode(E, latent_avg, x, 64)[0], encode(tr.E, tr.latent_avg, x, 64)[0])
    # the encoder is a valid official-layout e4e checkpoint for this generator
    E2, G2, la2 = load_e4e_checkpoint(e4e_checkpoint(E, tiny_G, latent_avg))
    with torch.no_grad():
        torch.testing.assert_close(E2(torch.nn.functional.interpolate(x, size=64)) + la2,
                                   E(torch.nn.functional.interpolate(x, size=64)) + latent_avg)
    # resume: 3 + 2 steps equal 5 uninterrupted steps
    state = tr.state()
    tr.E.train()
    cont = [tr.train_step()["loss"] for _ in range(2)]
    tr2 = _trainer(tiny_G, faces)
    tr2.load_state(state)
    again = [tr2.train_step()["loss"] for _ in range(2)]
    assert again == pytest.approx(cont, rel=1e-5)
