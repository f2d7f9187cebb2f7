"""FFHQ face alignment (NVlabs ffhq-dataset `recreate_aligned_images`), reimplemented.

The steps and constants follow docs/protocols.md#ffhq-alignment one for one, so a crop made here
equals the published preprocessing of FFHQ (output 1024, transform 4096) and of e4e / pSp /
PTI / HyperStyle (output 256, transform 256) for the same landmarks:

1. oriented quad from the eye centres (mean of dlib points 36-41 and 42-47) and the mouth
   corners (points 48 and 54);
2. shrink (LANCZOS, the old `ANTIALIAS`) when the quad is more than twice the output size;
3. crop to the quad plus a border;
4. reflect-pad where the quad leaves the image, blur the padded band and fade it to the
   per-channel median;
5. PIL `QUAD` transform (BILINEAR) with the quad shifted by +0.5 px, then a LANCZOS resize to
   the output size when it is smaller than the transform size.

Only the six points above are read from the [68, 2] array; the others may be NaN (see
`landmarks.points_to_landmarks68` for 5-point input).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

try:  # scipy comes with scikit-image; the padding path needs it
    from scipy.ndimage import gaussian_filter as _gaussian_filter
except ImportError:  # pragma: no cover - exercised only on a stack without scipy
    _gaussian_filter = None

FFHQ_OUTPUT_SIZE = 1024
FFHQ_TRANSFORM_SIZE = 4096
E4E_OUTPUT_SIZE = 256
E4E_TRANSFORM_SIZE = 256

# dlib 68-point index groups (x, y in image pixels)
EYE_LEFT = slice(36, 42)    # image-left eye (the subject's right)
EYE_RIGHT = slice(42, 48)   # image-right eye
MOUTH_LEFT = 48
MOUTH_RIGHT = 54


@dataclass(frozen=True)
class FaceQuad:
    """The oriented crop rectangle of step 2, in source-image pixel coordinates.

    quad rows are the corners TL, BL, BR, TR (the order PIL's QUAD transform takes);
    qsize = 2·|x| is the side length.
    """

    quad: np.ndarray          # [4, 2] float64
    qsize: float
    eye_left: np.ndarray
    eye_right: np.ndarray
    mouth_avg: np.ndarray


def _check_landmarks(landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.shape[0] != 68:
        raise ValueError(f"landmarks must be a [68, 2] array in dlib order, got {lm.shape}")
    used = np.concatenate([lm[EYE_LEFT], lm[EYE_RIGHT], lm[[MOUTH_LEFT, MOUTH_RIGHT]]])
    if not np.all(np.isfinite(used)):
        raise ValueError("landmarks 36-48 and 54 (eyes, mouth corners) must be finite")
    return lm


def face_quad(landmarks, rotate_level: bool = True) -> FaceQuad:
    """Step 1-2: the FFHQ crop quad for 68 dlib landmarks.

    rotate_level=False is FFHQ's unrotated variant (x = (1, 0) times the same scale).
    """
    lm = _check_landmarks(landmarks)
    eye_left = lm[EYE_LEFT].mean(axis=0)
    eye_right = lm[EYE_RIGHT].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    # x points along the eye line, corrected by the eye->mouth direction turned by -90°
    if rotate_level:
        x = np.array([eye_to_eye[0] + eye_to_mouth[1], eye_to_eye[1] - eye_to_mouth[0]])
        x = x / np.hypot(x[0], x[1])
    else:
        x = np.array([1.0, 0.0])
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])  # x turned by +90° (image y points down)
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = float(np.hypot(x[0], x[1]) * 2)
    return FaceQuad(quad=quad, qsize=qsize, eye_left=eye_left, eye_right=eye_right,
                    mouth_avg=mouth_avg)


def quad_to_output(points, quad, output_size: int) -> np.ndarray:
    """Where source-image points land in the aligned output (inverse of the QUAD map).

    PIL's QUAD transform maps the output square [0, T]² bilinearly onto the quad (TL→(0,0),
    BL→(0,T), BR→(T,T), TR→(T,0)); the quad here is always a parallelogram, so the map is
    affine and inverts exactly. In PIL's convention pixel i covers [i, i+1); the reference
    passes quad+0.5 so that a landmark given as a pixel index p (dlib's convention) is the
    point p+0.5. Consequently the returned continuous coordinate c corresponds to the output
    pixel index c − 0.5. The result scales with `output_size` (the final LANCZOS resize
    keeps continuous coordinates proportional).
    """
    q = np.asarray(quad, dtype=np.float64)
    p = np.atleast_2d(np.asarray(points, dtype=np.float64))
    a = q[3] - q[0]  # along u (TL -> TR)
    b = q[1] - q[0]  # along v (TL -> BL)
    m = np.stack([a, b], axis=1)  # [2,2], columns a, b
    uv = np.linalg.solve(m, (p - q[0]).T).T
    return uv * output_size


def ffhq_align(img: Image.Image, landmarks, output_size: int = FFHQ_OUTPUT_SIZE,
               transform_size: int = FFHQ_TRANSFORM_SIZE, enable_padding: bool = True,
               rotate_level: bool = True) -> Image.Image:
    """Align a face image the way FFHQ was made (docs/protocols.md#ffhq-alignment).

    img: PIL RGB image; landmarks: float [68, 2] in dlib's order (x, y). Returns a PIL RGB
    image of output_size × output_size. With output_size=transform_size=256 it is e4e's
    `align_face` (see `e4e_align`).
    """
    if not isinstance(img, Image.Image):
        raise TypeError("img must be a PIL.Image")
    if img.mode != "RGB":
        img = img.convert("RGB")
    fq = face_quad(landmarks, rotate_level=rotate_level)
    quad = fq.quad.copy()
    qsize = fq.qsize

    # 3. Shrink.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)),
                 int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    # 4. Crop.
    border = max(int(np.rint(qsize * 0.1)), 3)
    box = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    box = (max(box[0] - border, 0), max(box[1] - border, 0),
           min(box[2] + border, img.size[0]), min(box[3] + border, img.size[1]))
    if box[2] - box[0] < img.size[0] or box[3] - box[1] < img.size[1]:
        img = img.crop(box)
        quad -= box[0:2]

    # 5. Pad.
    ext = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    pad = (max(-ext[0] + border, 0), max(-ext[1] + border, 0),
           max(ext[2] - img.size[0] + border, 0), max(ext[3] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        img, pad = _pad_reflect_blend(img, pad, qsize)
        quad += pad[:2]

    # 6. Transform.
    img = img.transform((transform_size, transform_size), Image.Transform.QUAD,
                        (quad + 0.5).flatten(), Image.Resampling.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return img


def _pad_reflect_blend(img: Image.Image, pad, qsize: float):
    """Step 5 body: reflect pad, blur the band, fade it to the median; float32 like the ref."""
    if _gaussian_filter is None:  # pragma: no cover
        raise ImportError("ffhq_align padding needs scipy (installed with scikit-image)")
    pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
    # plain ints keep the mask float32, as value-based casting did under numpy 1.x
    pl, pt, pr, pb = (int(v) for v in pad)
    arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    h, w, _ = arr.shape
    yy, xx, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(
        1.0 - np.minimum(np.float32(xx) / pl, np.float32(w - 1 - xx) / pr),
        1.0 - np.minimum(np.float32(yy) / pt, np.float32(h - 1 - yy) / pb))
    blur = qsize * 0.02
    arr += (_gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    out = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")
    return out, pad


def e4e_align(img: Image.Image, landmarks, enable_padding: bool = True) -> Image.Image:
    """e4e / pSp / PTI / HyperStyle `align_face`: the same algorithm at 256 (transform 256)."""
    return ffhq_align(img, landmarks, output_size=E4E_OUTPUT_SIZE,
                      transform_size=E4E_TRANSFORM_SIZE, enable_padding=enable_padding)
