"""A seeded procedural distribution of stylised faces, with ground-truth attribute labels.

Every image is a pure function of (seed, split, index): the parameters are drawn from
``numpy.random.default_rng([seed, split_id, index])`` and the face is drawn with Pillow at
``supersample × size`` pixels, lit with numpy and downsampled with Lanczos (antialiasing).

Attributes (all continuous; the label dict holds exactly these keys, see ``ATTRIBUTES``):

=============== ========= ==================================================================
name            range     what it draws
=============== ========= ==================================================================
smile           [-1, 1]   mouth curvature: > 0 corners up (centre lower), < 0 a frown
yaw             [-1, 1]   pose: the features (eyes, nose, mouth, fringe) shift sideways
                          more than the head outline, the far eye is foreshortened
gaze            [-1, 1]   pupil offset inside the eye (left … right)
eye_size        [0, 1]    eye opening (height of the eye white)
hair_hue        [0, 1]    hair hue, mapped to HSV hue 0 … 0.7 (red → yellow → green → blue)
hair_lightness  [0, 1]    hair HSV value 0.15 … 0.95
hair_length     [0, 1]    how far the hair falls down the sides of the head
skin_tone       [0, 1]    light → dark skin (linear RGB blend)
head_width      [0, 1]    head ellipse width (narrow … wide)
bg_hue          [0, 1]    background hue, mapped to HSV hue 0 … 0.8
lighting        [-1, 1]   horizontal light gradient (left lit … right lit), whole image
=============== ========= ==================================================================

Splits: ``train`` and ``test`` draw from the same *training range* (``TRAIN_RANGE``: smile and
yaw within ±0.6, everything else its full range) with different RNG streams; ``shifted`` draws
smile and/or yaw with magnitude in [0.75, 1.0] (outside the training range), the rest as in
training. The streams differ by ``split_id`` so the splits never share a parameter draw.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

ATTRIBUTES: tuple[str, ...] = (
    "smile", "yaw", "gaze", "eye_size", "hair_hue", "hair_lightness", "hair_length",
    "skin_tone", "head_width", "bg_hue", "lighting",
)
FULL_RANGE: dict[str, tuple[float, float]] = {
    "smile": (-1.0, 1.0), "yaw": (-1.0, 1.0), "gaze": (-1.0, 1.0), "eye_size": (0.0, 1.0),
    "hair_hue": (0.0, 1.0), "hair_lightness": (0.0, 1.0), "hair_length": (0.0, 1.0),
    "skin_tone": (0.0, 1.0), "head_width": (0.0, 1.0), "bg_hue": (0.0, 1.0),
    "lighting": (-1.0, 1.0),
}
TRAIN_RANGE: dict[str, tuple[float, float]] = dict(FULL_RANGE, smile=(-0.6, 0.6), yaw=(-0.6, 0.6))
SHIFT_MIN = 0.75                       # |smile| or |yaw| ≥ this in the shifted split
SHIFTED_ATTRIBUTES = ("smile", "yaw")
SPLITS = {"train": 0, "test": 1, "shifted": 2}

_LIGHT_SKIN = np.array([0.96, 0.82, 0.70])
_DARK_SKIN = np.array([0.36, 0.22, 0.14])


def sample_attributes(seed: int, split: str, index: int) -> dict[str, float]:
    """The attribute values of image ``index`` of ``split`` (deterministic)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    rng = np.random.default_rng([int(seed), SPLITS[split], int(index)])
    attrs = {k: float(rng.uniform(*TRAIN_RANGE[k])) for k in ATTRIBUTES}
    if split == "shifted":
        # which of smile / yaw leave the training range: one or both, sign random
        which = int(rng.integers(0, 3))       # 0: smile, 1: yaw, 2: both
        for j, name in enumerate(SHIFTED_ATTRIBUTES):
            if which == 2 or which == j:
                mag = float(rng.uniform(SHIFT_MIN, 1.0))
                attrs[name] = mag if rng.random() < 0.5 else -mag
    return attrs


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


@dataclass(frozen=True)
class Geometry:
    """Where things are drawn, in units of the render size R (for tests and debugging)."""
    head_cx: float
    head_cy: float
    head_rx: float
    head_ry: float
    feat_cx: float
    eye_y: float
    eye_dx_left: float
    eye_dx_right: float
    mouth_y: float
    mouth_hw: float
    smile_depth: float


def face_geometry(a: dict[str, float]) -> Geometry:
    yaw = a["yaw"]
    head_cx = 0.5 + 0.03 * yaw
    feat_cx = 0.5 + 0.13 * yaw
    # far eye (the one the face turns away from) foreshortened
    near, far = 0.105 * (1 - 0.1 * abs(yaw)), 0.105 * (1 - 0.35 * abs(yaw))
    left, right = (far, near) if yaw < 0 else (near, far)
    return Geometry(head_cx=head_cx, head_cy=0.54, head_rx=0.24 + 0.07 * a["head_width"],
                    head_ry=0.31, feat_cx=feat_cx, eye_y=0.5, eye_dx_left=left,
                    eye_dx_right=right, mouth_y=0.70, mouth_hw=0.095,
                    smile_depth=0.055 * a["smile"])


def render_face(attrs: dict[str, float], size: int = 64, supersample: int = 4) -> np.ndarray:
    """Draw one face; returns uint8 [size, size, 3]."""
    a = {k: float(attrs[k]) for k in ATTRIBUTES}
    R = int(size * supersample)
    g = face_geometry(a)
    P = lambda v: v * R  # noqa: E731  (units → pixels)

    bg = _hsv(0.8 * a["bg_hue"], 0.45, 0.8)
    skin_rgb = _LIGHT_SKIN + (_DARK_SKIN - _LIGHT_SKIN) * a["skin_tone"]
    skin = tuple(int(round(c * 255)) for c in skin_rgb)
    shade = tuple(int(round(c * 255 * 0.78)) for c in skin_rgb)
    hair = _hsv(0.7 * a["hair_hue"], 0.75, 0.15 + 0.8 * a["hair_lightness"])

    img = Image.new("RGB", (R, R), bg)
    d = ImageDraw.Draw(img)
    cx, cy, rx, ry = P(g.head_cx), P(g.head_cy), P(g.head_rx), P(g.head_ry)

    # hair behind the head: a larger ellipse, and side curtains whose length is hair_length
    hx, hy = rx + P(0.045), ry + P(0.04)
    d.ellipse([cx - hx, cy - hy - P(0.02), cx + hx, cy + hy * 0.2], fill=hair)
    if a["hair_length"] > 0.02:
        bottom = cy - P(0.05) + P(0.42) * a["hair_length"]
        d.rectangle([cx - hx, cy - P(0.1), cx + hx, bottom], fill=hair)
        d.ellipse([cx - hx, bottom - P(0.06), cx + hx, bottom + P(0.06)], fill=hair)
    # neck, head
    d.rectangle([cx - rx * 0.45, cy + ry * 0.6, cx + rx * 0.45, R], fill=shade)
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
    # fringe: the cap of the hair ellipse above a chord, its parting follows the yaw
    fx = P(g.feat_cx)
    d.chord([cx - hx, cy - hy - P(0.02), cx + hx, cy + hy], start=198, end=342, fill=hair)
    d.polygon([(fx - P(0.02), cy - ry + P(0.01)), (fx + P(0.02), cy - ry + P(0.01)),
               (fx, cy - ry + P(0.11))], fill=hair)

    # eyes
    ey = P(g.eye_y)
    eh = P(0.018 + 0.022 * a["eye_size"])
    for dx in (-g.eye_dx_left, g.eye_dx_right):
        ex = fx + P(dx)
        ew = P(0.05) * (g.eye_dx_left if dx < 0 else g.eye_dx_right) / 0.105
        d.ellipse([ex - ew, ey - eh, ex + ew, ey + eh], fill=(250, 250, 250))
        px = ex + a["gaze"] * 0.55 * ew
        pr = min(P(0.022), eh * 1.05)
        d.ellipse([px - pr, ey - pr, px + pr, ey + pr], fill=(25, 20, 30))
    # nose
    nx = fx + P(0.02) * a["yaw"]
    d.polygon([(nx, P(0.53)), (nx - P(0.025), P(0.62)), (nx + P(0.025), P(0.62))], fill=shade)
    # mouth: y(t) = mouth_y + smile_depth·(1 − t²), t ∈ [−1, 1]; smile > 0 → centre lower
    my, mhw, depth = P(g.mouth_y), P(g.mouth_hw), P(g.smile_depth)
    pts = [(fx + mhw * t, my + depth * (1 - t * t)) for t in np.linspace(-1, 1, 25)]
    d.line(pts, fill=(150, 30, 40), width=max(1, int(round(P(0.028)))), joint="curve")

    # lighting: a horizontal multiplicative gradient over the whole image
    arr = np.asarray(img, dtype=np.float32) / 255.0
    x = (np.arange(R, dtype=np.float32) + 0.5) / R * 2 - 1
    gain = 1.0 + 0.35 * a["lighting"] * (-x)          # lighting > 0: the left side is lit
    arr = np.clip(arr * gain[None, :, None], 0, 1)
    out = Image.fromarray((arr * 255 + 0.5).astype(np.uint8))
    if R != size:
        out = out.resize((size, size), Image.LANCZOS)
    return np.asarray(out, dtype=np.uint8)


def make_face(seed: int, split: str, index: int, size: int = 64,
              supersample: int = 4) -> tuple[np.ndarray, dict[str, float]]:
    """(uint8 image [size, size, 3], attribute dict) for (seed, split, index)."""
    attrs = sample_attributes(seed, split, index)
    return render_face(attrs, size=size, supersample=supersample), attrs


def labels_vector(attrs: dict[str, float], names: Sequence[str] = ATTRIBUTES) -> np.ndarray:
    return np.array([attrs[k] for k in names], dtype=np.float32)


def render_split(seed: int, split: str, n: int, size: int = 32, start: int = 0,
                 supersample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """n images of a split as uint8 [n, size, size, 3] and labels float32 [n, len(ATTRIBUTES)]."""
    imgs = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n, len(ATTRIBUTES)), np.float32)
    for i in range(n):
        img, attrs = make_face(seed, split, start + i, size, supersample)
        imgs[i] = img
        labels[i] = labels_vector(attrs)
    return imgs, labels


def to_tensor(imgs: np.ndarray):
    """uint8 [n, H, W, 3] → float32 torch [n, 3, H, W] in [−1, 1]."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x) -> np.ndarray:
    """torch [n, 3, H, W] in [−1, 1] → uint8 [n, H, W, 3]."""
    return ((x.detach().cpu().clamp(-1, 1) + 1) * 127.5 + 0.5).to(
        dtype=__import__("torch").uint8).permute(0, 2, 3, 1).numpy()


class ProceduralFaces:
    """torch-style Dataset over one split: item i → (image [3, H, W] in [−1, 1], labels)."""

    def __init__(self, split: str = "train", n: int = 10_000, size: int = 32, seed: int = 0,
                 cache: bool = True, supersample: int = 4):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}")
        self.split, self.n, self.size, self.seed = split, int(n), int(size), int(seed)
        self.supersample = supersample
        self._imgs: Optional[np.ndarray] = None
        self._labels: Optional[np.ndarray] = None
        if cache:
            self._imgs, self._labels = render_split(seed, split, n, size, supersample=supersample)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch
        if not 0 <= i < self.n:
            raise IndexError(i)
        if self._imgs is not None:
            img, lab = self._imgs[i], self._labels[i]
        else:
            img, attrs = make_face(self.seed, self.split, i, self.size, self.supersample)
            lab = labels_vector(attrs)
        return to_tensor(img[None])[0], torch.from_numpy(np.asarray(lab))

    def tensors(self):
        """All images [n, 3, H, W] in [−1, 1] and labels [n, A] (renders if not cached)."""
        import torch
        if self._imgs is None:
            self._imgs, self._labels = render_split(self.seed, self.split, self.n, self.size,
                                                    supersample=self.supersample)
        return to_tensor(self._imgs), torch.from_numpy(self._labels)


def batch_iterator(images, batch_size: int, generator=None) -> Iterator:
    """Endless random batches (with reshuffling each epoch) from a tensor [n, ...]."""
    import torch
    n = images.shape[0]
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield images[perm[i:i + batch_size]]


def save_grid(imgs: np.ndarray, path, ncol: int = 8, scale: int = 1) -> None:
    """uint8 [n, H, W, 3] → one PNG grid (1-px gaps)."""
    n, h, w, _ = imgs.shape
    ncol = min(ncol, n)
    nrow = math.ceil(n / ncol)
    grid = np.full((nrow * (h + 1) + 1, ncol * (w + 1) + 1, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = imgs[i]
    im = Image.fromarray(grid)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    im.save(path)
