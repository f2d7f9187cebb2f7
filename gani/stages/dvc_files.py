"""The files the DVC pipeline's evaluate stage writes for `dvc metrics` and `dvc plots`.

    metrics.json        quality only (counts, means of the quality keys, e4e's): a DVC
                        metric, in git, so `dvc metrics diff` compares results, never machines
    timing.json         tuning time and peak memory (mean and per image): machine-dependent,
                        so neither a DVC metric nor in git
    plots/loss.json     the tuning loss, one row per (image_id, step): dvc.yaml plots it
                        against the step, one line per image (.dvc/plots/loss_per_image.json)
    plots/per_image.json  per image id, the tuned and the e4e start's quality

Only done images count. The names are those of the MLflow run (docs/pipeline.md#dvc):
`tune_seconds` is the tuning time of one image, never the run's wall time.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from gani import io
from gani.metrics.core import METRIC_KEYS

from .layout import Layout

# The machine-dependent keys of an image's row (from its timing.json, never in metrics.json:
# gani.metrics.core.TIMING_KEYS), under their unambiguous names; the rest are quality.
TIMING_KEYS = {"seconds": "tune_seconds", "peak_mem_bytes": "peak_mem_bytes"}
QUALITY_KEYS = tuple(k for k in METRIC_KEYS if k not in TIMING_KEYS)
PER_IMAGE_KEYS = ("l2", "ms_ssim", "lpips", "locality_l2")


def _done(rows: Iterable[dict]) -> list[dict]:
    return [r for r in rows if r.get("state") == "done"]


def _mean(values: Iterable[Any]) -> Optional[float]:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(nums) / len(nums) if nums else None


def quality_metrics(summary: dict) -> dict:
    """metrics.json: the run's counts and the means of the quality keys only."""
    return {"counts": summary["counts"],
            "means": {k: (summary.get("means") or {}).get(k) for k in QUALITY_KEYS},
            "e4e_means": {k: (summary.get("e4e_means") or {}).get(k) for k in QUALITY_KEYS}}


def timing(rows: list[dict]) -> dict:
    """timing.json: tuning seconds and peak memory, their means and per image."""
    done = _done(rows)
    images = {r["image_id"]: {new: r.get(old) for old, new in TIMING_KEYS.items()}
              for r in done}
    means = {new: _mean(i[new] for i in images.values()) for new in TIMING_KEYS.values()}
    return {"means": means, "images": images}


def per_image_plot(rows: list[dict]) -> list[dict]:
    """plots/per_image.json: per done image id, the tuned and the e4e start's quality."""
    out = []
    for r in _done(rows):
        row = {"image_id": r["image_id"]}
        for k in PER_IMAGE_KEYS:
            row[k] = r.get(k)
            if k != "locality_l2":
                row[f"e4e_{k}"] = r.get(f"e4e_{k}")
        out.append(row)
    return out


def loss_plot(rows: list[dict], layout: Layout) -> list[dict]:
    """plots/loss.json: one row per (image_id, step) of each done image's tuning loss."""
    out = []
    for r in _done(rows):
        info = io.read_json(layout.uri(r["image_id"], "tune_info")) or {}
        out += [{"image_id": r["image_id"], "step": i, "loss": v}
                for i, v in enumerate(info.get("loss_curve") or [])]
    return out


def write_dvc_files(summary: dict, rows: list[dict], layout: Layout,
                    metrics_path: Optional[str] = None, plots_dir: Optional[str] = None,
                    timing_path: Optional[str] = None) -> None:
    """Write whichever of metrics.json, timing.json and the plot data have a path."""
    if metrics_path:
        io.write_json(metrics_path, quality_metrics(summary))
    if timing_path:
        io.write_json(timing_path, timing(rows))
    if plots_dir:
        io.write_json(io.join(plots_dir, "per_image.json"), per_image_plot(rows))
        io.write_json(io.join(plots_dir, "loss.json"), loss_plot(rows, layout))
