"""The bundled demo datasets, materialised deterministically (no download).

`testbed_demo_images()`, what `gani demo` and `dvc repro` run on (the demo profile, the
trained testbed of gani/testbed):

    face_test_<i>.png     held-out procedural faces (split `test`, seed 0), 32 px, drawn
                          at run time by gani.testbed.faces: the distribution the testbed
                          generator was trained on, labels known (`demo_labels`)
    face_shifted_<i>.png  faces of the `shifted` split: smile and/or yaw outside the
                          training range (labels known)
    astronaut.png         a real photo (scikit-image's `astronaut`, bytes as shipped): the
                          domain gap, shown honestly
    broken.jpg            a JPEG cut short -> quarantined (truncated)
    notes.png             text saved under an image name -> quarantined (not an image)

`demo_images()`, the photo set the random-network profile (`demo_random`) and the tests use:

    astronaut.png           a real face photo (scikit-image's `astronaut`), bytes as shipped
    astronaut_mirrored.jpg  generated: the same photo mirrored, saved as JPEG
    astronaut_tilted.png    generated: rotated 12° (alignment has to level the eyes)
    chelsea.png             a real cat photo: no face for the face detector -> quarantined
    broken.jpg              generated: a JPEG cut short -> quarantined as truncated

Running either twice writes identical bytes (same Pillow/zlib/libjpeg versions).
"""
from __future__ import annotations

import io as _io
from pathlib import Path

from PIL import Image, ImageOps

from gani import io

DEMO_FILES = ("astronaut.png", "astronaut_mirrored.jpg", "astronaut_tilted.png",
              "broken.jpg", "chelsea.png")
# (split, index) of the procedural faces of the testbed demo, and their size / seed
DEMO_FACES = (("test", 0), ("test", 1), ("test", 2), ("shifted", 0), ("shifted", 1))
FACE_SIZE = 32
FACE_SEED = 0
NOT_AN_IMAGE = b"These are notes, not a picture: the pipeline quarantines this file.\n"


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


def _png(arr) -> bytes:
    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def face_name(split: str, index: int) -> str:
    return f"face_{split}_{index}.png"


def demo_labels() -> dict[str, dict[str, float]]:
    """{file name: the procedural face's true attribute labels} of the testbed demo."""
    from gani.testbed.faces import sample_attributes

    return {face_name(sp, i): sample_attributes(FACE_SEED, sp, i) for sp, i in DEMO_FACES}


def testbed_demo_images() -> dict[str, bytes]:
    """{file name: bytes} of the testbed demo dataset (the module doc)."""
    from gani.testbed.faces import make_face

    files = {face_name(sp, i): _png(make_face(FACE_SEED, sp, i, size=FACE_SIZE)[0])
             for sp, i in DEMO_FACES}
    files["astronaut.png"] = _skimage_file("astronaut.png").read_bytes()
    photos = demo_images()
    files["broken.jpg"] = photos["broken.jpg"]
    files["notes.png"] = NOT_AN_IMAGE
    return files


DATASETS = {"testbed": testbed_demo_images, "photos": demo_images}


def materialize(dest: str, limit: int | None = None, kind: str = "testbed") -> list[str]:
    """Write a demo dataset (`kind`: testbed | photos) under `dest` (folder or URI);
    returns the URIs written.

    Files already holding the same bytes are left untouched (so mtimes stay stable).
    `limit` keeps only the first n files (sorted by name), for tiny test datasets.
    """
    files = DATASETS[kind]()
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
