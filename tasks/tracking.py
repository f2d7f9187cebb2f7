"""Prefect tasks around the MLflow client (`tracking`): open the parent run, log one
image's child run, list the children, close the parent. Each is retried on transient
faults like every task (`tasks.retry`); the flows decide what a failure means."""
from __future__ import annotations

from typing import Optional

from prefect import task

from gani.config import Settings
from gani.stages import ImageItem
from tracking import logical_run

from . import STORED



@task(name="start-tracking", **STORED)
def start_tracking_task(settings: Settings, dataset: str, input_uri: str, output_uri: str,
                        flow_run_id: str, n_images: int, n_todo: int,
                        resume_run_id: Optional[str] = None, search: bool = True) -> dict:
    return logical_run.open_parent(settings, dataset, input_uri, output_uri, flow_run_id,
                                   n_images, n_todo, resume_run_id, search)


@task(name="log-image", task_run_name="log-{item.image_id}", **STORED)
def log_image_task(item: ImageItem, output_uri: str, settings: Settings,
                   parent_run_id: str) -> str:
    """One nested MLflow run for the image: its metrics, loss curve and artifacts."""
    return logical_run.log_image(item, output_uri, settings, parent_run_id)


@task(name="list-child-runs", **STORED)
def list_children_task(settings: Settings, parent_run_id: str) -> dict:
    return logical_run.list_children(settings, parent_run_id)


@task(name="finish-tracking", **STORED)
def finish_tracking_task(settings: Settings, parent_run_id: str, summary: dict,
                         items: list[ImageItem], output_uri: str,
                         status: str = "FINISHED") -> None:
    logical_run.finish_parent(settings, parent_run_id, summary, items, output_uri, status)
