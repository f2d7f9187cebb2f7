"""load_image: conversions of odd-but-valid files, specific reasons for bad ones."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gani.alignment import BadImageError, crop_generated, generated_content_box, load_image
from gani.alignment import prepare_image


def png_bytes(width, height, bit_depth, color_type, raw: bytes, idat=None) -> bytes:
    """A PNG written by hand (so 16-bit RGB and lying headers are possible)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = zlib.compress(raw) if idat is None else idat
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, format=fmt, **kw)
    return b.getvalue()


def noise_rgb(w=64, h=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def reason_of(src, **kw):
    with pytest.raises(BadImageError) as ei:
        load_image(src, **kw)
    return ei.value.reason


def test_bad_inputs_have_specific_reasons(tmp_path):
    assert reason_of(b"") == "empty"
    png = encoded(noise_rgb(128, 128), "PNG")
    jpg = encoded(noise_rgb(128, 128), "JPEG", quality=90)
    assert reason_of(png[: len(png) // 2]) == "truncated"
    assert reason_of(jpg[: len(jpg) // 2]) == "truncated"
    txt = tmp_path / "holiday.jpg"
    txt.write_text("this is not a picture\n")
    assert reason_of(txt) == "not_an_image"
    assert reason_of(encoded(Image.new("RGB", (1, 1)), "PNG")) == "too_small"
    assert reason_of(encoded(Image.new("RGB", (500, 20)), "PNG")) == "too_small"
    assert reason_of(tmp_path / "missing.png") == "unreadable"
    # a broken chunk CRC is corruption, not truncation
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # inside the IHDR CRC
    assert reason_of(bytes(bad_crc)) == "corrupt"


def test_decompression_bomb_rejected_from_header():
    # 100 000 x 100 000 declared, a few bytes of data: refused before decoding
    bomb = png_bytes(100_000, 100_000, 1, 0, b"", idat=zlib.compress(b"\x00" * 64))
    assert reason_of(bomb) == "too_large"
    # and our own (configurable) limit, below Pillow's
    assert reason_of(encoded(noise_rgb(200, 200), "PNG"), max_pixels=10_000) == "too_large"
    assert load_image(encoded(noise_rgb(200, 200), "PNG"), max_pixels=40_000).size == (200, 200)


def test_reason_codes_are_stable():
    e = BadImageError("too_small", "2x2")
    assert e.reason == "too_small" and "2x2" in str(e)
    with pytest.raises(ValueError):
        BadImageError("nonsense")


def test_plain_rgb_from_path_bytes_and_file(tmp_path):
    img = noise_rgb()
    p = tmp_path / "a.png"
    img.save(p)
    for src in (p, str(p), p.read_bytes(), io.BytesIO(p.read_bytes())):
        out = load_image(src)
        assert out.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(out), np.asarray(img))


def test_exif_orientation_applied():
    yy, xx = np.mgrid[:40, :80]
    img = Image.fromarray(np.stack([xx * 3, yy * 6, np.full_like(xx, 90)], -1).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW to display
    data = encoded(img, "JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(data)
    assert out.size == (40, 80)
    ref = img.transpose(Image.Transpose.ROTATE_270)
    diff = np.abs(np.asarray(out).astype(int) - np.asarray(ref).astype(int)).mean()
    assert diff < 4  # same picture (JPEG noise aside), upright


def test_grayscale_palette_and_alpha():
    g = Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8), "L")
    out = load_image(encoded(g, "PNG"))
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out)[..., 1], np.asarray(g))

    pal = noise_rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = load_image(encoded(pal, "PNG"))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(pal.convert("RGB")))

    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))       # fully transparent -> white
    rgba.putpixel((1, 0), (0, 0, 0, 128))       # half black on white -> mid grey
    out = np.asarray(load_image(encoded(rgba, "PNG")))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 2]) == (255, 0, 0)
    assert abs(int(out[0, 1, 0]) - 127) <= 1

    la = Image.new("LA", (40, 40), (0, 0))
    assert tuple(np.asarray(load_image(encoded(la, "PNG")))[3, 3]) == (255, 255, 255)

    ptr = Image.new("P", (40, 40), 0)
    ptr.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    ptr.putpixel((5, 5), 1)
    data = encoded(ptr, "PNG", transparency=0)
    out = np.asarray(load_image(data))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[5, 5]) == (200, 100, 50)


def test_cmyk_and_sixteen_bit():
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # red
    out = np.asarray(load_image(encoded(cmyk, "JPEG", quality=95)))
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60

    g16 = np.zeros((40, 40), dtype=np.uint16)
    g16[0, 0], g16[0, 1], g16[0, 2] = 65535, 32896, 257
    out = np.asarray(load_image(encoded(Image.fromarray(g16), "PNG")))
    assert out.dtype == np.uint8 and out.shape == (40, 40, 3)
    assert tuple(out[0, :3, 0]) == (255, 128, 1)

    # 16-bit RGB PNG (colour type 2, depth 16), written by hand
    w = h = 40
    px = np.zeros((h, w, 3), dtype=">u2")
    px[..., 0] = 65535
    px[..., 2] = 32768
    raw = b"".join(b"\x00" + px[y].tobytes() for y in range(h))
    out = np.asarray(load_image(png_bytes(w, h, 16, 2, raw)))
    assert out.dtype == np.uint8 and tuple(out[0, 0]) == (255, 0, 128)

    f = Image.fromarray(np.full((40, 40), 0.5, dtype=np.float32), "F")
    assert np.asarray(load_image(encoded(f, "TIFF")))[0, 0, 0] == 128


def test_first_frame_of_animation():
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 255, 0))]
    b = io.BytesIO()
    frames[0].save(b, format="GIF", save_all=True, append_images=frames[1:])
    out = np.asarray(load_image(b.getvalue()))
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 50


def test_prepare_other_domains():
    img = noise_rgb(300, 200)
    car = prepare_image(img, "cars")
    assert car.size == (256, 192)  # W x H
    np.testing.assert_array_equal(np.asarray(car),
                                  np.asarray(img.resize((256, 192), Image.Resampling.BILINEAR)))
    for d in ("church", "horse", "afhq_wild", "demo"):
        assert prepare_image(img, d).size == (256, 256)
    assert prepare_image(img, "church", height=64, width=64).size == (64, 64)
    with pytest.raises(ValueError):
        prepare_image(img, "bicycles")
    assert generated_content_box("cars", 512, 512) == (64, 448, 0, 512)
    assert generated_content_box("cars", 256, 256) == (32, 224, 0, 256)
    assert generated_content_box("church", 256, 256) == (0, 256, 0, 256)
    import torch
    t = torch.zeros(1, 3, 64, 64)
    assert crop_generated(t, "cars").shape == (1, 3, 48, 64)
    assert crop_generated(Image.new("RGB", (512, 512)), "cars").size == (512, 384)
