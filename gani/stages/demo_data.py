"""The bundled demo dataset, materialised deterministically from scikit-image's photos.

No download: scikit-image's wheel ships real photos. The demo set mixes what a night sees:

    astronaut.png           a real face photo (scikit-image's `astronaut`), bytes as shipped
    astronaut_mirrored.jpg  generated: the same photo mirrored, saved as JPEG
    astronaut_tilted.png    generated: rotated 12° (alignment has to level the eyes)
    chelsea.png             a real cat photo: no face for the face detector -> quarantined
    broken.jpg              generated: a JPEG cut short -> quarantined as truncated

Running it twice writes identical bytes (same Pillow/zlib/libjpeg versions).
"""
from __future__ import annotations

import io as _io
from pathlib import Path

from PIL import Image, ImageOps

from gani import io

DEMO_FILES = ("astronaut.png", "astronaut_mirrored.jpg", "astronaut_tilted.png",
              "broken.jpg", "chelsea.png")


def _skimage_file(name: str) -> Path:
    import skimage.data

    path = Path(skimage.data.__file__).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"scikit-image does not ship {name} (looked in {path.parent})")
    return path


def demo_images() -> dict[str, bytes]:
    """{file name: bytes} of the demo dataset."""
    astronaut = _skimage_file("astronaut.png").read_bytes()
    chelsea = _skimage_file("chelsea.png").read_bytes()
    img = Image.open(_io.BytesIO(astronaut)).convert("RGB")

    buf = _io.BytesIO()
    ImageOps.mirror(img).save(buf, format="JPEG", quality=92)
    mirrored = buf.getvalue()

    buf = _io.BytesIO()
    img.rotate(12, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128)).save(
        buf, format="PNG", optimize=False, compress_level=6)
    tilted = buf.getvalue()

    broken = mirrored[: len(mirrored) // 3]
    return {"astronaut.png": astronaut, "astronaut_mirrored.jpg": mirrored,
            "astronaut_tilted.png": tilted, "broken.jpg": broken, "chelsea.png": chelsea}


def materialize(dest: str, limit: int | None = None) -> list[str]:
    """Write the demo dataset under `dest` (folder or URI); returns the URIs written.

    Files already holding the same bytes are left untouched (so mtimes stay stable).
    `limit` keeps only the first n files (sorted by name), for tiny test datasets.
    """
    files = demo_images()
    names = sorted(files)[:limit] if limit else sorted(files)
    out = []
    for name in names:
        uri = io.join(dest, name)
        data = files[name]
        try:
            same = io.exists(uri) and io.read_bytes(uri) == data
        except OSError:
            same = False
        if not same:
            io.write_bytes(uri, data)
        out.append(uri)
    return out
