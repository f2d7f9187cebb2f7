"""The run's `summary.json` (docs/output-contract.md#summaryjson): counts, quarantined and
failed ids with reasons, and the mean of each metric over done images.

    {
      "counts": {"done": 3, "quarantined": 2, "failed": 0},
      "quarantined": {"chelsea": "no_face", "broken": "truncated"},
      "failed": {},
      "details": {"broken": "image file is truncated ..."},   (why, for quarantined/failed)
      "means": {"l2": ..., "ms_ssim": ..., "lpips": null, "id": null, "locality_l2": ...,
                "locality_lpips": null},
      "e4e_means": {... the same keys for the encoder's reconstruction ...},
      "images": 5, "processed": 5, "skipped": 0, "pending": 0,
      "output": "<output root>", "dataset": "...", "profile": "...", "settings_hash": "..."
    }

A mean is null when no done image has that metric (a network's weights are absent).
The summary is built from each image's `status.json` and `metrics.json` on disk, so it
also counts images finished by earlier runs. Means are of the quality keys only: the
tuning cost (`timing.json`: `seconds`, `peak_mem_bytes`) is in each image's row, for the
MLflow parent and the DVC pipeline's `timing.json`, but never in summary.json, which DVC
hashes and must be the same on every machine.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from gani import io
from gani.redact import redact_obj
from gani.metrics.core import QUALITY_KEYS, TIMING_KEYS, summarize

from .layout import Layout
from .plan import ImageItem


def image_rows(items: Iterable[ImageItem], layout: Layout) -> list[dict[str, Any]]:
    """One row per image: id, state, reason, its metrics and its tuning cost (from disk;
    `seconds` / `peak_mem_bytes` None where `timing.json` is absent)."""
    rows = []
    for item in items:
        status = layout.read_status(item.image_id) or {}
        if status.get("key") == item.key:
            state, reason = status.get("state", "pending"), status.get("reason")
        elif item.state in ("quarantined", "failed"):
            state, reason = item.state, item.reason
        else:
            state, reason = "pending", None
        row: dict[str, Any] = {"image_id": item.image_id, "source": item.rel, "state": state,
                               "reason": reason}
        if state in ("quarantined", "failed") and status.get("detail"):
            row["detail"] = status["detail"]
        if state == "done":
            metrics = io.read_json(layout.uri(item.image_id, "metrics"),
                                   layout.storage_options, {}) or {}
            e4e = io.read_json(layout.uri(item.image_id, "e4e_metrics"),
                               layout.storage_options, {}) or {}
            timing = io.read_json(layout.uri(item.image_id, "timing"),
                                  layout.storage_options, {}) or {}
            row.update({k: metrics.get(k) for k in QUALITY_KEYS})
            row.update({k: timing.get(k) for k in TIMING_KEYS})
            row.update({f"e4e_{k}": e4e.get(k) for k in QUALITY_KEYS})
        rows.append(row)
    return rows


def build_summary(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    done = [r for r in rows if r["state"] == "done"]
    counts = {"done": len(done),
              "quarantined": sum(r["state"] == "quarantined" for r in rows),
              "failed": sum(r["state"] == "failed" for r in rows)}
    pending = len(rows) - sum(counts.values())
    summary = {
        "counts": counts,
        "quarantined": {r["image_id"]: r["reason"] for r in rows if r["state"] == "quarantined"},
        "failed": {r["image_id"]: r["reason"] for r in rows if r["state"] == "failed"},
        "details": {r["image_id"]: r["detail"] for r in rows
                    if r["state"] in ("quarantined", "failed") and r.get("detail")},
        "means": summarize(done, QUALITY_KEYS),
        "e4e_means": summarize([{k: r.get(f"e4e_{k}") for k in QUALITY_KEYS} for r in done],
                               QUALITY_KEYS),
        "images": len(rows),
        "pending": pending,
    }
    summary.update(redact_obj(extra))   # tracking_error quotes an exception: no secret in it
    return summary


def write_summary(layout: Layout, summary: dict[str, Any], uri: Optional[str] = None) -> str:
    uri = uri or layout.summary_uri
    io.write_bytes(uri, (json.dumps(redact_obj(summary), indent=2, sort_keys=True, default=str) + "\n")
                   .encode(), layout.storage_options)
    return uri
