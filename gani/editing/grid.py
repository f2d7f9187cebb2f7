"""Edit grids: one row per direction, one column per strength, rendered with any generator.

The generator is used through `G.synthesis(wplus, noise_mode="const"[, weight_deltas=...])`
only, so the same call renders the original generator (weight_deltas None) and a tuned one
(the same G plus GANI/PTI weight deltas).

Strength semantics per edit kind:
- InterFaceGAN: the factor s in w + s·d.
- GANSpace: a multiple t of the published edit, w + t·delta(w) with delta from
  `ganspace_delta` (t = 1 is exactly the published edit, t = 0 the unedited latent; the
  published `strength` is an absolute target coordinate, so t interpolates toward it).
- any callable f(wplus, s) -> wplus.

Strength 0 is always a column (inserted if missing): the unedited reconstruction, framed in
`mark_color` so it stands out. Grid size: width = n_columns · tile_w, height = n_rows · tile_h,
where a tile is the generator output (cropped to the content band for `domain="cars"`),
optionally resized to `tile_size` (its width; the height keeps the aspect ratio).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
from PIL import Image, ImageDraw

from gani.metrics.preprocess import tensor2im

from .ganspace import PCA, ganspace_delta
from .interfacegan import apply_interfacegan


@dataclass
class Edit:
    """A named edit: `apply(wplus, s)` returns the latent at strength s."""

    name: str
    fn: Callable[[torch.Tensor, float], torch.Tensor]

    def apply(self, wplus: torch.Tensor, s: float) -> torch.Tensor:
        return self.fn(wplus, s)


def interfacegan_edit(name: str, direction: torch.Tensor) -> Edit:
    return Edit(name, lambda w, s: apply_interfacegan(w, direction, s))


def ganspace_edit(name: str, pca: PCA, direction) -> Edit:
    def fn(w, s):
        return w + float(s) * ganspace_delta(w, pca, direction)
    return Edit(name, fn)


def _as_edits(edits: Union[Sequence[Any], dict]) -> list[Edit]:
    out: list[Edit] = []
    items: Iterable = edits.items() if isinstance(edits, dict) else edits
    for item in items:
        if isinstance(item, Edit):
            out.append(item)
            continue
        name, spec = item
        if isinstance(spec, torch.Tensor):
            out.append(interfacegan_edit(str(name), spec))
        elif callable(spec):
            out.append(Edit(str(name), spec))
        else:
            raise TypeError(f"edit {name!r}: give an Edit, a direction tensor or a callable; "
                            f"GANSpace edits need the PCA: use ganspace_edit(name, pca, dir)")
    return out


def _columns(strengths: Sequence[float]) -> list[float]:
    cols = [float(s) for s in strengths]
    if not any(s == 0.0 for s in cols):
        cols.append(0.0)
        cols.sort()
    return cols


@torch.no_grad()
def render_edit_grid(G, wplus: torch.Tensor, edits, strengths: Sequence[float],
                     weight_deltas: Optional[Any] = None, *, tile_size: Optional[int] = None,
                     domain: Optional[str] = None, labels: bool = True,
                     mark_color: tuple[int, int, int] = (0, 200, 0),
                     batch_size: int = 8, resample: Optional[int] = None) -> Image.Image:
    """Render rows = `edits`, columns = `strengths` (plus 0, the unedited image, framed).

    wplus: [1, N, D] or [N, D]. edits: list of `Edit`, (name, direction-tensor) or
    (name, callable) pairs, or a {name: ...} dict of the same. resample: the PIL filter
    that brings tiles to `tile_size` (default Lanczos; NEAREST shows small outputs as they are).
    """
    w0 = wplus.unsqueeze(0) if wplus.dim() == 2 else wplus
    if w0.dim() != 3 or w0.shape[0] != 1:
        raise ValueError(f"wplus must be [1, N, D] or [N, D], got {tuple(wplus.shape)}")
    edit_list = _as_edits(edits)
    if not edit_list:
        raise ValueError("render_edit_grid needs at least one edit")
    cols = _columns(strengths)
    zero_col = cols.index(0.0)
    try:
        dev = next(G.parameters()).device
    except (AttributeError, StopIteration):
        dev = w0.device
    w0 = w0.to(dev)

    kwargs = {"noise_mode": "const"}
    if weight_deltas is not None:
        kwargs["weight_deltas"] = weight_deltas

    rows: list[list[Image.Image]] = []
    for edit in edit_list:
        latents = torch.cat([edit.apply(w0, s) for s in cols])          # [C, N, D]
        imgs = []
        for i in range(0, latents.shape[0], batch_size):
            out = G.synthesis(latents[i:i + batch_size], **kwargs)
            if domain is not None:
                from gani.alignment.domains import crop_generated
                out = crop_generated(out, domain)
            imgs.extend(tensor2im(out[j]) for j in range(out.shape[0]))
        rows.append(imgs)

    tw, th = rows[0][0].size
    if tile_size is not None:
        th = max(1, int(round(th * tile_size / tw)))
        tw = int(tile_size)
    grid = Image.new("RGB", (tw * len(cols), th * len(edit_list)), (0, 0, 0))
    draw = ImageDraw.Draw(grid)
    frame = max(1, min(tw, th) // 64)
    for r, (edit, imgs) in enumerate(zip(edit_list, rows)):
        for c, im in enumerate(imgs):
            if im.size != (tw, th):
                im = im.resize((tw, th), Image.Resampling.LANCZOS if resample is None
                               else resample)
            x0, y0 = c * tw, r * th
            grid.paste(im, (x0, y0))
            if c == zero_col:
                draw.rectangle([x0, y0, x0 + tw - 1, y0 + th - 1], outline=mark_color,
                               width=frame)
            if labels and tw >= 48:
                text = "orig" if c == zero_col else f"{cols[c]:+g}"
                if c == 0:
                    text = f"{edit.name} {text}"
                draw.text((x0 + frame + 2, y0 + frame + 1), text, fill=(255, 255, 255),
                          stroke_width=1, stroke_fill=(0, 0, 0))
    return grid
