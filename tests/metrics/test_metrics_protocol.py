"""Metrics against hand-computed values and the HyperStyle protocol quirks."""
import json
import math
import mmap
import time

import numpy as np
import pytest
import torch
from PIL import Image

from gani.metrics import (ARCFACE_TEMPLATE_112, METRIC_KEYS, ResourceMeter, compute_metrics, face_id_input,
                          gaussian_window, guess_dynamic_range, id_similarity, l2, locality,
                          locality_latents, lpips_distance, metric_batch, metric_tensor,
                          moco_input, ms_ssim, nanmean_dropping, similarity_transform,
                          five_points, ssim_and_cs, summarize, template_id_input, tensor2im,
                          warp_to_template)


# ---------------------------------------------------------------- preprocessing

def test_tensor2im_truncates_not_rounds():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0, 1.5]).view(1, 1, 6).expand(3, 1, 6)
    arr = np.asarray(tensor2im(x))[0, :, 0]
    # (x+1)/2·255 = 0, 0.1275, 127.5, 254.87, 255, clip -> 255
    assert arr.tolist() == [0, 0, 127, 254, 255, 255]


def test_metric_tensor_is_pil_bilinear_then_normalise():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    t = metric_tensor(img)
    assert t.shape == (1, 3, 256, 256) and t.dtype == torch.float32
    ref = np.asarray(img.resize((256, 256), Image.Resampling.BILINEAR)).astype(np.float32)
    ref = (ref / 255 - 0.5) / 0.5
    np.testing.assert_allclose(t[0].permute(1, 2, 0).numpy(), ref, atol=1e-6)
    # tensors go through uint8 first: a generator output and its saved PNG agree
    g = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(metric_tensor(g), metric_tensor(tensor2im(g)))
    assert metric_batch(torch.rand(2, 3, 32, 32)).shape == (2, 3, 256, 256)


# ---------------------------------------------------------------- L2

def test_l2_is_mse_on_minus_one_one():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.zeros(2, 3, 4, 4)
    b[0] = 0.5
    b[1, 0, 0, 0] = 2.0
    np.testing.assert_allclose(l2(a, b).numpy(), [0.25, 4.0 / 48])
    assert float(torch.nn.MSELoss()(a[:1], b[:1])) == pytest.approx(float(l2(a, b)[0]))


# ---------------------------------------------------------------- MS-SSIM

def test_window_matches_reference_construction():
    w = gaussian_window(11, 1.5, 3)
    assert w.shape == (3, 1, 11, 11)
    assert float(w[0].sum()) == pytest.approx(1.0, abs=1e-6)
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    np.testing.assert_allclose(w[0, 0].numpy(), np.outer(g, g), atol=1e-7)


def test_ssim_of_constant_patches_by_hand():
    # 11x11 constant images: one valid output pixel, sigma = 0 (float64: the float32
    # E[x²] − μ² cancellation of the reference formula leaves ~1e-8 of noise)
    a = torch.full((1, 1, 11, 11), 0.2, dtype=torch.float64)
    b = torch.full((1, 1, 11, 11), 0.6, dtype=torch.float64)
    s, cs = ssim_and_cs(a, b)
    c1 = (0.01 * 1) ** 2  # img1 in [0.2, 0.2] -> L = 1 - 0
    # (the float32 window sums to 1 − 1.2e-7, as in the reference: hence rel 5e-5)
    assert float(s) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1), rel=5e-5)
    assert float(cs) == pytest.approx(1.0, abs=5e-5)
    # range guess from img1 only: min < -0.5 -> L = 2
    a2 = torch.full((1, 1, 11, 11), -0.6, dtype=torch.float64)
    s2, _ = ssim_and_cs(a2, b)
    c1 = (0.01 * 2) ** 2
    assert float(s2) == pytest.approx((2 * -0.6 * 0.6 + c1) / (0.36 + 0.36 + c1), rel=1e-4)
    assert guess_dynamic_range(torch.tensor([0.0, 200.0])) == 255
    assert guess_dynamic_range(torch.tensor([-1.0, 200.0])) == 256
    assert guess_dynamic_range(torch.tensor([-0.4, 1.0])) == 1


def test_ms_ssim_identical_is_one():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    np.testing.assert_allclose(ms_ssim(x, x).numpy(), [1.0, 1.0], atol=1e-5)


def test_ms_ssim_range_quirk_and_asymmetry():
    torch.manual_seed(1)
    bright = torch.rand(1, 3, 128, 128) * 1.3 - 0.3       # min >= -0.5 -> L = 1 (quirk)
    noisy = (bright + 0.3 * torch.randn_like(bright)).clamp(-1, 1)
    noisy[..., :32, :32] = -1.0  # min < -0.5 at every scale -> L = 2 throughout
    auto = float(ms_ssim(bright, noisy)[0])
    assert auto == pytest.approx(float(ms_ssim(bright, noisy, val_range=1)[0]), rel=1e-6)
    assert auto != pytest.approx(float(ms_ssim(bright, noisy, val_range=2)[0]), rel=1e-3)
    # the guess looks at img1 only, so the metric is not symmetric
    swapped = float(ms_ssim(noisy, bright)[0])
    assert swapped == pytest.approx(float(ms_ssim(noisy, bright, val_range=2)[0]), rel=1e-6)
    assert swapped != pytest.approx(auto, rel=1e-3)


def test_ms_ssim_range_is_guessed_again_at_every_scale():
    # sparse -1 pixels: scale 0 sees min -1 (L=2); after 2x2 pooling min > -0.5 (L=1)
    torch.manual_seed(2)
    img1 = torch.rand(1, 3, 128, 128) * 0.8 + 0.1
    img1[..., ::4, ::4] = -1.0
    img2 = (img1 + 0.05 * torch.randn_like(img1)).clamp(-1, 1)
    assert guess_dynamic_range(img1) == 2
    assert guess_dynamic_range(torch.nn.functional.avg_pool2d(img1, 2)) == 1
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    a, b, prod = img1, img2, 1.0
    for i, wgt in enumerate(weights):
        s, cs = ssim_and_cs(a, b, val_range=2 if i == 0 else 1)
        prod *= float(cs) ** wgt if i < 4 else float(s) ** wgt
        a, b = torch.nn.functional.avg_pool2d(a, 2), torch.nn.functional.avg_pool2d(b, 2)
    assert float(ms_ssim(img1, img2)[0]) == pytest.approx(prod, rel=1e-5)
    assert float(ms_ssim(img1, img2, val_range=2)[0]) != pytest.approx(prod, rel=1e-4)


def test_ms_ssim_nan_and_dropping():
    torch.manual_seed(3)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    v = float(ms_ssim(x, -x)[0])       # anti-correlated: negative cs ** 0.0448 -> NaN
    assert math.isnan(v)
    assert nanmean_dropping([0.5, float("nan"), None, 0.7]) == pytest.approx(0.6)
    assert nanmean_dropping([float("nan")]) is None


# ---------------------------------------------------------------- networks

class FakeFeat(torch.nn.Module):
    def __init__(self, out=16):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, out, 5, stride=4)
        self.seen = None

    def forward(self, x):
        self.seen = tuple(x.shape)
        return self.conv(x).mean((2, 3))


def test_id_similarity_protocols():
    torch.manual_seed(4)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    assert id_similarity(None, x, x) is None
    net = FakeFeat()
    s = id_similarity(net, x, x, protocol="crop")
    np.testing.assert_allclose(s.numpy(), [1.0, 1.0], atol=1e-5)
    assert net.seen == (2, 3, 112, 112)
    assert face_id_input(x).shape == (2, 3, 112, 112)
    # the crop is rows 35:223, cols 32:220 of the 256 image
    y = torch.zeros(1, 3, 256, 256)
    y[..., 35:223, 32:220] = 1.0
    assert torch.allclose(face_id_input(y), torch.ones(1, 3, 112, 112))
    s2 = id_similarity(net, x, -x, kind="moco")
    assert net.seen == (2, 3, 224, 224) and torch.all(s2 < 1)
    assert moco_input(x).shape[-2:] == (224, 224)
    with pytest.raises(ValueError):
        id_similarity(net, x, x, kind="dog")
    with pytest.raises(ValueError):
        id_similarity(net, x, x, protocol="mtcnn")
    # template protocol: no face in noise -> NaN per image -> None in compute_metrics
    assert torch.isnan(id_similarity(net, x[:1], x[:1])).all()


def test_similarity_transform_and_template_warp():
    rng = np.random.default_rng(6)
    ang, sc, t = 0.3, 1.7, np.array([12.0, -5.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = rng.uniform(0, 100, (5, 2))
    dst = src @ (sc * r).T + t
    np.testing.assert_allclose(similarity_transform(src, dst), np.hstack([sc * r, t[:, None]]),
                               atol=1e-9)
    # points drawn as single bright pixels land on the template pixels after the warp
    pts = ARCFACE_TEMPLATE_112 / 0.5 + np.array([30.0, 20.0])  # scaled x2, shifted
    pts = np.rint(pts)
    img = np.zeros((300, 300, 3), dtype=np.uint8)
    for x, y in pts.astype(int):
        img[y - 1:y + 2, x - 1:x + 2] = 255
    out = np.asarray(warp_to_template(Image.fromarray(img), pts)).mean(-1)
    for (tx, ty) in ARCFACE_TEMPLATE_112 + (pts - (ARCFACE_TEMPLATE_112 / 0.5 + [30, 20])) / 2:
        yy, xx = np.mgrid[int(ty) - 3:int(ty) + 4, int(tx) - 3:int(tx) + 4]
        wgt = out[yy, xx]
        assert wgt.sum() > 0
        cx, cy = (xx * wgt).sum() / wgt.sum(), (yy * wgt).sum() / wgt.sum()
        assert abs(cx - tx) < 0.35 and abs(cy - ty) < 0.35
    assert five_points(np.arange(136.0).reshape(68, 2)).shape == (5, 2)


def test_template_id_on_a_real_face():
    pytest.importorskip("dlib")
    from skimage import data

    from gani.alignment import e4e_align, detect_landmarks

    img = Image.fromarray(data.astronaut())
    face = metric_tensor(e4e_align(img, detect_landmarks(img)))
    net = FakeFeat()
    assert template_id_input(face).shape == (1, 3, 112, 112)
    s = id_similarity(net, face, face)
    assert float(s[0]) == pytest.approx(1.0, abs=1e-5)
    m = compute_metrics(face, face, id_net=net)
    assert m["id"] == pytest.approx(1.0, abs=1e-5)
    m = compute_metrics(face, torch.rand(1, 3, 256, 256) * 2 - 1, id_net=net)
    assert m["id"] is None  # no face in the noise: no score, never a made-up value


def test_lpips_distance_wrapper():
    x = torch.zeros(2, 3, 8, 8)
    assert lpips_distance(None, x, x) is None
    per_image = lpips_distance(lambda a, b: torch.tensor([0.1, 0.2]).view(2, 1, 1, 1), x, x)
    np.testing.assert_allclose(per_image.numpy(), [0.1, 0.2])
    with pytest.raises(ValueError):
        lpips_distance(lambda a, b: torch.tensor(0.3), x, x)


# ---------------------------------------------------------------- locality, cost

def test_locality(tiny_g):
    assert locality(tiny_g, None) == (0.0, None)
    assert locality(tiny_g, None, lpips_net=lambda a, b: (a - b).abs().mean((1, 2, 3))) \
        == (0.0, 0.0)
    deltas = {"synth": 0.1 * torch.randn_like(tiny_g.synth)}
    l2a, lpa = locality(tiny_g, deltas, n=5, seed=11,
                        lpips_net=lambda a, b: (a - b).abs().mean((1, 2, 3)))
    assert l2a > 0 and lpa > 0
    w = locality_latents(tiny_g, 5, 11)
    assert w.shape == (5, tiny_g.n_latent, tiny_g.style_dim)
    with torch.no_grad():
        a = metric_batch(tiny_g.synthesis(w))
        b = metric_batch(tiny_g.synthesis(w, weight_deltas=deltas))
    assert l2a == pytest.approx(float(((a - b) ** 2).mean()), rel=1e-5)
    assert locality(tiny_g, deltas, n=5, seed=11)[0] == l2a           # fixed latents
    assert locality(tiny_g, deltas, n=5, seed=12)[0] != l2a
    # a separate tuned generator instead of deltas
    import copy
    tuned = copy.deepcopy(tiny_g)
    with torch.no_grad():
        tuned.synth += deltas["synth"]
    assert locality(tiny_g, tuned_G=tuned, n=5, seed=11)[0] == pytest.approx(l2a, rel=1e-4)


def test_resource_meter_cpu():
    # 64 MiB of fresh anonymous pages, each touched. (np.ones would be served from glibc's
    # heap when earlier tests left that much free there, already resident: RSS, and so
    # the meter, rightly would not grow: 2 runs in 12 of these suites failed that way.)
    size = 64 * 1024 * 1024
    with ResourceMeter("cpu") as m:
        buf = mmap.mmap(-1, size)
        buf[::mmap.PAGESIZE] = b"\1" * (size // mmap.PAGESIZE)
        time.sleep(0.05)
    buf.close()
    assert m.seconds >= 0.05
    assert m.peak_mem_bytes is not None and m.peak_mem_bytes >= 48 * 1024 * 1024


# ---------------------------------------------------------------- compute_metrics

def test_compute_metrics_contract(tiny_g):
    rng = np.random.default_rng(5)
    target = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    m = compute_metrics(target, target)
    assert tuple(m) == METRIC_KEYS
    assert m["l2"] == 0.0 and m["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert all(m[k] is None for k in ("lpips", "id", "locality_l2", "locality_lpips",
                                       "seconds", "peak_mem_bytes"))
    recon = torch.tanh(torch.randn(1, 3, 32, 32))
    with ResourceMeter() as meter:
        pass
    m = compute_metrics(target, recon, G=tiny_g,
                        weight_deltas={"synth": 0.1 * torch.randn_like(tiny_g.synth)},
                        lpips_net=lambda a, b: (a - b).abs().mean((1, 2, 3)),
                        id_net=FakeFeat(), id_protocol="crop", meter=meter, locality_n=3)
    assert m["l2"] > 0 and 0 < m["lpips"] and -1 <= m["id"] <= 1
    assert m["locality_l2"] > 0 and m["locality_lpips"] > 0
    assert m["seconds"] == meter.seconds and isinstance(m["peak_mem_bytes"], int)
    json.dumps(m, allow_nan=False)
    # a NaN MS-SSIM is reported as None (dropped from means, like the reference)
    t = torch.rand(1, 3, 256, 256) * 2 - 1
    assert compute_metrics(t, -t)["ms_ssim"] is None
    s = summarize([{"l2": 1.0, "ms_ssim": None}, {"l2": 3.0, "ms_ssim": 0.5}])
    assert s["l2"] == 2.0 and s["ms_ssim"] == 0.5 and s["lpips"] is None
    # cars: the square generator output is cropped to its content rows first
    car_recon = torch.zeros(1, 3, 64, 64) - 1
    car_recon[..., 8:56, :] = 0.5
    car_target = Image.new("RGB", (64, 48), (191, 191, 191))
    assert compute_metrics(car_target, car_recon, domain="cars")["l2"] == pytest.approx(0.0)
