"""The logical run: what one MLflow parent run stands for, across killed and resumed runs.

Key: (experiment, input, output root, params hash) -> tag `gani.logical_run`. The output
root keeps `.gani-tracking.json` (`STATE_FILE`): that key, the tracking URI, the parent
run id, the *scope* (ids of every image that one of the logical run's flow runs had to
process) and whether it finished.

- A flow run continues the logical run when that file says it is unfinished with the same
  key and URI (`next_state`); else, when MLflow has an unfinished parent (RUNNING / FAILED
  / KILLED) with the same key, it resumes the newest one; else it starts a new logical run
  (`open_parent`). Continuing resumes the parent and adds this flow run's images to the
  scope. A finished logical run is never resumed: the next run (the next night) gets a new
  parent, and its scope is only what it processes.
- Reconcile (before the parent is closed): every image of the scope that is final on disk
  (status.json done / quarantined / failed with the current key) and has no complete child
  under the parent is logged now (`final_images`, `unlogged`). So a run killed after some
  images were done, then re-run, ends with exactly the children an uninterrupted run
  would have had.
- The parent ends FINISHED (and the file says finished) only when every scope image is
  final and logged; otherwise it ends FAILED (or stays RUNNING when MLflow is unreachable)
  and the next run resumes and reconciles it.

Child run of an image (`log_image`): the metric keys of metrics.json and of timing.json
(`seconds` as `tune_seconds`), plus e4e_* for the encoder alone, the tuning loss curve as steps of
`tune_loss`, the params that tell results apart (`meta.child_params`), a description and
its images by key (`describe`), tags (content key, state, reason, method) and the image's
artifacts in folders named after the stage that wrote them
(`align/aligned.png`, `encode/e4e.png`, `tune/recon.png`, `edit/edits.png`,
`evaluate/metrics.json`, ...: `gani.stages.layout.ARTIFACTS`; docs/pipeline.md, "What a
run writes").

Nothing here imports Prefect: the tasks in `tasks/tracking.py` wrap these functions and the
flows decide when to call them.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from gani import io
from gani.config import Settings
from gani.redact import redact_uri
from gani.stages import ImageItem, Layout, image_rows
from gani.metrics.core import TIMING_KEYS
from gani.stages.layout import ARTIFACTS, STATES
from gani.stages.plan import result_hash

from . import describe
from .client import NOTE_TAG, ChildRun, Tracker, experiment_name
from .meta import child_params, dvc_data_version, git_commit, settings_params

STATE_FILE = ".gani-tracking.json"


def logical_run_key(experiment: str, input_uri: str, output_uri: str, params_hash: str) -> str:
    blob = json.dumps([experiment, redact_uri(input_uri), redact_uri(output_uri).rstrip("/"),
                       params_hash])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class TrackingRun:
    """What the flow needs to know about its logical run while it runs."""

    uri: str
    output_uri: str
    state: dict
    parent: Optional[str] = None
    resumed: bool = False
    error: Optional[str] = None
    logged: set = field(default_factory=set)       # children logged by this flow run
    idle: bool = False    # nothing to process or log: no parent run is opened (an empty
                          # parent per quiet night would bury the nights that did something)

    @property
    def opened(self) -> bool:
        """Tracking is fine for this flow run: a parent is open, or none was needed."""
        return bool(self.parent) or self.idle

    @property
    def scope(self) -> list[str]:
        return list(self.state.get("scope") or [])


# --------------------------------------------------------------------------- state file

def _state_uri(output_uri: str) -> str:
    return io.join(output_uri, STATE_FILE)


def read_state(output_uri: str) -> dict:
    data = io.read_json(_state_uri(output_uri), default=None)
    return data if isinstance(data, dict) else {}


def write_state(output_uri: str, state: Mapping[str, Any]) -> bool:
    try:
        io.write_json(_state_uri(output_uri), dict(state))
        return True
    except Exception as exc:  # noqa: BLE001 - bookkeeping must not stop the night
        print(f"warning: could not write {STATE_FILE} under the output root: {exc}")
        return False


def next_state(settings: Settings, dataset: str, input_uri: str, output_uri: str,
               flow_run_id: str, todo_ids: set[str]) -> tuple[dict, bool]:
    """This flow run's state file (continuing the logical run of the old one when it is
    unfinished with the same key and URI), and whether the old one finished the same
    logical run (then MLflow is not searched for an unfinished parent)."""
    uri = settings.tracking.uri
    name = experiment_name(settings.tracking.experiment, dataset, settings.profile)
    key = logical_run_key(name, input_uri, output_uri, result_hash(settings))
    old = read_state(output_uri)
    same = old.get("logical_run") == key and old.get("tracking_uri") == redact_uri(uri)
    continuing = same and not old.get("finished")
    scope = set(old.get("scope") or []) | todo_ids if continuing else set(todo_ids)
    runs = (list(old.get("flow_runs") or []) if continuing else []) + [flow_run_id]
    state = {"logical_run": key, "tracking_uri": redact_uri(uri), "experiment": name,
             "input": redact_uri(input_uri), "params_hash": result_hash(settings),
             "parent_run_id": old.get("parent_run_id") if continuing else None,
             "scope": sorted(scope), "flow_runs": runs[-50:], "finished": False}
    return state, bool(same and old.get("finished"))


# --------------------------------------------------------------------------- parent run

def _parent_tags(settings: Settings, dataset: str, input_uri: str, output_uri: str,
                 flow_run_id: str, n_images: int, n_todo: int, logical_run: str) -> dict:
    return {"dataset": dataset, "profile": settings.profile, "input": redact_uri(input_uri),
            "output": redact_uri(output_uri), "git_commit": git_commit(),
            "dvc_data_version": dvc_data_version(), "params_hash": result_hash(settings),
            "prefect_flow_run_id": flow_run_id, "tune_method": settings.tune.method,
            "n_images": str(n_images), "n_to_process": str(n_todo),
            "gani.logical_run": logical_run}


def open_parent(settings: Settings, dataset: str, input_uri: str, output_uri: str,
                flow_run_id: str, n_images: int, n_todo: int,
                resume_run_id: Optional[str] = None, search: bool = True) -> dict:
    """The parent run of this flow run's logical run: `resume_run_id` when it is still
    unfinished, else (with `search`) the newest unfinished parent with the same logical-run
    key, else a new one. Returns {"run_id", "resumed", "previous_finished"}."""
    tracker = Tracker(settings.tracking.uri)
    name = experiment_name(settings.tracking.experiment, dataset, settings.profile)
    exp = tracker.experiment_id(name, describe.experiment_description(name, dataset,
                                                                      settings.profile))
    key = logical_run_key(name, input_uri, output_uri, result_hash(settings))
    tags = _parent_tags(settings, dataset, input_uri, output_uri, flow_run_id, n_images,
                        n_todo, key)
    tags[NOTE_TAG] = describe.parent_description(
        dataset, settings.profile, settings.tune.method, _steps(settings),
        tags["input"], tags["output"], n_images, n_todo)
    params = {**settings_params(settings), "params_hash": result_hash(settings)}
    previous_finished = False
    candidates: list[str] = []
    if resume_run_id:
        status = tracker.parent_status(resume_run_id)
        if status == "FINISHED":
            previous_finished = True
        elif status is not None:
            candidates.append(resume_run_id)
    if not candidates and search and not previous_finished:
        candidates = tracker.unfinished_parents(exp, key)
    if candidates:
        tracker.resume_parent(candidates[0], tags, params, flow_run_id)
        print(f"MLflow: resuming the unfinished parent run {candidates[0]} of this logical "
              f"run (output, input and parameters unchanged)")
        return {"run_id": candidates[0], "resumed": True, "previous_finished": False}
    tags["prefect_flow_run_ids"] = flow_run_id
    run_name = f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    rid = tracker.start_parent(exp, run_name, tags, params)
    return {"run_id": rid, "resumed": False, "previous_finished": previous_finished}


def _steps(settings: Settings) -> int:
    """The steps the tuning method runs (e4e: none; gani.tuning.api.steps_of)."""
    return 0 if settings.tune.method == "e4e" else settings.tune.steps


def finish_parent(settings: Settings, parent_run_id: str, summary: dict,
                  items: list[ImageItem], output_uri: str, status: str = "FINISHED") -> None:
    """Aggregate metrics, the per-image table (with each child's run id) and summary.json
    on the parent run, then end it with `status`."""
    tracker = Tracker(settings.tracking.uri)
    rows = image_rows(items, Layout(output_uri))
    children = tracker.child_runs(parent_run_id)
    for row in rows:
        row["child_run_id"] = children.get(row["image_id"])
    opening = tracker.client.get_run(parent_run_id).data.tags.get(NOTE_TAG, "")
    tracker.finish_parent(parent_run_id, summary, rows, status=status,
                          description=describe.final_parent_description(opening, summary))


# --------------------------------------------------------------------------- children

def log_image(item: ImageItem, output_uri: str, settings: Settings, parent_run_id: str) -> str:
    """The image's child run (module doc), from what its folder holds; returns its id."""
    layout = Layout(output_uri)
    status = layout.read_status(item.image_id) or {}
    state = status.get("state", item.state)
    metrics: dict[str, Any] = {}
    curve: list = []
    if state == "done":
        metrics = io.read_json(layout.uri(item.image_id, "metrics"), default={}) or {}
        e4e = io.read_json(layout.uri(item.image_id, "e4e_metrics"), default={}) or {}
        timing = io.read_json(layout.uri(item.image_id, "timing"), default={}) or {}
        metrics.update({k: timing.get(k) for k in TIMING_KEYS})
        metrics.update({f"e4e_{k}": v for k, v in e4e.items()})
        if settings.tracking.log_loss_curve:
            info = io.read_json(layout.uri(item.image_id, "tune_info"), default={}) or {}
            curve = info.get("loss_curve") or []
    tags = {"image_id": item.image_id, "source": item.rel[:500], "content_key": item.key,
            "method": settings.tune.method, "reason": status.get("reason") or ""}
    description = describe.child_description(
        state, status.get("reason"), status.get("detail"), item.rel, metrics,
        {k[4:]: v for k, v in metrics.items() if k.startswith("e4e_")},
        settings.tune.method, _steps(settings))
    images = describe.child_images(layout, item.image_id, item.source, state,
                                   status.get("reason"))
    with tempfile.TemporaryDirectory(prefix="gani-mlflow-") as tmp:
        files: dict[str, str] = {}
        for artifact, (stage, name) in ARTIFACTS.items():
            try:
                data = io.read_bytes(layout.uri(item.image_id, artifact))
            except FileNotFoundError:
                continue
            local = Path(tmp) / name
            local.write_bytes(data)
            files[str(local)] = stage
        return Tracker(settings.tracking.uri).log_image(
            parent_run_id, item.image_id, tags=tags, metrics=metrics, loss_curve=curve,
            artifacts=files, state=state, params=child_params(settings, result_hash(settings)),
            images=images, description=description)


def list_children(settings: Settings, parent_run_id: str) -> dict[str, list[dict]]:
    """{image_id: [its child runs as dicts]} (what reconcile compares with the disk)."""
    return {i: [vars(r) for r in rs]
            for i, rs in Tracker(settings.tracking.uri).children(parent_run_id).items()}


def final_images(track: TrackingRun, items: list[ImageItem]
                 ) -> tuple[dict[str, ImageItem], list[str]]:
    """The scope's images final on disk ({id: item with its final state}) and the ids of
    those not final yet."""
    layout = Layout(track.output_uri)
    scope = set(track.scope)
    final: dict[str, ImageItem] = {}
    pending = []
    for item in items:
        if item.image_id not in scope:
            continue
        status = layout.read_status(item.image_id) or {}
        if status.get("key") == item.key and status.get("state") in STATES:
            final[item.image_id] = item.model_copy(update={"state": status["state"]})
        else:
            pending.append(item.image_id)
    return final, sorted(pending)


def unlogged(final: dict[str, ImageItem], children: dict[str, list[dict]]) -> list[ImageItem]:
    """The final images without exactly one complete child run (reconcile logs them)."""
    return [item for image_id, item in sorted(final.items())
            if not (len(children.get(image_id, [])) == 1
                    and ChildRun(**children[image_id][0]).complete(item.key, item.state))]
