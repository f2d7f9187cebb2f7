"""The pictures a person looks at: labelled panels, small images upscaled so they can be
seen, text lines under a figure, and the tuning loss curve (Pillow only, no plotting
library).

Small images (the testbed's 32 px) are upscaled with nearest-neighbour by an integer
factor, so every generated pixel stays visible as a block and nothing is invented; larger
ones are resized with Lanczos as before.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from PIL import Image, ImageDraw

TEXT = (235, 235, 235)
DIM = (150, 150, 150)
LINE_H = 13


def upscale(img: Image.Image, height: int) -> Image.Image:
    """`img` at `height` px: nearest-neighbour by an integer factor when that is at least 2
    (small generator outputs), else Lanczos."""
    if img.height == height:
        return img
    factor = height / img.height
    if factor >= 2 and abs(factor - round(factor)) < 1e-6:
        k = int(round(factor))
        return img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
    w = max(1, int(round(img.width * factor)))
    return img.resize((w, height), Image.Resampling.LANCZOS)


def panel_height(size: int, target: int = 256) -> int:
    """A display height for images of `size` px: an integer multiple of it near `target`."""
    if size >= target:
        return target
    return size * max(1, target // size)


def text_block(lines: Sequence[str], width: int, bg=(0, 0, 0)) -> Image.Image:
    """Lines of text on a strip of `width` px (long lines are wrapped at the width)."""
    chars = max(20, (width - 8) // 6)
    wrapped: list[str] = []
    for line in lines:
        while len(line) > chars:
            cut = line.rfind(" ", 0, chars)
            cut = cut if cut > chars // 2 else chars
            wrapped.append(line[:cut])
            line = "    " + line[cut:].lstrip()
        wrapped.append(line)
    out = Image.new("RGB", (width, LINE_H * len(wrapped) + 6), bg)
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(wrapped):
        draw.text((4, 3 + i * LINE_H), line, fill=TEXT)
    return out


def stack(parts: Sequence[Image.Image], bg=(0, 0, 0)) -> Image.Image:
    """Images one under the other, left-aligned, on the widest's width."""
    width = max(p.width for p in parts)
    out = Image.new("RGB", (width, sum(p.height for p in parts)), bg)
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    return out


def titled(img: Image.Image, title: Sequence[str], footer: Sequence[str] = ()) -> Image.Image:
    """`img` with title lines above and footer lines below."""
    parts = [text_block(title, img.width)] if title else []
    parts.append(img)
    if footer:
        parts.append(text_block(footer, img.width))
    return stack(parts)


def labelled_row(images: Sequence[Image.Image], labels: Sequence[str], height: int,
                 gap: int = 2) -> Image.Image:
    """Panels side by side at `height` px, each with its label on a strip above it."""
    tiles = [upscale(im, height) for im in images]
    strip = LINE_H + 3
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    out = Image.new("RGB", (width, height + strip), (0, 0, 0))
    draw = ImageDraw.Draw(out)
    x = 0
    for tile, label in zip(tiles, labels):
        out.paste(tile, (x, strip))
        draw.text((x + 3, 2), label[: max(4, tile.width // 6)], fill=TEXT)
        x += tile.width + gap
    return out


def loss_curve(curve: Sequence[float], title: str, parts: Optional[dict] = None,
               steps: Optional[int] = None, size: tuple[int, int] = (480, 300)) -> Image.Image:
    """The tuning loss per step (log scale when it spans more than a factor 3), with the
    loss terms of `parts` as dimmer lines, axes labelled."""
    W, H = size
    left, right, top, bottom = 58, 12, 34, 34
    out = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((8, 6), title[: (W - 16) // 6], fill=(0, 0, 0))
    series = {"loss": [float(v) for v in curve]}
    for k, vs in (parts or {}).items():
        if vs and len(vs) == len(curve) and k != "loss":
            series[k] = [float(v) for v in vs]
    finite = [v for vs in series.values() for v in vs if math.isfinite(v) and v > 0]
    if not curve or not finite:
        draw.text((left, H // 2), "no loss recorded (no tuning steps)", fill=(0, 0, 0))
        return out
    lo, hi = min(finite), max(finite)
    log = hi / lo > 3
    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    a, b = f(lo), f(hi)
    if b - a < 1e-12:
        a, b = a - 0.5, b + 0.5
    n = len(curve)
    x_of = lambda i: left + (W - left - right) * (i / max(1, n - 1))  # noqa: E731
    y_of = lambda v: top + (H - top - bottom) * (1 - (f(v) - a) / (b - a))  # noqa: E731
    draw.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for v, label in ((lo, f"{lo:.3g}"), (hi, f"{hi:.3g}")):
        draw.text((4, y_of(v) - 6), label, fill=(0, 0, 0))
    draw.text((left, H - bottom + 4), "0", fill=(0, 0, 0))
    steps = n - 1 if steps is None else steps
    draw.text((W - right - 40, H - bottom + 4), f"{steps}", fill=(0, 0, 0))
    draw.text((left + 60, H - bottom + 16), f"step{' (log-scale loss)' if log else ''}",
              fill=(0, 0, 0))
    colours = [(200, 30, 30), (40, 90, 200), (30, 150, 60), (150, 90, 20), (120, 40, 160)]
    for k, (name, vs) in enumerate(series.items()):
        pts = [(x_of(i), y_of(v)) for i, v in enumerate(vs) if math.isfinite(v) and v > 0]
        col = colours[k % len(colours)]
        if len(pts) > 1:
            draw.line(pts, fill=col, width=2 if name == "loss" else 1)
        draw.text((W - right - 110, top + 4 + 12 * k), name, fill=col)
    return out
