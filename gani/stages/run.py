"""Run stages over a dataset in this process, in order (the DVC driver and plain Python use).

The Prefect flow (flows/invert.py) calls the same per-image functions from tasks, with
fan-out, GPU slots and retries; this module is the simple sequential driver.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

from gani import io
from gani.config import Settings

from .align import align_image
from .edit import edit_image
from .encode import encode_image
from .evaluate import evaluate_image, finalize
from .layout import STAGES, Layout
from .plan import (ImageItem, Plan, check_layout_roots, checkpoint_fingerprints, plan_input,
                   result_hash)
from .runtime import Runtime, get_runtime
from .summary import build_summary, image_rows, write_summary
from .tune import tune_batch

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def run_stage(stage: str, items: list[ImageItem], layout: Layout, settings: Settings,
              rt: Optional[Runtime] = None, progress: Progress = _quiet,
              data_dir: str = "data") -> list[ImageItem]:
    """Run one stage for every item (tune in batches of tune.batch_size), after removing
    the temporary files a killed run left under the stage's root."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    stale = io.remove_stale_temp(layout.stage_root(stage))
    if stale:
        progress(f"{stage}: removed {len(stale)} temporary file(s) left by a killed run")
    out: list[ImageItem] = []
    if stage == "align":
        for i, item in enumerate(items, 1):
            out.append(align_image(item, layout, settings))
            progress(f"align {i}/{len(items)} {item.image_id}: {out[-1].state}"
                     + (f" ({out[-1].reason})" if out[-1].reason else ""))
        return out
    rt = rt or get_runtime(settings, data_dir)
    if stage == "tune":
        bs = settings.tune.batch_size
        for start in range(0, len(items), bs):
            batch = items[start:start + bs]
            t0 = time.perf_counter()
            out.extend(tune_batch(batch, layout, settings, rt))
            progress(f"tune {min(start + bs, len(items))}/{len(items)} "
                     f"({', '.join(i.image_id for i in batch)}) {time.perf_counter() - t0:.1f}s")
        return out
    fn = {"encode": encode_image, "edit": edit_image, "evaluate": evaluate_image}[stage]
    for i, item in enumerate(items, 1):
        out.append(fn(item, layout, settings, rt))
        progress(f"{stage} {i}/{len(items)} {item.image_id}: {out[-1].state}")
    return out


def plan_run(input_uri: str, layout: Layout, settings: Settings, data_dir: str = "data",
             skip_finished: bool = True) -> Plan:
    """Every image of the dataset and the account of the other files (`plan_input`), after
    refusing output roots that are empty, overlap the input, are files or are not writable
    (`check_output_root`)."""
    check_layout_roots(input_uri, layout)
    planned = plan_input(input_uri, settings, layout,
                         checkpoint_fingerprints(settings, data_dir))
    if not skip_finished:
        planned.items = [i.model_copy(update={"state": "pending", "reason": None,
                                              "skipped": False}) for i in planned.items]
    return planned


def plan(input_uri: str, layout: Layout, settings: Settings, data_dir: str = "data",
         skip_finished: bool = True) -> list[ImageItem]:
    """`plan_run`'s items."""
    return plan_run(input_uri, layout, settings, data_dir, skip_finished).items


def summarize_run(items: list[ImageItem], layout: Layout, settings: Settings,
                  **extra) -> dict:
    rows = image_rows(items, layout)
    fields = {"output": layout.stage_root("evaluate"), "profile": settings.profile,
              "settings_hash": result_hash(settings), **extra}
    summary = build_summary(rows, **fields)
    write_summary(layout, summary)
    return summary


def run_pipeline(input_uri: str, layout: Layout, settings: Settings, data_dir: str = "data",
                 progress: Progress = _quiet, stages: Iterable[str] = STAGES) -> dict:
    """Every stage over the dataset in order, then summary.json. Returns the summary."""
    t0 = time.perf_counter()
    planned = plan_run(input_uri, layout, settings, data_dir)
    items = planned.items
    todo = [i for i in items if not i.skipped]
    progress(f"{len(items)} images, {len(items) - len(todo)} already finished")
    active = todo
    for stage in stages:
        active = run_stage(stage, active, layout, settings, progress=progress,
                           data_dir=data_dir)
        for item in active:
            if item.state in ("quarantined", "failed") and stage != "evaluate":
                finalize(item, layout)
        active = [i for i in active if i.state not in ("quarantined", "failed")]
    return summarize_run(items, layout, settings, processed=len(todo),
                         skipped=len(items) - len(todo),
                         seconds=round(time.perf_counter() - t0, 2), **planned.accounting())
