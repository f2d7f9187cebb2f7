"""Per-domain input preparation (docs/protocols.md#domain-preparation).

- faces (``ffhq``): FFHQ alignment from 68 landmarks; by default e4e's variant
  (output 256, transform 256), the crop e4e / PTI / HyperStyle feed their encoders.
- ``cars``: plain resize to 192 × 256 (H × W), PIL bilinear, like e4e's
  `Resize((192, 256))`. The car generator draws 512 × 512 with the car in rows 64:448
  (a 384 × 512 band, aspect 3:4, black bars above and below); a reconstruction is compared
  with the input after `crop_generated(img, "cars")` keeps that band (rows 32:224 after pSp's
  256 pool) — see `generated_content_box`.
- ``church``, ``horse``, ``afhq_wild``: plain resize to 256 × 256.
- ``demo``: plain resize to 256 × 256 unless the caller asks for face alignment.

`prepare_image` works on an already decoded RGB image (see `imageio.load_image`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from PIL import Image

from .ffhq import ffhq_align
from .landmarks import detect_landmarks


@dataclass(frozen=True)
class DomainPrep:
    method: str                 # "ffhq" (landmark alignment) or "resize"
    height: int
    width: int
    content_rows: Optional[tuple[float, float]] = None  # generator rows holding content


DOMAIN_PREP: dict[str, DomainPrep] = {
    "ffhq": DomainPrep("ffhq", 256, 256),
    "afhq_wild": DomainPrep("resize", 256, 256),
    "cars": DomainPrep("resize", 192, 256, content_rows=(64 / 512, 448 / 512)),
    "church": DomainPrep("resize", 256, 256),
    "horse": DomainPrep("resize", 256, 256),
    "demo": DomainPrep("resize", 256, 256),
}


def domain_prep(domain: str) -> DomainPrep:
    try:
        return DOMAIN_PREP[domain]
    except KeyError:
        raise ValueError(f"unknown domain {domain!r}; known: {sorted(DOMAIN_PREP)}") from None


def prepare_image(img: Image.Image, domain: str, *, method: Optional[str] = None,
                  height: Optional[int] = None, width: Optional[int] = None,
                  landmarks: Optional[np.ndarray] = None, detector: str = "dlib",
                  output_size: int = 256, transform_size: int = 256,
                  enable_padding: bool = True, **detector_options: Any) -> Image.Image:
    """The image the encoder sees for `domain` (RGB PIL).

    method overrides the domain's default ("ffhq" | "resize"). For "ffhq", landmarks are
    taken from `landmarks` if given, else from `detect_landmarks(img, detector,
    **detector_options)` (which may raise NoFaceError & co.).
    """
    spec = domain_prep(domain)
    method = method or spec.method
    if img.mode != "RGB":
        img = img.convert("RGB")
    if method == "ffhq":
        if landmarks is None:
            landmarks = detect_landmarks(img, detector, **detector_options)
        return ffhq_align(img, landmarks, output_size=output_size,
                          transform_size=transform_size, enable_padding=enable_padding)
    if method == "resize":
        h = height or spec.height
        w = width or spec.width
        if img.size == (w, h):
            return img.copy()
        return img.resize((w, h), Image.Resampling.BILINEAR)
    raise ValueError(f"unknown preparation method {method!r} (ffhq | resize)")


def generated_content_box(domain: str, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the generator output that holds content.

    Cars: rows 64:448 of 512 (scaled to the actual size, e.g. 32:224 at 256, 8:56 at 64);
    everything else: the whole image.
    """
    spec = domain_prep(domain)
    if spec.content_rows is None:
        return 0, height, 0, width
    top = int(round(spec.content_rows[0] * height))
    bottom = int(round(spec.content_rows[1] * height))
    return top, bottom, 0, width


def crop_generated(img, domain: str):
    """Crop a generator output (PIL image or tensor [..., H, W]) to its content area."""
    if isinstance(img, Image.Image):
        w, h = img.size
        top, bottom, left, right = generated_content_box(domain, h, w)
        if (top, bottom, left, right) == (0, h, 0, w):
            return img
        return img.crop((left, top, right, bottom))
    h, w = img.shape[-2], img.shape[-1]
    top, bottom, left, right = generated_content_box(domain, h, w)
    return img[..., top:bottom, left:right]
