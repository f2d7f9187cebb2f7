"""Stage 4, edit: render the edit grid with the tuned generator, and measure the edits.

Rows are the profile's edits (InterFaceGAN files or registry directions, GANSpace
components of the PCA file or of a PCA computed from G), columns `edit.factors` (0 = the
unedited reconstruction, framed). Small generators' tiles are upscaled with
nearest-neighbour. Writes `edits.png`; with no edit configured, nothing is rendered (the
marker says so).

With `edit.regressor` (the demo profile: the testbed's attribute regressor), every
InterFaceGAN edit that names an attribute is also measured (`gani.testbed.edits`): the
tuned image is edited by ±`edit.measure_strength`·σ_d, the regressor reads the renders, and
the change of the edited attribute and of the others (per σ_d, in units of each attribute's
std over generated samples) is compared with the same edit on generated samples of the
untuned generator: `ratio` 1 = the edit works on this inversion as on samples. The same is
measured at the encoder's start latent with the untuned generator (`ratio_start`), so the
effect of tuning on the edits shows. Printed under the grid and written to `edits.json`.
"""
from __future__ import annotations

import json
from typing import Optional

import torch
from PIL import Image

from gani.config import Settings
from gani.editing.grid import render_edit_grid

from .common import fresh, load_tensor, mark, png_bytes, propagate, upstream
from .figures import panel_height, titled
from .layout import Layout
from .plan import ImageItem
from .runtime import Runtime
from .tune import load_result, method_label, weight_deltas

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
    deltas = weight_deltas(result, rt)
    domain = settings.domain if settings.domain == "cars" else None
    small = rt.G.size < 64
    tile = panel_height(rt.G.size, 128) if small else max(64, min(256, rt.G.size))
    grid = render_edit_grid(rt.G, latent, edits, settings.edit.factors,
                            weight_deltas=deltas, domain=domain, tile_size=tile,
                            resample=Image.Resampling.NEAREST if small else None)
    effects = measure_edits(item, layout, rt, latent, deltas)
    if effects is not None:
        grid = titled(grid, [f"Edits rendered with the tuned generator ({method_label(settings)})",
                             f"columns: strength {', '.join(f'{f:+g}' for f in settings.edit.factors)}"
                             f" {'x sd' if _sigma_units(settings) else ''} (0 = the "
                             f"reconstruction, framed)"],
                      effects_lines(effects))
        layout.write(item.image_id, "edit_effects",
                     (json.dumps(effects, indent=2) + "\n").encode())
    layout.write(item.image_id, "edits", png_bytes(grid))
    return mark(layout, item, STAGE, "done", edits=[e.name for e in edits])


def _sigma_units(settings: Settings) -> bool:
    return bool(settings.edit.interfacegan) and all(
        e.unit == "sigma" for e in settings.edit.interfacegan) and not settings.edit.ganspace


@torch.no_grad()
def measure_edits(item: ImageItem, layout: Layout, rt: Runtime, latent: torch.Tensor,
                  deltas: Optional[dict]) -> Optional[dict]:
    """edits.json's record (the module doc), or None without a regressor."""
    ctx = rt.edit_context
    if ctx is None:
        return None
    G = rt.G

    def tuned(w):
        kw = {"weight_deltas": deltas} if deltas is not None else {}
        return G.synthesis(w.to(rt.device), noise_mode="const", **kw)

    def untuned(w):
        return G.synthesis(w.to(rt.device), noise_mode="const")

    now = ctx.assess(tuned, latent.float())
    start_w = load_tensor(layout.read(item.image_id, "e4e_latent")).reshape(latent.shape)
    start = ctx.assess(untuned, start_w.float().to(rt.device))
    attrs = ctx.attributes
    names = {e.key or e.name: e.name for e in rt.settings.edit.interfacegan}
    out = {"strength_sigma": ctx.strength, "attributes": attrs,
           "units": "change per σ_d of the edit, in std of the attribute over generated "
                    "samples", "edits": {}}
    for d, p in now["per_direction"].items():
        t = ctx.target[d]
        ref = ctx.reference[d]
        out["edits"][names.get(d, d)] = {
            "attribute": attrs[t], "delta": p["delta"][t], "reference": round(float(ref[t]), 4),
            "ratio": _r(p["ratio"]), "ratio_start": _r(start["per_direction"][d]["ratio"]),
            "leakage": _r(p["leakage"]), "ref_leakage": _r(p["ref_leakage"]),
            "largest_other": _largest_other(p["delta"], t, attrs),
            "reliable": bool(ctx.reliable[d]),
            "sign_consistency": round(ctx.consistency[d], 3),
            "delta_all": dict(zip(attrs, p["delta"]))}
    out["edit_ratio"] = _r(now.get("edit_ratio"))
    out["edit_ratio_start"] = _r(start.get("edit_ratio"))
    out["edit_leakage"] = _r(now.get("edit_leakage"))
    out["reliable_edits"] = [n for n, e in out["edits"].items() if e["reliable"]]
    return out


def _r(v, nd: int = 4):
    return None if v is None or v != v else round(float(v), nd)


def _largest_other(delta: list, t: int, attrs: list) -> dict:
    j = max((i for i in range(len(delta)) if i != t), key=lambda i: abs(delta[i]))
    return {"attribute": attrs[j], "delta": delta[j]}


def effects_lines(effects: dict) -> list[str]:
    """The measurement in words, one line per edit, printed under the grid."""
    # ASCII only: Pillow's default font has no σ or Δ ("sd" = σ_d, the std of generated
    # W codes along the direction)
    lines = [f"Measured by the attribute regressor, edits of +-{effects['strength_sigma']:g} sd: "
             f"change per sd of each attribute, in its std over generated samples; "
             f"ratio = on this inversion / on generated samples (1 = edits work as on samples)"]
    for name, e in effects["edits"].items():
        lo = e["largest_other"]
        note = "" if e["reliable"] else " [not in the mean: effect small or not linear in W]"
        lines.append(
            f"{name}: {e['attribute']} {e['delta']:+.2f} (samples {e['reference']:+.2f}, "
            f"ratio {_fmt(e['ratio'])}, e4e start {_fmt(e['ratio_start'])}); others: mean "
            f"|change| {e['leakage']:.2f} (samples {e['ref_leakage']:.2f}), largest "
            f"{lo['attribute']} {lo['delta']:+.2f}{note}")
    lines.append(f"edit ratio (mean over {', '.join(effects['reliable_edits']) or 'none'}): "
                 f"{_fmt(effects['edit_ratio'])} after tuning, "
                 f"{_fmt(effects['edit_ratio_start'])} at the e4e start")
    return lines


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"
