"""Testbed: procedural faces, discriminator, training loop, checkpoints, regressor, directions."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from gani.testbed import faces as Fc
from gani.testbed.attributes import evaluate_regressor, train_regressor
from gani.testbed.directions import fit_interfacegan
from benchmarks.testbed.core.discriminator import Discriminator
from benchmarks.testbed.core.sanity import frechet_distance

torch.set_num_threads(1)

MOUTH = np.array([150, 30, 40])
PUPIL = np.array([25, 20, 30])


def _base_attrs(**kw):
    a = {k: (lo + hi) / 2 for k, (lo, hi) in Fc.FULL_RANGE.items()}
    a.update(lighting=0.0, hair_length=0.0)
    a.update(kw)
    return a


def _mask(img, colour, tol=30):
    return np.abs(img.astype(int) - colour).max(-1) < tol


# ---------------------------------------------------------------- procedural data
def test_faces_deterministic_per_seed_and_index():
    a, la = Fc.make_face(0, "train", 7, size=32)
    b, lb = Fc.make_face(0, "train", 7, size=32)
    assert np.array_equal(a, b) and la == lb
    c, _ = Fc.make_face(0, "train", 8, size=32)
    d, _ = Fc.make_face(1, "train", 7, size=32)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert Fc.make_face(0, "test", 3, size=64)[0].shape == (64, 64, 3)
    assert set(la) == set(Fc.ATTRIBUTES)


def _mouth_curvature(smile, R=128):
    img = Fc.render_face(_base_attrs(smile=smile), size=R, supersample=1)
    g = Fc.face_geometry(_base_attrs(smile=smile))
    ys, xs = np.nonzero(_mask(img, MOUTH))
    t = (xs - g.feat_cx * R) / (g.mouth_hw * R)
    centre, corners = ys[np.abs(t) < 0.25].mean(), ys[np.abs(t) > 0.7].mean()
    return centre - corners        # > 0: centre lower than the corners (a smile)


def test_smile_label_matches_mouth_curvature():
    curv = [_mouth_curvature(s) for s in (-0.9, -0.4, 0.0, 0.4, 0.9)]
    assert all(b > a + 1.0 for a, b in zip(curv, curv[1:])), curv
    assert curv[0] < -3 and curv[-1] > 3 and abs(curv[2]) < 1.5


def test_yaw_shifts_feature_centroid():
    R = 128
    cx = []
    for yaw in (-0.8, 0.0, 0.8):
        img = Fc.render_face(_base_attrs(yaw=yaw), size=R, supersample=1)
        xs = np.nonzero(_mask(img, PUPIL))[1]
        cx.append(xs.mean() / R)
    assert cx[0] < cx[1] - 0.05 and cx[2] > cx[1] + 0.05, cx


def test_gaze_and_skin_tone_labels_match_pixels():
    R = 128
    px = [np.nonzero(_mask(Fc.render_face(_base_attrs(gaze=g), R, 1), PUPIL))[1].mean()
          for g in (-1.0, 1.0)]
    assert px[1] - px[0] > 0.02 * R
    cheek = [Fc.render_face(_base_attrs(skin_tone=s), R, 1)[int(0.6 * R), int(0.4 * R)].mean()
             for s in (0.1, 0.9)]
    assert cheek[0] > cheek[1] + 60


def test_splits_disjoint_and_shifted_out_of_range():
    for i in range(200):
        for split in ("train", "test"):
            a = Fc.sample_attributes(0, split, i)
            for k, (lo, hi) in Fc.TRAIN_RANGE.items():
                assert lo <= a[k] <= hi
        s = Fc.sample_attributes(0, "shifted", i)
        out = [k for k in Fc.SHIFTED_ATTRIBUTES
               if not Fc.TRAIN_RANGE[k][0] <= s[k] <= Fc.TRAIN_RANGE[k][1]]
        assert out and max(abs(s[k]) for k in out) >= Fc.SHIFT_MIN
    hashes = {}
    for split in ("train", "test", "shifted"):
        imgs, _ = Fc.render_split(0, split, 100, 32)
        hashes[split] = {hashlib.sha1(im.tobytes()).hexdigest() for im in imgs}
        assert len(hashes[split]) == 100
    assert not hashes["train"] & hashes["test"]
    assert not hashes["train"] & hashes["shifted"] and not hashes["test"] & hashes["shifted"]


def test_dataset_and_batches():
    ds = Fc.ProceduralFaces("test", n=10, size=32)
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and -1 <= x.min() and x.max() <= 1
    assert y.shape == (len(Fc.ATTRIBUTES),)
    xs, ys = ds.tensors()
    assert torch.equal(xs[3], x)
    it = Fc.batch_iterator(xs, 4, torch.Generator().manual_seed(0))
    assert next(it).shape == (4, 3, 32, 32)


# ---------------------------------------------------------------- D, training, checkpoints
def test_discriminator_shapes():
    D = Discriminator(32, channel_max=16)
    assert D(torch.randn(6, 3, 32, 32)).shape == (6, 1)
    assert Discriminator(64, channel_max=16)(torch.randn(4, 3, 64, 64)).shape == (4, 1)


def _tiny_cfg(**kw):
    from benchmarks.testbed.core.train import TrainConfig
    base = dict(size=32, style_dim=32, n_mlp=2, channel_max=16, d_channel_max=16, batch=8,
                n_train=64, n_sample=8, mixing=0.5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny_real():
    imgs, _ = Fc.render_split(0, "train", 64, 32)
    return Fc.to_tensor(imgs)


def _make_trainer(tiny_real, **kw):
    pytest.importorskip("gani.models.stylegan2")
    from benchmarks.testbed.core.train import Trainer
    return Trainer(_tiny_cfg(**kw), real_images=tiny_real)


def test_training_steps_reduce_losses_on_fixed_batches(tiny_real):
    from benchmarks.testbed.core.train import d_logistic_loss, g_nonsaturating_loss
    tr = _make_trainer(tiny_real, mixing=0.0)
    real = tiny_real[:8]
    wp = tr.G.mapping(torch.randn(8, 32, generator=torch.Generator().manual_seed(5)))
    wp = wp.detach().unsqueeze(1).repeat(1, tr.n_latent, 1)

    def d_loss():
        with torch.no_grad():
            return float(d_logistic_loss(tr.D(real), tr.D(tr.G.synthesis(wp, noise_mode="none"))))

    def g_loss():
        with torch.no_grad():
            return float(g_nonsaturating_loss(tr.D(tr.G.synthesis(wp, noise_mode="none"))))

    d0 = d_loss()
    for _ in range(10):
        tr.d_step(real)
    d1 = d_loss()
    assert d1 < d0 - 0.05, (d0, d1)
    # G against the (now fixed) D: G's non-saturating loss falls
    g0 = g_loss()
    for _ in range(10):
        tr.g_step()
    g1 = g_loss()
    assert g1 < g0 - 0.05, (g0, g1)
    # the full step (with R1 and EMA) runs and reports finite numbers
    s = tr.train_step()
    assert all(np.isfinite(v) for v in s.values()) and "r1" in s


def test_g_ema_safetensors_loads_strictly_and_resume_continues(tiny_real, tmp_path):
    from benchmarks.testbed.core.train import Trainer, train
    from gani.models.stylegan2 import Generator
    from gani.safeload import load_safetensors

    tr = _make_trainer(tiny_real)
    train(tr, tmp_path, max_steps=3, ckpt_every=2, sample_every=2, log_every=1, progress=False)
    assert (tmp_path / "samples" / "step_000002.png").is_file()
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3
    G = Generator(**tr.G.config())
    G.load_state_dict(load_safetensors(tmp_path / "g_ema.safetensors"), strict=True)
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.allclose(G.synthesis(G.mapping(z)), tr.g_ema.synthesis(tr.g_ema.mapping(z)))
    assert set(G.state_dict()) == set(load_safetensors(tmp_path / "g_ema.safetensors"))

    # resume 3 → 5 equals an uninterrupted run to 5 (same RNG streams)
    cfg = Trainer.config_from_checkpoint(tmp_path / "checkpoint.pt")
    tr2 = Trainer(cfg, real_images=tiny_real)
    tr2.load(tmp_path / "checkpoint.pt")
    assert tr2.step == 3 and tr2.nimg == 24
    train(tr2, tmp_path, max_steps=5, progress=False)
    assert tr2.step == 5
    ref = _make_trainer(tiny_real)
    for _ in range(5):
        ref.train_step()
    for (k, a), b in zip(ref.G.state_dict().items(), tr2.G.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k


# ---------------------------------------------------------------- regressor, directions, FD
def test_attribute_regressor_beats_chance_on_held_out():
    xi, yi = Fc.render_split(0, "train", 1500, 32)
    xt, yt = Fc.render_split(0, "test", 300, 32)
    model = train_regressor(Fc.to_tensor(xi), torch.from_numpy(yi), steps=150, batch=32)
    r2 = evaluate_regressor(model, Fc.to_tensor(xt), torch.from_numpy(yt))
    assert r2["smile"] > 0.5 and r2["yaw"] > 0.5, r2
    assert sum(v > 0 for v in r2.values()) >= len(r2) - 1, r2


def test_interfacegan_fit_recovers_linear_direction():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(600, 16, generator=g)
    d_true = torch.zeros(16)
    d_true[3], d_true[7] = 0.6, -0.8
    y = torch.stack([w @ d_true, w[:, 0]], 1) + 0.05 * torch.randn(600, 2, generator=g)
    fit = fit_interfacegan(w, y, ["a", "b"], ridge=1e-4)
    assert float(fit["a"]["direction"].view(-1) @ d_true) > 0.99
    assert fit["a"]["r2_holdout"] > 0.95


def test_frechet_distance_basic():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(2000, 8)), g.normal(size=(2000, 8))
    assert frechet_distance(a, b) < 0.1
    assert frechet_distance(a, b + 1.0) == pytest.approx(8.0, abs=0.3)
