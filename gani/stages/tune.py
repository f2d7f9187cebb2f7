"""Stage 3, tune: adapt the generator to each image (GANI by default; PTI, projections or
e4e-only through `tune.method`), in batches of `tune.batch_size`.

Writes per image `latent.pt` (final W+ latent, [1, n_latent, D]), `tuned.safetensors` (the
compact artifact of `gani.tuning.artifact`: GANI module parameters + target, or deltas, or
the latent and noise), `recon.png` (the tuned generator at that latent) and `tune.json`
(method, `steps` run: `tune.steps`, 0 for e4e; loss curve, seconds, peak memory). An image
whose tuning stops on a numerical fault (NaN/inf) is marked failed with reason
`tuning_nonfinite`; the others of its batch go on. Out
of device memory, the batch is halved and retried down to one image, and an image that does
not fit even alone is marked failed with reason `out_of_memory`
(`tune_images(on_oom="isolate")`). A store error writing one image's results does not lose
its batch mates' work: the others are written first, then the error is raised (the
orchestrator retries the image).
"""
from __future__ import annotations

import json
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import torch
from PIL import Image

from gani.alignment.domains import generated_content_box
from gani.config import Settings
from gani.metrics.preprocess import tensor2im
from gani.metrics.profiling import ResourceMeter

from .common import (fresh, image_to_tensor, load_png, load_tensor, mark, png_bytes, propagate,
                     tensor_bytes, upstream)
from .layout import Layout
from .plan import ImageItem
from .runtime import Runtime

STAGE = "tune"


def target_tensor(img: Image.Image, size: int, domain: str) -> torch.Tensor:
    """An aligned image as a tuning target at the generator's resolution, [1, 3, S, S].

    Square domains: a bilinear resize. Cars: the 3:4 image goes into the generator's
    content band (rows 64:448 of 512), black above and below, as the generator draws it.
    """
    top, bottom, left, right = generated_content_box(domain, size, size)
    if (top, bottom, left, right) == (0, size, 0, size):
        return image_to_tensor(img, (size, size))
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(img.resize((right - left, bottom - top), Image.Resampling.BILINEAR),
                 (left, top))
    return image_to_tensor(canvas)


def targets_tensor(images: list, rt: Runtime, domain: str) -> torch.Tensor:
    return torch.cat([target_tensor(im, rt.G.size, domain) for im in images]).to(rt.device)


def project(rt: Runtime, settings: Settings, aligned: list, method: str) -> torch.Tensor:
    """W / W+ projection of aligned images (the encoder-less start), [B, n_latent, D], with
    the encode stage's own `encode.projection_steps` and `encode.projection_lr`."""
    from gani.tuning import tune_images

    enc = settings.encode
    proj = settings.tune.projection.model_copy(update={"lr": enc.projection_lr})
    cfg = settings.tune.model_copy(update={"method": method, "steps": enc.projection_steps,
                                           "projection": proj})
    G = rt.G
    w0 = rt.latent_avg.reshape(1, 1, -1).repeat(len(aligned), G.n_latent, 1)
    results = tune_images(method, G, targets_tensor(aligned, rt, settings.domain), w0, cfg,
                          rt.loss, on_oom="halve")
    return torch.stack([r.latent.reshape(G.n_latent, -1) for r in results]).to(rt.device)


# --------------------------------------------------------------------------- artifacts

_RESULTS: "OrderedDict[tuple, object]" = OrderedDict()
_RESULTS_LOCK = threading.Lock()
_RESULTS_MAX = 4


def artifact_bytes(result, target: torch.Tensor, G) -> bytes:
    from gani.tuning.artifact import save_artifact

    with tempfile.TemporaryDirectory(prefix="gani-tuned-") as tmp:
        path = Path(tmp) / "tuned.safetensors"
        save_artifact(path, result, target, generator_info=getattr(G, "config", lambda: {})())
        return path.read_bytes()


def _cache_key(layout: Layout, item: ImageItem) -> tuple:
    return (layout.uri(item.image_id, "tuned"), item.stage_keys[STAGE])


def _remember(layout: Layout, item: ImageItem, result) -> None:
    """Keep the result for edit and evaluate in this process (the last few only)."""
    with _RESULTS_LOCK:
        _RESULTS[_cache_key(layout, item)] = result
        while len(_RESULTS) > _RESULTS_MAX:
            _RESULTS.popitem(last=False)


def load_result(layout: Layout, item: ImageItem, rt: Runtime):
    """The image's TunedImage (deltas rebuilt when the artifact stores GANI modules).

    Cached per (artifact URI, tune key): edit and evaluate of the same image in one process
    rebuild the deltas once."""
    from gani.tuning.artifact import load_artifact

    key = _cache_key(layout, item)
    with _RESULTS_LOCK:
        if key in _RESULTS:
            _RESULTS.move_to_end(key)
            return _RESULTS[key]
    with tempfile.TemporaryDirectory(prefix="gani-tuned-") as tmp:
        path = Path(tmp) / "tuned.safetensors"
        path.write_bytes(layout.read(item.image_id, "tuned"))
        art = load_artifact(path)
    result = art.result(rt.G, rt.loss) if art.mode == "modules" else art.result()
    _remember(layout, item, result)
    return result


def weight_deltas(result, rt: Runtime) -> Optional[dict]:
    return result.synthesis_kwargs(rt.device).get("weight_deltas")


def render_result(result, rt: Runtime) -> torch.Tensor:
    from gani.tuning import render

    with torch.no_grad():
        return render(rt.G, result)


# --------------------------------------------------------------------------- stage

def tune_batch(items: list[ImageItem], layout: Layout, settings: Settings, rt: Runtime,
               progress: Optional[Callable[[dict], None]] = None) -> list[ImageItem]:
    """Tune the items that need it as one batch (callers form batches of tune.batch_size)."""
    from gani.tuning import tune_images

    out: dict[str, ImageItem] = {}
    todo: list[ImageItem] = []
    for item in items:
        if fresh(layout, item, STAGE):
            out[item.image_id] = item
            continue
        up = upstream(layout, item, STAGE)
        if up["state"] != "done":
            out[item.image_id] = propagate(layout, item, STAGE, up)
            continue
        todo.append(item)
    if todo:
        aligned = [load_png(layout.read(i.image_id, "aligned")) for i in todo]
        targets = targets_tensor(aligned, rt, settings.domain)
        w_init = torch.cat([load_tensor(layout.read(i.image_id, "e4e_latent"))
                            for i in todo]).to(rt.device)
        cfg = settings.tune.model_copy(update={"batch_size": len(todo)})
        ids = [i.image_id for i in todo]

        def report(info: dict) -> None:  # tune_images' progress + which images it is about
            if progress is not None:
                first = int(info.get("first_index", 0))
                progress({**info, "image_ids": ids[first:first + len(info.get("losses", []))]})

        with rt.tune_lock, ResourceMeter(rt.device) as meter:
            results = tune_images(settings.tune.method, rt.G, targets, w_init, cfg, rt.loss,
                                  progress=report, on_oom="isolate")
        first_error: Optional[BaseException] = None
        for j, (item, res) in enumerate(zip(todo, results)):
            try:
                out[item.image_id] = _write_result(item, res, targets[j], layout, settings,
                                                   rt, meter.peak_mem_bytes)
            except Exception as exc:  # noqa: BLE001 - write the others, then raise
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
    return [out[i.image_id] for i in items]


def method_label(settings: Settings, steps: Optional[int] = None) -> str:
    """The tuning method in words, as written on the pictures."""
    from gani.tuning.api import steps_of

    t = settings.tune
    steps = steps_of(t.method, t) if steps is None else steps
    if t.method == "gani" and t.gmm.reading == "optimizer":
        return (f"GANI (optimizer reading), {steps} steps, lr {t.pti.lr:g}, "
                f"module lr {t.optimizer.lr:g}")
    if t.method == "gani":
        return (f"GANI (reparam reading), {steps} steps, module lr {t.optimizer.lr:g} "
                f"({t.optimizer.name})")
    if t.method == "pti":
        return f"PTI, {steps} steps, lr {t.pti.lr:g}"
    if t.method == "e4e":
        return "e4e only (no tuning)"
    return f"{t.method}, {steps} steps"


def loss_figure(info: dict, settings: Settings) -> Image.Image:
    from .figures import loss_curve

    return loss_curve(info["loss_curve"], f"tuning loss: {method_label(settings, info['steps'])}",
                      parts=info.get("parts"), steps=info["steps"])


def _reason(res) -> str:
    """The failed image's reason: the tuner's own (out_of_memory), else a numerical stop."""
    if getattr(res, "reason", None):
        return res.reason
    return "tuning_nonfinite" if "non-finite" in (res.error or "").lower() else "tuning_error"


def _write_result(item: ImageItem, res, target: torch.Tensor, layout: Layout,
                  settings: Settings, rt: Runtime, peak_mem: Optional[int]) -> ImageItem:
    from gani.tuning.api import steps_of

    if res.error:
        return mark(layout, item, STAGE, "failed", _reason(res), detail=res.error[:500])
    recon = render_result(res, rt)
    if not torch.isfinite(recon).all():
        return mark(layout, item, STAGE, "failed", "tuning_nonfinite",
                    detail="the tuned generator renders NaN/inf")
    latent = res.latent.reshape(1, rt.G.n_latent, -1)
    layout.write(item.image_id, "latent", tensor_bytes(latent))
    layout.write(item.image_id, "tuned", artifact_bytes(res, target, rt.G))
    layout.write(item.image_id, "recon", png_bytes(tensor2im(recon[0])))
    info = {"method": res.method, "steps": steps_of(res.method, settings.tune),
            "loss_curve": [float(v) for v in res.loss_curve],
            "parts": {k: [float(v) for v in vs] for k, vs in (res.parts or {}).items()},
            "batch_size": settings.tune.batch_size}
    layout.write(item.image_id, "tune_info", json.dumps(info, indent=2).encode())
    # the cost apart from the result, so that tune.json is the same on every machine
    timing = {"seconds": float(res.seconds), "peak_mem_bytes": peak_mem,
              "peak_mem_scope": "batch"}
    layout.write(item.image_id, "timing", json.dumps(timing, indent=2).encode())
    layout.write(item.image_id, "loss_curve", png_bytes(loss_figure(info, settings)))
    _remember(layout, item, res)
    return mark(layout, item, STAGE, "done", method=res.method)
