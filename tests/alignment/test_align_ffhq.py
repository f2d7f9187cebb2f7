"""FFHQ / e4e alignment on synthetic faces whose landmarks are known exactly."""
import math

import numpy as np
import pytest
from PIL import Image

from gani.alignment import e4e_align, face_quad, ffhq_align, quad_to_output
from gani.alignment.ffhq import _pad_reflect_blend


def synthetic_face(size=(400, 400), center=(200.0, 200.0), eye_dist=60.0, eye_mouth=60.0,
                   angle_deg=0.0, blob=7):
    """A light image with two dark eye blobs and a dark mouth bar, plus 68 landmarks.

    The face is symmetric and rotated by angle_deg (counter-clockwise on screen).
    """
    a = math.radians(angle_deg)
    ex = np.array([math.cos(a), -math.sin(a)])   # face's right-pointing axis on screen
    ey = np.array([math.sin(a), math.cos(a)])    # face's down axis on screen
    c = np.asarray(center, dtype=np.float64)
    eye_l = c - ex * eye_dist / 2
    eye_r = c + ex * eye_dist / 2
    mouth_c = c + ey * eye_mouth
    mouth_l = mouth_c - ex * eye_dist * 0.4
    mouth_r = mouth_c + ex * eye_dist * 0.4
    lm = np.full((68, 2), np.nan)
    # eye contours: 6 points on a small ellipse around each centre (mean = centre)
    for base, ctr in ((36, eye_l), (42, eye_r)):
        for k in range(6):
            t = 2 * math.pi * k / 6
            lm[base + k] = ctr + ex * 8 * math.cos(t) + ey * 3 * math.sin(t)
    lm[48] = mouth_l
    lm[54] = mouth_r
    # fill the rest with something finite (chin etc. are not used by the algorithm)
    nan_rows = np.isnan(lm[:, 0])
    lm[nan_rows] = c
    yy, xx = np.mgrid[:size[1], :size[0]]
    arr = np.stack([180 + 40 * xx / size[0], 170 + 30 * yy / size[1],
                    np.full(xx.shape, 160.0)], -1).astype(np.uint8)
    dark = np.zeros(xx.shape)
    for p in (eye_l, eye_r):  # anti-aliased discs centred exactly on the float eye centres
        r = np.hypot(xx - p[0], yy - p[1])
        dark = np.maximum(dark, np.clip(blob + 0.5 - r, 0, 1))
    arr = np.rint(arr * (1 - dark[..., None])).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    return img, lm, dict(eye_l=eye_l, eye_r=eye_r, mouth_c=mouth_c, mouth_l=mouth_l,
                         mouth_r=mouth_r)


def dark_centroids(img: Image.Image, thresh=120):
    """Darkness-weighted centroids (x, y) of the blobs in the left and right halves."""
    a = np.asarray(img).astype(np.float64).mean(-1)
    h, w = a.shape
    out = []
    for x0, x1 in ((0, w // 2), (w // 2, w)):
        sub = a[: h * 2 // 3, x0:x1]
        wgt = np.clip(thresh - sub, 0, None)
        assert wgt.sum() > 0, "no dark blob found"
        ys, xs = np.mgrid[:sub.shape[0], :sub.shape[1]]
        out.append(np.array([(xs * wgt).sum() / wgt.sum() + x0, (ys * wgt).sum() / wgt.sum()]))
    return out


def test_face_quad_hand_computed():
    lm = np.full((68, 2), np.nan)
    lm[36:42] = (40, 50)
    lm[42:48] = (60, 50)
    lm[48] = (42, 70)
    lm[54] = (58, 70)
    fq = face_quad(lm)
    # e2e=(20,0), e2m=(0,20): x=(40,0) scaled to max(40, 36)=40; y=(0,40); c=(50,52)
    np.testing.assert_allclose(fq.quad, [[10, 12], [10, 92], [90, 92], [90, 12]])
    assert fq.qsize == pytest.approx(80.0)
    # the mouth-dominated branch: long face -> 1.8·|e2m|
    lm[48] = (42, 100)
    lm[54] = (58, 100)
    fq = face_quad(lm)
    assert fq.qsize == pytest.approx(2 * 1.8 * 50)
    # unrotated variant keeps x horizontal
    lm2 = lm.copy()
    lm2[42:48] = (60, 60)
    assert face_quad(lm2, rotate_level=False).quad[0, 1] == face_quad(
        lm2, rotate_level=False).quad[3, 1]


def test_bad_landmarks_shape_and_nan():
    with pytest.raises(ValueError):
        face_quad(np.zeros((5, 2)))
    lm = np.zeros((68, 2))
    lm[40] = np.nan
    with pytest.raises(ValueError):
        face_quad(lm)


def expected_eye_positions(eye_dist, eye_mouth, out):
    s = max(2 * eye_dist, 1.8 * eye_mouth)        # |x|
    u_l = 0.5 * out - (eye_dist / 2) / (2 * s) * out
    u_r = 0.5 * out + (eye_dist / 2) / (2 * s) * out
    v = 0.5 * out - 0.1 * eye_mouth / (2 * s) * out
    return np.array([u_l, v]), np.array([u_r, v])


@pytest.mark.parametrize("angle", [0.0, 23.0, -40.0])
def test_eyes_land_where_the_quad_says_and_rotation_is_removed(angle):
    img, lm, pts = synthetic_face(angle_deg=angle)
    fq = face_quad(lm)
    out = e4e_align(img, lm)
    assert out.size == (256, 256) and out.mode == "RGB"
    exp_l, exp_r = expected_eye_positions(60.0, 60.0, 256)
    # analytic inverse of the quad map agrees with the closed form
    uv = quad_to_output([pts["eye_l"], pts["eye_r"]], fq.quad, 256)
    np.testing.assert_allclose(uv[0], exp_l, atol=1e-9)
    np.testing.assert_allclose(uv[1], exp_r, atol=1e-9)
    # and the rendered blobs sit there (pixel index = continuous coordinate - 0.5)
    got_l, got_r = dark_centroids(out)
    np.testing.assert_allclose(got_l, exp_l - 0.5, atol=0.1)
    np.testing.assert_allclose(got_r, exp_r - 0.5, atol=0.1)
    assert abs(got_l[1] - got_r[1]) < 0.3  # level eyes: rotation removed


def test_shrink_path_large_face():
    # qsize = 2·max(2·300, 1.8·300) = 1200 -> shrink = floor(1200/256·0.5) = 2
    img, lm, _ = synthetic_face(size=(1400, 1400), center=(700.0, 640.0), eye_dist=300.0,
                                eye_mouth=300.0, angle_deg=10.0, blob=30)
    assert int(np.floor(face_quad(lm).qsize / 256 * 0.5)) == 2
    out = e4e_align(img, lm)
    exp_l, exp_r = expected_eye_positions(300.0, 300.0, 256)
    got_l, got_r = dark_centroids(out)
    np.testing.assert_allclose(got_l, exp_l - 0.5, atol=0.3)
    np.testing.assert_allclose(got_r, exp_r - 0.5, atol=0.3)


def test_pad_path_face_at_the_border():
    # face in the top-left corner: the quad leaves the image -> reflect pad + blur + median
    img, lm, _ = synthetic_face(size=(300, 300), center=(70.0, 60.0), eye_dist=60.0,
                                eye_mouth=60.0)
    q = face_quad(lm).quad
    assert q.min() < 0
    out = e4e_align(img, lm)
    exp_l, exp_r = expected_eye_positions(60.0, 60.0, 256)
    got_l, got_r = dark_centroids(out)
    np.testing.assert_allclose(got_l, exp_l - 0.5, atol=0.1)
    np.testing.assert_allclose(got_r, exp_r - 0.5, atol=0.1)
    arr = np.asarray(out)
    assert arr[:5, :5].mean() > 100  # padded corner filled, not black
    # without padding the area outside the image is black (PIL fills with 0)
    nopad = np.asarray(e4e_align(img, lm, enable_padding=False))
    assert nopad[:5, :5].mean() < 5


def test_pad_blend_keeps_interior_and_fades_to_median():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), "RGB")
    out, pad = _pad_reflect_blend(img, (3, 3, 3, 3), qsize=40.0)
    p = int(np.rint(40 * 0.3))
    assert tuple(pad) == (p, p, p, p)
    arr = np.asarray(out).astype(int)
    assert arr.shape == (40 + 2 * p, 50 + 2 * p, 3)
    # the outermost ring is fully blended to the (per-channel) median of the blurred image
    edge = arr[0, arr.shape[1] // 2]
    assert np.all(np.abs(edge - np.median(arr, axis=(0, 1))) <= 20)


def test_ffhq_defaults_1024():
    img, lm, _ = synthetic_face(size=(300, 300))
    out = ffhq_align(img, lm)
    assert out.size == (1024, 1024)
    exp_l, exp_r = expected_eye_positions(60.0, 60.0, 1024)
    got_l, got_r = dark_centroids(out)
    np.testing.assert_allclose(got_l, exp_l - 0.5, atol=0.1)
    np.testing.assert_allclose(got_r, exp_r - 0.5, atol=0.1)


def test_non_rgb_input_is_converted():
    img, lm, _ = synthetic_face()
    out = e4e_align(img.convert("L"), lm)
    assert out.mode == "RGB" and out.size == (256, 256)
    with pytest.raises(TypeError):
        ffhq_align(np.asarray(img), lm)
