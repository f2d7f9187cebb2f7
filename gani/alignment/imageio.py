"""Robust image decoding for the pipeline: anything a user drops in a folder -> 8-bit RGB.

`load_image(src)` accepts a path, raw bytes or a binary file object and returns a fully
decoded PIL image in mode "RGB". It

- applies the EXIF orientation tag (phone photos stored sideways come out upright);
- converts every Pillow mode to 8-bit RGB: grayscale ("L", "1"), palette ("P", with or
  without transparency), alpha ("RGBA", "LA", "PA", premultiplied "RGBa"/"La") composited
  on white, "CMYK" (Pillow's plain inversion; ICC profiles are ignored), "YCbCr"/"LAB"/"HSV",
  16-bit ("I;16*", and "I" holding 16-bit data) scaled by 255/65535 with rounding, and
  float "F" (read as [0, 1] when its maximum is ≤ 1, else clipped to [0, 255]); 16-bit RGB
  PNGs are reduced to 8 bits by Pillow itself;
- takes the first frame of animated or multi-page files;
- raises `BadImageError` with a short machine-readable `reason` the pipeline records when it
  quarantines the file:

  ============== ====================================================================
  reason         meaning
  ============== ====================================================================
  empty          zero bytes
  not_an_image   Pillow cannot identify the format (text, HTML, a zip renamed .jpg ...)
  truncated      the file ends before the image data does
  corrupt        the decoder failed for another reason (broken chunks, bad CRC ...)
  too_small      a side is shorter than `min_side` pixels (default 32)
  too_large      more than `max_pixels` pixels (default 100 M) or a decoded size over
                 `max_decode_bytes` (default 384 MiB: width x height x bands x bytes per
                 sample), including decompression bombs: both are read from the header,
                 before anything is decoded
  unsupported    a pixel mode that cannot be turned into RGB
  unreadable     the path cannot be read (missing file, permission)
  ============== ====================================================================

Pillow's global `MAX_IMAGE_PIXELS` and `LOAD_TRUNCATED_IMAGES` are not touched; our own
limit is checked first and Pillow's bomb error is mapped to `too_large` as well.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MIN_SIDE = 32
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_DECODE_BYTES = 384 * 2**20   # 48 MP RGB is 144 MiB; 100 MP RGB 286 MiB

# bytes per sample of a Pillow mode, for the decode estimate (bands: len(getbands()))
_SAMPLE_BYTES = {"I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# PNG chunks that only carry metadata: text (tEXt/zTXt/iTXt) and the ICC profile (iCCP).
# Pillow refuses a text/ICC chunk that inflates beyond PngImagePlugin.MAX_TEXT_CHUNK, which
# made a valid photo `corrupt`; the pipeline needs none of them, so they are dropped before
# decoding (the pixels and eXIf orientation are untouched).
_PNG_METADATA = {b"tEXt", b"zTXt", b"iTXt", b"iCCP"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

REASONS = ("empty", "not_an_image", "truncated", "corrupt", "too_small", "too_large",
           "unsupported", "unreadable")


class BadImageError(ValueError):
    """An input that cannot become a pipeline image; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown BadImageError reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def _read_bytes(src: ImageSource) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        try:
            return Path(src).read_bytes()
        except OSError as exc:
            raise BadImageError("unreadable", f"{src}: {exc.strerror or exc}") from None
    if hasattr(src, "read"):
        return src.read()
    raise TypeError(f"load_image: unsupported source type {type(src).__name__}")


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
          (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1",
                b"avif", b"avis"}


def _sniff_format(data: bytes):
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def strip_png_metadata(data: bytes) -> bytes:
    """A PNG without its text and ICC chunks (`_PNG_METADATA`); other data as it is (also a
    PNG whose chunk structure is broken: the decoder then says why)."""
    if not data.startswith(_PNG_SIGNATURE):
        return data
    out, pos, dropped = [data[:8]], 8, False
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            break
        if kind in _PNG_METADATA:
            dropped = True
        else:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    if not dropped:
        return data
    out.append(data[pos:])
    return b"".join(out)


def decode_estimate(img: Image.Image) -> int:
    """Bytes the decoded pixels take (width x height x bands x bytes per sample), from the
    header alone, plus the 8-bit RGB copy the pipeline makes of it."""
    w, h = img.size
    bands = len(img.getbands())
    per = _SAMPLE_BYTES.get(img.mode, 1)
    return w * h * bands * per + (w * h * 3 if img.mode != "RGB" else 0)


def _is_truncation(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "truncated" in msg or "end of file" in msg or "premature" in msg or (
        isinstance(exc, EOFError))


def _sixteen_to_eight(arr: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(arr.astype(np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)


def _on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_rgb8(img: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image of any mode to 8-bit RGB (rules in the module doc)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _on_white(img)
    if mode == "P":
        if "transparency" in img.info:
            return _on_white(img.convert("RGBA"))
        return img.convert("RGB")
    if mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return img.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img)
        if arr.dtype.kind not in "iu":
            arr = arr.astype(np.int64)
        if mode == "I" and arr.size and arr.max() <= 255 and arr.min() >= 0:
            gray = arr.astype(np.uint8)  # 8-bit data stored in a 32-bit container
        else:
            gray = _sixteen_to_eight(np.clip(arr, 0, 65535))
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        gray = np.clip(np.rint(np.nan_to_num(arr) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise BadImageError("unsupported", f"pixel mode {mode}: {exc}") from None


def load_image(src: ImageSource, *, min_side: int = DEFAULT_MIN_SIDE,
               max_pixels: int = DEFAULT_MAX_PIXELS,
               max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> Image.Image:
    """Decode `src` (path, bytes or binary file) into an upright 8-bit RGB PIL image.

    The pixel count and the decoded size (`decode_estimate`) are checked against
    `max_pixels` and `max_decode_bytes` from the header, before any pixel is decoded. The
    result carries no metadata of the source (no ICC profile, no text, no EXIF: derived
    images must never inherit a chunk that cannot be read back).
    Raises BadImageError(reason) for inputs the pipeline must quarantine.
    """
    data = _read_bytes(src)
    if len(data) == 0:
        raise BadImageError("empty", "0 bytes")
    data = strip_png_metadata(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise BadImageError("too_large", str(exc)) from None
        except UnidentifiedImageError:
            if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
                raise BadImageError("unsupported", f"{data[8:12].decode()} (HEIF/AVIF) "
                                    f"and this Pillow has no decoder for it") from None
            fmt = _sniff_format(data)
            if fmt is not None:  # the right magic number, but Pillow cannot parse the header
                raise BadImageError("corrupt", f"{fmt} signature but unreadable header "
                                               f"({len(data)} bytes)") from None
            raise BadImageError("not_an_image",
                                f"unrecognised format ({len(data)} bytes)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            reason = "truncated" if _is_truncation(exc) else "corrupt"
            raise BadImageError(reason, str(exc)) from None

        w, h = img.size
        if w * h > max_pixels:
            raise BadImageError("too_large", f"{w}x{h} = {w * h} pixels > limit {max_pixels}")
        need = decode_estimate(img)
        if need > max_decode_bytes:
            raise BadImageError("too_large", f"{w}x{h} {img.mode} needs ~{need} bytes decoded "
                                             f"> limit {max_decode_bytes}")
        if min(w, h) < min_side:
            raise BadImageError("too_small", f"{w}x{h}, a side is < {min_side} px")
        try:
            img.load()
        except Image.DecompressionBombError as exc:
            raise BadImageError("too_large", str(exc)) from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            reason = "truncated" if _is_truncation(exc) else "corrupt"
            raise BadImageError(reason, f"{img.format}: {exc}") from None

        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block must not lose the picture
            pass
        out = to_rgb8(img)
    if out is img:
        out = img.copy()  # detach from the decoder / file object
    out.info = {}         # no source metadata travels into derived images
    return out
