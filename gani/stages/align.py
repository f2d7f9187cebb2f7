"""Stage 1, align: decode the source image robustly and prepare what the encoder sees.

Writes `aligned.png`. A file that is not a usable image (BadImageError) or shows no usable
face (LandmarkError) is quarantined with its machine-readable reason, and so is a source
that cannot be read as a file (vanished, a dangling link, a local file without read
permission, a FIFO or device named .jpg: `unreadable`); remote read errors (network,
access refused by the store) propagate so the orchestrator retries or fails the image.
"""
from __future__ import annotations

from gani import io
from gani.alignment import (BadImageError, LandmarkError, MissingLandmarksError, load_image,
                            prepare_image)
from gani.alignment.landmarks import sidecar_candidates
from gani.config import Settings

from .common import fresh, mark, png_bytes
from .layout import Layout
from .plan import ImageItem

STAGE = "align"


def _sidecar_text(source: str, storage_options) -> str | None:
    """Landmark sidecar next to the image (local or remote), as text, or None."""
    for cand in sidecar_candidates(source.split("://", 1)[-1]):
        uri = (f"{source.split('://', 1)[0]}://{cand.as_posix()}" if io.is_remote(source)
               else str(cand))
        try:
            return io.read_bytes(uri, storage_options).decode("utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError):
            continue
    return None


def align_image(item: ImageItem, layout: Layout, settings: Settings) -> ImageItem:
    if fresh(layout, item, STAGE):
        marker = layout.read_marker(item.image_id, STAGE)
        if marker["state"] != "done":
            return item.model_copy(update={"state": marker["state"],
                                           "reason": marker.get("reason")})
        return item
    cfg = settings.align
    try:
        nbytes = io.size(item.source, layout.storage_options)
        if nbytes > cfg.max_bytes:
            return mark(layout, item, STAGE, "quarantined", "too_large",
                        detail=f"{nbytes} bytes > align.max_bytes {cfg.max_bytes} (not read)")
        data = io.read_bytes(item.source, layout.storage_options)
    except (FileNotFoundError, io.NotRegularFileError) as exc:
        return mark(layout, item, STAGE, "quarantined", "unreadable", detail=str(exc)[:300])
    except (PermissionError, IsADirectoryError) as exc:
        if io.is_remote(item.source):
            raise  # S3 AccessDenied: a store fault (failed, retried by the next run)
        return mark(layout, item, STAGE, "quarantined", "unreadable", detail=str(exc)[:300])
    try:
        img = load_image(data, min_side=cfg.min_side, max_pixels=cfg.max_pixels,
                         max_decode_bytes=cfg.max_decode_bytes)
        options = {}
        method = cfg.method
        if cfg.prealigned_max_side and max(img.size) <= cfg.prealigned_max_side:
            # an already-aligned crop (the testbed's procedural faces): resized, no landmarks
            method = "resize"
            options = {"height": cfg.output_size, "width": cfg.output_size}
        elif method == "ffhq":
            options = {"detector": cfg.detector, "output_size": cfg.output_size,
                       "transform_size": cfg.transform_size}
            if cfg.detector == "dlib":
                options["multi_face"] = cfg.multi_face
            else:
                sidecar = _sidecar_text(item.source, layout.storage_options)
                if sidecar is None:
                    raise MissingLandmarksError(f"no <name>.landmarks.json next to {item.rel!r}")
                options["sidecar"] = sidecar
        if method != "resize" or "height" not in options:
            options.update(height=cfg.height, width=cfg.width)
        aligned = prepare_image(img, settings.domain, method=method, **options)
    except BadImageError as exc:
        return mark(layout, item, STAGE, "quarantined", exc.reason, detail=str(exc)[:300])
    except LandmarkError as exc:
        return mark(layout, item, STAGE, "quarantined", exc.reason, detail=str(exc)[:300])
    layout.write(item.image_id, "aligned", png_bytes(aligned))
    return mark(layout, item, STAGE, "done", size=list(aligned.size))
