"""Photos whose metadata cannot round-trip, and small files that decode huge.

- a JPEG with an ICC profile over 1 MiB: align must not copy it into aligned.png (encode
  could not read it back: PngImagePlugin.MAX_TEXT_CHUNK); every PNG the pipeline writes
  carries no source metadata;
- a PNG with a large zTXt chunk (or iCCP) decodes, it is not `corrupt`;
- a 9999x9999 PNG of a few hundred KB is refused from its header when its decoded size is
  over align.max_decode_bytes, and face detection runs on a bounded copy whatever the size.
"""
from __future__ import annotations

import io as _io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from gani.alignment import BadImageError, load_image
from gani.stages.common import load_png, png_bytes
from gani.stages.demo_data import demo_images

from .test_bad_inputs import _png_chunk


def astronaut() -> Image.Image:
    return Image.open(_io.BytesIO(demo_images()["astronaut.png"])).convert("RGB")


def jpeg_with_big_icc(n: int = PngImagePlugin.MAX_TEXT_CHUNK + 2**18) -> bytes:
    buf = _io.BytesIO()
    icc = b"GANI" + os.urandom(n)          # incompressible: the PNG iCCP stays > the limit
    astronaut().save(buf, "JPEG", quality=90, icc_profile=icc)
    return buf.getvalue()


def png_with_big_text(kind: bytes) -> bytes:
    """astronaut.png with a zTXt (or iCCP) chunk that inflates past MAX_TEXT_CHUNK."""
    data = demo_images()["astronaut.png"]
    blob = zlib.compress(b"A" * (PngImagePlugin.MAX_TEXT_CHUNK + 2**20))
    body = (b"Comment\x00\x00" if kind == b"zTXt" else b"icc\x00\x00") + blob
    ihdr_end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    return data[:ihdr_end] + _png_chunk(kind, body) + data[ihdr_end:]


def test_big_icc_jpeg_aligns_and_reads_back(tmp_path, tiny_settings, reliability):
    from gani.stages import Layout
    from gani.stages.align import align_image
    from gani.stages.plan import plan_items

    data = jpeg_with_big_icc()
    with Image.open(_io.BytesIO(data)) as probe:
        assert len(probe.info["icc_profile"]) > PngImagePlugin.MAX_TEXT_CHUNK
    # the bug: a PNG written with the profile cannot be read back
    leaky = astronaut()
    leaky.info["icc_profile"] = Image.open(_io.BytesIO(data)).info["icc_profile"]
    buf = _io.BytesIO()
    leaky.save(buf, "PNG")
    with pytest.raises(ValueError, match="MAX_TEXT_CHUNK|too large"):
        load_png(buf.getvalue())
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "icc.jpg").write_bytes(data)
    settings = tiny_settings.model_copy(deep=True)
    settings.align.method = "resize"
    layout = Layout(str(tmp_path / "out"))
    item = plan_items(str(photos), settings, layout, {})[0]
    out = align_image(item, layout, settings)
    assert out.state not in ("quarantined", "failed"), out
    aligned = layout.read(item.image_id, "aligned")
    img = load_png(aligned)                                  # reads back
    with Image.open(_io.BytesIO(aligned)) as raw:
        assert "icc_profile" not in raw.info and not raw.text
    assert img.size == (settings.align.width, settings.align.height)
    reliability.add("bad input", "JPEG with a 1.25 MiB ICC profile", images=1, done=1,
                    note="aligned.png carries no profile and reads back")


def test_png_writer_drops_every_source_metadata():
    img = astronaut()
    img.info.update({"icc_profile": b"x" * 100, "exif": b"Exif\x00\x00", "comment": "hi"})
    with Image.open(_io.BytesIO(png_bytes(img))) as back:
        assert not {"icc_profile", "exif", "comment"} & set(back.info)
    assert img.info["comment"] == "hi"                   # the caller's image is untouched
    assert load_image(jpeg_with_big_icc(1000)).info == {}


@pytest.mark.parametrize("kind", [b"zTXt", b"iCCP"])
def test_png_with_a_huge_metadata_chunk_decodes(kind, reliability):
    data = png_with_big_text(kind)
    with pytest.raises(ValueError):                      # what Pillow alone does
        Image.open(_io.BytesIO(data)).load()
    out = load_image(data)
    assert np.array_equal(np.asarray(out), np.asarray(astronaut()))
    reliability.add("bad input", f"PNG with a {kind.decode()} chunk over MAX_TEXT_CHUNK",
                    images=1, done=1, note="decoded (metadata chunk dropped), not corrupt")


def big_png(side: int, mode_depth: tuple[int, int] = (8, 2)) -> bytes:
    """A valid side x side PNG (8-bit RGB by default), built row by row: a few hundred KB."""
    depth, colour = mode_depth
    bands = {0: 1, 2: 3, 6: 4}[colour]
    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * (side * bands * depth // 8)
    parts = [comp.compress(row) for _ in range(side)] + [comp.flush()]
    ihdr = struct.pack(">IIBBBBB", side, side, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def test_small_file_that_decodes_huge_is_refused_from_its_header(monkeypatch, reliability):
    """9999x9999 is under max_pixels (100 M) but 300 MB as RGB; 16-bit RGBA 600 MB: the
    decoded-size estimate refuses what is over align.max_decode_bytes, undecoded."""
    from PIL import ImageFile

    from gani.alignment.imageio import DEFAULT_MAX_DECODE_BYTES

    data = big_png(9999, (16, 6))
    assert len(data) < 2_000_000
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self, *a, **k: decoded.append(self.size))
    with pytest.raises(BadImageError, match="needs ~") as err:
        load_image(data)
    assert err.value.reason == "too_large" and decoded == []
    rgb = big_png(9999)
    with pytest.raises(BadImageError, match="needs ~"):
        load_image(rgb, max_decode_bytes=200 * 2**20)
    assert decoded == []
    # a 48 MP phone photo (8000x6000 RGB, 144 MiB) is within the defaults
    assert 8000 * 6000 * 3 < DEFAULT_MAX_DECODE_BYTES
    reliability.add("bad input", "9999x9999 16-bit RGBA PNG (under max_pixels)", images=1,
                    quarantined=1, note="too_large from the header's decoded size")


def test_face_detection_runs_on_a_bounded_copy(monkeypatch):
    """dlib's detector sees at most DETECT_MAX_SIDE px; the landmarks of a 4x upscaled photo
    match the original's scaled by 4 (predictor on the full image)."""
    pytest.importorskip("dlib")
    from gani.alignment import landmarks

    img = astronaut()
    seen = []
    real = landmarks._frontal_detector

    def spy():
        det = real()
        return lambda arr, up: (seen.append(arr.shape), det(arr, up))[1]

    monkeypatch.setattr(landmarks, "_frontal_detector", spy)
    base = landmarks.choose_face(landmarks.dlib_faces(img))[1]
    assert seen[-1][:2] == (img.height, img.width)              # within bound: as it is
    big = img.resize((img.width * 4, img.height * 4), Image.Resampling.BICUBIC)
    lm = landmarks.choose_face(landmarks.dlib_faces(big))[1]
    assert max(seen[-1][:2]) <= landmarks.DETECT_MAX_SIDE
    assert np.abs(lm / 4 - base).mean() < 3.0, np.abs(lm / 4 - base).mean()


def test_jfif_gif_avif_heic_are_listed_and_accounted_for(tmp_path, tiny_settings, reliability):
    """.jfif (a JPEG) and .gif (first frame) are images; .avif/.heic are listed too and,
    when this Pillow cannot decode them, quarantined `unsupported` with the reason (never
    silently ignored)."""
    from gani import io
    from gani.stages import Layout
    from gani.stages.align import align_image
    from gani.stages.plan import plan_items

    photos = tmp_path / "photos"
    photos.mkdir()
    img = astronaut()
    img.save(photos / "a.jfif", "JPEG", quality=90)
    img.save(photos / "b.gif", "GIF", save_all=True,
             append_images=[img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    heif = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    (photos / "c.heic").write_bytes(heif)
    (photos / "d.avif").write_bytes(heif.replace(b"heic", b"avif"))
    assert [rel for _, rel in io.list_images(str(photos))] == ["a.jfif", "b.gif", "c.heic",
                                                                "d.avif"]
    settings = tiny_settings.model_copy(deep=True)
    settings.align.method = "resize"
    layout = Layout(str(tmp_path / "out"))
    states = {}
    for item in plan_items(str(photos), settings, layout, {}):
        out = align_image(item, layout, settings)
        states[item.rel] = (out.state, out.reason)
    assert states["a.jfif"][0] == "pending" and states["b.gif"][0] == "pending"
    for name in ("c.heic", "d.avif"):
        try:
            Image.open(photos / name)
            decodable = True
        except Exception:  # noqa: BLE001
            decodable = False
        assert states[name] == (("pending", None) if decodable
                                else ("quarantined", "unsupported")), states
    assert load_image((photos / "b.gif").read_bytes()).size == img.size
    reliability.add("bad input", ".jfif / .gif / .heic / .avif", images=4, done=2,
                    quarantined=2, note="jfif+gif aligned; heic/avif quarantined unsupported")
