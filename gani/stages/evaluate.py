"""Stage 5, evaluate: metrics of the tuned reconstruction (the keys of
docs/output-contract.md#metricsjson exactly) and of the encoder alone, the side-by-side
comparison, and the image's final `status.json`.

metrics.json holds the quality keys only (`gani.metrics.core.QUALITY_KEYS`): the image's
tuning cost (seconds, peak memory) differs between machines and runs, so it stays in the
tune stage's `timing.json` and out of what DVC hashes. Locality compares the tuned
generator with the original on `evaluate.locality_n` seeded latents.
"""
from __future__ import annotations

import json
import math
from typing import Optional

import torch

from gani.config import Settings
from gani.metrics import compute_metrics
from gani.metrics.core import QUALITY_KEYS
from gani.metrics.preprocess import tensor2im

from .common import fresh, load_png, load_tensor, mark, png_bytes, propagate, upstream
from .layout import Layout
from .plan import ImageItem
from .runtime import Runtime
from .tune import load_result, render_result, weight_deltas

STAGE = "evaluate"


def finalize(item: ImageItem, layout: Layout, state: Optional[str] = None,
             reason: Optional[str] = None, detail: Optional[str] = None) -> ImageItem:
    """Write the image's status.json (the last thing written for an image).

    A quarantined or failed image without an explicit `detail` gets the one its stage
    marker recorded (the exception text, the tuner's error), so status.json says why."""
    state = state or item.state
    if state == "pending":
        state = "done"
    reason = reason if reason is not None else item.reason
    if state != "done" and detail is None:
        detail = _marker_detail(item, layout, state, reason)
    layout.write_status(item.image_id, state, reason if state != "done" else None, item.key,
                        source=item.rel, detail=detail)
    return item.model_copy(update={"state": state, "reason": reason if state != "done"
                                   else None})


def _marker_detail(item: ImageItem, layout: Layout, state: str,
                   reason: Optional[str]) -> Optional[str]:
    """The detail of the latest stage marker that recorded this state and reason."""
    from .layout import STAGES

    for stage in reversed(STAGES):
        try:
            marker = layout.read_marker(item.image_id, stage)
        except Exception:  # noqa: BLE001 - a detail is worth no failure of its own
            continue
        if (marker and marker.get("key") == item.stage_keys.get(stage)
                and marker.get("state") == state and marker.get("reason") == reason):
            return marker.get("detail")
    return None


def evaluate_image(item: ImageItem, layout: Layout, settings: Settings, rt: Runtime
                   ) -> ImageItem:
    if fresh(layout, item, STAGE) and layout.exists(item.image_id, "metrics"):
        return finalize(item, layout)
    up = upstream(layout, item, STAGE)
    if up["state"] != "done":
        item = propagate(layout, item, STAGE, up)
        return finalize(item, layout, up["state"], up.get("reason"), up.get("detail"))
    G, nets = rt.G, rt.nets
    aligned = load_png(layout.read(item.image_id, "aligned"))
    e4e_latent = load_tensor(layout.read(item.image_id, "e4e_latent")).to(rt.device)
    result = load_result(layout, item, rt)
    deltas = weight_deltas(result, rt)
    info = json.loads(layout.read(item.image_id, "tune_info"))
    recon = render_result(result, rt)
    with torch.no_grad():
        e4e = G.synthesis(e4e_latent, noise_mode="const")
    kind = getattr(nets, "identity_kind", None)
    id_kind = "moco" if kind == "moco" else "face"
    common = dict(lpips_net=getattr(nets, "lpips", None), id_net=getattr(nets, "identity", None),
                  id_kind=id_kind, domain=settings.domain, size=settings.evaluate.size)
    metrics = compute_metrics(aligned, recon, G=G, weight_deltas=deltas,
                              locality_n=settings.evaluate.locality_n,
                              locality_seed=settings.evaluate.locality_seed, **common)
    e4e_metrics = compute_metrics(aligned, e4e, **common)
    compare = compare_figure(aligned, tensor2im(e4e[0]), tensor2im(recon[0]), settings,
                             info.get("steps"), metrics, e4e_metrics)
    layout.write(item.image_id, "compare", png_bytes(compare))
    layout.write(item.image_id, "metrics", _json(metrics))
    layout.write(item.image_id, "e4e_metrics", _json(e4e_metrics))
    item = mark(layout, item, STAGE, "done")
    return finalize(item, layout, "done")


def compare_figure(aligned, start, recon, settings: Settings, steps: Optional[int],
                   metrics: dict, e4e_metrics: dict):
    """input | e4e start | tuned, labelled, small images upscaled (nearest); the method on
    top, L2 and drift underneath."""
    from .figures import labelled_row, panel_height, titled
    from .tune import method_label

    height = panel_height(max(aligned.height, recon.height), 256)
    row = labelled_row([aligned, start, recon],
                       ["input (aligned)", "e4e start", f"tuned ({settings.tune.method})"],
                       height)

    def num(d, k):
        v = d.get(k)
        return "n/a" if v is None else f"{v:.4f}"

    foot = [f"L2 at {settings.evaluate.size} px: e4e start {num(e4e_metrics, 'l2')} -> tuned "
            f"{num(metrics, 'l2')}; drift (locality L2 on {settings.evaluate.locality_n} "
            f"random latents) {num(metrics, 'locality_l2')}"]
    return titled(row, [f"{method_label(settings, steps)}; generator "
                        f"{settings.models.generator.checkpoint} ({recon.width} px)"], foot)


def _json(obj: dict) -> bytes:
    """metrics.json / e4e_metrics.json: the quality keys, NaN/inf as null, keys sorted."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in obj.items() if k in QUALITY_KEYS}
    return (json.dumps(clean, indent=2, sort_keys=True) + "\n").encode()
