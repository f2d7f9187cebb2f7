"""Prefect tasks of the per-image stages: thin wrappers that move URIs and small manifests
(`ImageItem`) in and out of `gani.stages`. No tensors cross a task boundary; every result
lives under the output root, so any task can run on any machine and a re-run picks up what
is there.

`Tasks.for_run(settings)` is how a flow gets them: every task of the pipeline (these and
the MLflow ones of `tasks.tracking`) with the run's retry policy (`tasks.retry`), set once.
The tune task holds one slot of a Prefect global concurrency limit while it runs
(orchestration.use_gpu_limit): the GPU is shared by every flow run on the machine (or the
pool), whatever their task runners.
"""
from __future__ import annotations

import os
import socket
import threading
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Any, Optional

from prefect import Task, task

from gani.config import Settings
from gani.stages import (ImageItem, Layout, Plan, align_image, edit_image, encode_image,
                         evaluate_image, get_runtime, plan_run, summarize_run, tune_batch)

from . import STORED, tracking
from .retry import retry_policy



@task(name="plan", **STORED)
def plan_task(input_uri: str, output_uri: str, settings: Settings, data_dir: str = "data",
              only: Optional[list[str]] = None) -> Plan:
    """The run's images (`only`: those source URIs) and the account of the other files."""
    planned = plan_run(input_uri, Layout(output_uri), settings, data_dir)
    if only is not None:
        wanted = set(only)
        planned.items = [i for i in planned.items if i.source in wanted]
    return planned


@task(name="align", task_run_name="align-{item.image_id}", **STORED)
def align_task(item: ImageItem, output_uri: str, settings: Settings) -> ImageItem:
    return align_image(item, Layout(output_uri), settings)


@task(name="encode", task_run_name="encode-{item.image_id}", **STORED)
def encode_task(item: ImageItem, output_uri: str, settings: Settings,
                data_dir: str = "data") -> ImageItem:
    return encode_image(item, Layout(output_uri), settings, get_runtime(settings, data_dir))


@task(name="tune", **STORED)
def tune_task(items: list[ImageItem], output_uri: str, settings: Settings,
              data_dir: str = "data") -> list[ImageItem]:
    """Tune a batch; holds one slot of the GPU global concurrency limit when configured."""
    rt = get_runtime(settings, data_dir)
    with gpu_slot(settings):
        return tune_batch(items, Layout(output_uri), settings, rt, progress=_print_progress)


@task(name="edit", task_run_name="edit-{item.image_id}", **STORED)
def edit_task(item: ImageItem, output_uri: str, settings: Settings,
              data_dir: str = "data") -> ImageItem:
    return edit_image(item, Layout(output_uri), settings, get_runtime(settings, data_dir))


@task(name="evaluate", task_run_name="evaluate-{item.image_id}", **STORED)
def evaluate_task(item: ImageItem, output_uri: str, settings: Settings,
                  data_dir: str = "data") -> ImageItem:
    return evaluate_image(item, Layout(output_uri), settings, get_runtime(settings, data_dir))


@task(name="summarize", **STORED)
def summarize_task(items: list[ImageItem], output_uri: str, settings: Settings,
                   extra: dict[str, Any]) -> dict:
    """summary.json from every image's status/metrics on disk (this run's and earlier)."""
    return summarize_run(items, Layout(output_uri), settings, **extra)


def _print_progress(info: dict) -> None:
    losses = " ".join(f"{i}={v:.4g}" for i, v in zip(info.get("image_ids", []),
                                                      info.get("losses", [])))
    print(f"{info.get('method')} step {info.get('step')}/{info.get('steps')}: {losses}")


# --------------------------------------------------------------------------- GPU slots

_ENSURED: set[str] = set()
_ENSURED_LOCK = threading.Lock()


def gpu_limit_name(settings: Settings) -> str:
    """orchestration.gpu_limit with `{host}` replaced by this machine's name and `{gpu}` by
    the worker's CUDA_VISIBLE_DEVICES ("all" when unset), so one limit per GPU box is
    `gpu:{host}`, one per GPU (a worker per GPU) `gpu:{host}:{gpu}`, and a pool-wide one a
    plain name (docs/pipeline.md, "Several GPUs in one machine")."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip().replace(",", "+") or "all"
    return settings.orchestration.gpu_limit.format(host=socket.gethostname(), gpu=gpu)


def ensure_gpu_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit `name` with `slots` slots if it does not exist."""
    with _ENSURED_LOCK:
        if name in _ENSURED:
            return
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=slots))
                    print(f"created global concurrency limit {name!r} ({slots} slot(s))")
                except ObjectAlreadyExists:
                    pass
        _ENSURED.add(name)


def gpu_slot(settings: Settings):
    """A context holding one slot of the GPU limit (orchestration.use_gpu_limit), else
    nothing."""
    o = settings.orchestration
    if not o.use_gpu_limit:
        return nullcontext()
    from prefect.concurrency.sync import concurrency

    name = gpu_limit_name(settings)
    ensure_gpu_limit(name, o.gpu_slots)
    return concurrency(name, occupy=1, strict=True)


# --------------------------------------------------------------------------- one run's tasks

@dataclass(frozen=True)
class Tasks:
    """The pipeline's tasks as one flow run uses them: with its retry policy."""

    plan: Task
    align: Task
    encode: Task
    tune: Task
    edit: Task
    evaluate: Task
    summarize: Task
    start_tracking: Task
    log_image: Task
    list_children: Task
    finish_tracking: Task

    @classmethod
    def for_run(cls, settings: Settings) -> "Tasks":
        policy = retry_policy(settings)
        plain = cls(plan_task, align_task, encode_task, tune_task, edit_task, evaluate_task,
                    summarize_task, tracking.start_tracking_task, tracking.log_image_task,
                    tracking.list_children_task, tracking.finish_tracking_task)
        return cls(**{f.name: getattr(plain, f.name).with_options(**policy)
                      for f in fields(cls)})
