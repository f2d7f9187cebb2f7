"""Helpers shared by the stage functions: encode/decode images and tensors, outcomes."""
from __future__ import annotations

import io as _io
from typing import Optional

import numpy as np
import torch
from PIL import Image

from .layout import STAGES, Layout
from .plan import ImageItem


class StageError(RuntimeError):
    """A stage cannot run for this image (missing upstream output, stale upstream)."""


def png_bytes(img: Image.Image) -> bytes:
    """`img` as a PNG without any metadata (no ICC profile, text or EXIF of a source: what
    the pipeline writes must read back whatever the input carried)."""
    if img.info:
        img = img.copy()
        img.info = {}
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tensor_bytes(t: torch.Tensor) -> bytes:
    buf = _io.BytesIO()
    torch.save(t.detach().to("cpu").contiguous().clone(), buf)
    return buf.getvalue()


def load_tensor(data: bytes) -> torch.Tensor:
    return torch.load(_io.BytesIO(data), map_location="cpu", weights_only=True)


def load_png(data: bytes) -> Image.Image:
    img = Image.open(_io.BytesIO(data))
    img.load()
    return img.convert("RGB")


def image_to_tensor(img: Image.Image, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """PIL RGB -> float32 [1, 3, H, W] in [-1, 1] (optionally resized to (H, W), bilinear)."""
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).unsqueeze(0)


def side_by_side(images: list[Image.Image], labels: list[str], height: int = 256) -> Image.Image:
    """Images scaled to one height, left to right, with a label strip on top."""
    from PIL import ImageDraw

    tiles = []
    for im in images:
        w = max(1, int(round(im.width * height / im.height)))
        tiles.append(im.resize((w, height), Image.Resampling.LANCZOS) if im.height != height
                     else im)
    strip = 14
    out = Image.new("RGB", (sum(t.width for t in tiles), height + strip), (0, 0, 0))
    draw = ImageDraw.Draw(out)
    x = 0
    for tile, label in zip(tiles, labels):
        out.paste(tile, (x, strip))
        draw.text((x + 3, 1), label, fill=(255, 255, 255))
        x += tile.width
    return out


def fresh(layout: Layout, item: ImageItem, stage: str) -> Optional[dict]:
    """The stage's marker if it was already run with this item's key, else None."""
    marker = layout.read_marker(item.image_id, stage)
    if marker and marker.get("key") == item.stage_keys[stage] and marker.get("state") in (
            "done", "quarantined"):
        return marker
    return None


def upstream(layout: Layout, item: ImageItem, stage: str) -> Optional[dict]:
    """Check the previous stage ran for this key. Returns its marker; raises StageError
    when it is missing or stale. A marker in state quarantined/failed is returned as is
    (the caller propagates it)."""
    prev = STAGES[STAGES.index(stage) - 1]
    if stage == "evaluate":
        prev = "edit"
    marker = layout.read_marker(item.image_id, prev)
    if not marker or marker.get("key") != item.stage_keys[prev]:
        raise StageError(f"{item.image_id}: stage {prev!r} has not run for the current "
                         f"inputs and parameters; run it before {stage!r}")
    return marker


def mark(layout: Layout, item: ImageItem, stage: str, state: str = "done",
         reason: Optional[str] = None, **extra) -> ImageItem:
    """Write the stage marker; it records the image's source (relative path) so that the
    planner keeps the image's id even before status.json exists (`plan.id_owners`)."""
    extra.setdefault("source", item.rel)
    layout.write_marker(item.image_id, stage, item.stage_keys[stage], state, reason, **extra)
    if state != "done":
        item = item.model_copy(update={"state": state, "reason": reason})
    return item


def propagate(layout: Layout, item: ImageItem, stage: str, marker: dict) -> ImageItem:
    """Carry an upstream quarantine/failure into this stage's marker."""
    return mark(layout, item, stage, marker.get("state", "failed"), marker.get("reason"),
                detail=marker.get("detail"))
