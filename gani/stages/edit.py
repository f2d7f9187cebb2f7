"""Stage 4, edit: render the edit grid with the tuned generator.

Rows are the profile's edits (InterFaceGAN files, GANSpace components of the PCA file or
of a PCA computed from G), columns `edit.factors` (0 = the unedited reconstruction, framed).
Writes `edits.png`; with no edit configured, nothing is rendered (the marker says so).
"""
from __future__ import annotations

from gani.config import Settings
from gani.editing.grid import render_edit_grid

from .common import fresh, mark, png_bytes, propagate, upstream
from .layout import Layout
from .plan import ImageItem
from .runtime import Runtime
from .tune import load_result, weight_deltas

STAGE = "edit"


def edit_image(item: ImageItem, layout: Layout, settings: Settings, rt: Runtime) -> ImageItem:
    if fresh(layout, item, STAGE):
        return item
    up = upstream(layout, item, STAGE)
    if up["state"] != "done":
        return propagate(layout, item, STAGE, up)
    edits = rt.edits
    if not edits:
        return mark(layout, item, STAGE, "done", edits=[])
    result = load_result(layout, item, rt)
    latent = result.latent.reshape(1, rt.G.n_latent, -1).to(rt.device)
    domain = settings.domain if settings.domain == "cars" else None
    grid = render_edit_grid(rt.G, latent, edits, settings.edit.factors,
                            weight_deltas=weight_deltas(result, rt),
                            domain=domain, tile_size=max(64, min(256, rt.G.size)))
    layout.write(item.image_id, "edits", png_bytes(grid))
    return mark(layout, item, STAGE, "done", edits=[e.name for e in edits])
