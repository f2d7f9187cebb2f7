"""`Tracker`: the pipeline's run structure in MLflow, over `MlflowClient`.

One experiment per dataset/profile, one parent run per logical run (`gani.kind`
dataset-run), one nested child run per image (`gani.kind` image, `mlflow.parentRunId`,
`image_id`). Every call names its run id explicitly: the fluent active-run stack is per
thread and breaks under Prefect's thread pool. Works against the embedded default
(`sqlite:///mlflow.db`, artifacts in ./mlruns) and an `mlflow server` (artifacts proxied
to S3).

Duplicate rule: the child of an image is the one active run under the parent with that
`image_id`. Logging an image again (a retried task, a resumed run, reconcile) keeps a
complete child (the terminal status of its state, `gani.complete`, the same `content_key`
and `state` tags) untouched and replaces anything else (a child a kill left RUNNING, one
of an earlier attempt in another state, an accidental duplicate): it is set KILLED and
deleted, then a fresh child is logged.

How it looks in the UI (docs/mlflow.md): the experiment is tagged as a classic
model-development experiment (`EXPERIMENT_KIND`), every run has a description
(`mlflow.note.content`), a child's status tells its image's state (`CHILD_STATUS`: done
FINISHED, quarantined KILLED, failed FAILED), its images are logged with `log_image` under
stable keys (MLflow's image grid, compared across runs) and its metric names mean one thing
(`METRIC_NAMES`: a child's `tune_seconds`, the parent's `wall_seconds`).
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from gani import faults
from gani.metrics.core import TIMING_KEYS

PARENT_KIND = "dataset-run"
CHILD_KIND = "image"

# MLflow 3's UI shows an experiment as GenAI (traces, evaluations) or as classic model
# development (runs table with metrics, charts, compare) after this experiment tag; the
# values are the UI's ExperimentKind (mlflow/server/js, `mlflow.experimentKind`;
# mlflow/demo/generators/traces.py sets "genai_development" the same way). Servers whose
# UI has the global GenAI / Machine learning switch also take `?workflowType=
# machine_learning` in the URL (`ui_link`).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"          # a run's or experiment's description (markdown)
COMPLETE_TAG = "gani.complete"            # set last, just before the run is terminated

# An image's final state -> its child run's status: a quarantined image (a bad input, not
# retried while the file and settings stay the same) is KILLED: stopped on purpose, not an
# error of the pipeline (FAILED, retried by the next run), not a result (FINISHED).
CHILD_STATUS = {"done": "FINISHED", "quarantined": "KILLED", "failed": "FAILED"}

# metrics.json and timing.json keys -> their MLflow names, so that one name means one
# thing: the tuning time of one image is `tune_seconds` (child; `mean_tune_seconds` on the
# parent), the whole night's wall time `wall_seconds` (parent).
METRIC_NAMES = {"seconds": "tune_seconds"}

# MLflow's HTTP client retries each request 7 times with backoff factor 2 and a 120 s
# timeout (minutes per call) by default. The pipeline retries whole log tasks itself
# (orchestration.retries, exponential backoff), stops sending to a server that is down
# (`TrackingGuard`) and logs what was missed later (reconcile), so it shortens MLflow's
# own retries unless the environment sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

_SQLITE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def is_http(uri: str) -> bool:
    return str(uri).startswith(("http://", "https://"))


def _client(uri: str):
    if is_http(uri):
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _lock_for(uri: str):
    """SQLite tolerates one writer: serialise this process's writes to the same file."""
    if not uri.startswith("sqlite:"):
        return _NullLock()
    with _LOCKS_GUARD:
        return _SQLITE_LOCKS.setdefault(uri, threading.Lock())


class _NullLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics MLflow can store: numbers (not bools, not None), finite."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or v is None:
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


def _tag_filter(key: str, value: str) -> str:
    return f"tags.`{key}` = '{value}'"


def _batches(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def mlflow_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """metrics.json keys under their MLflow names (`METRIC_NAMES`), with `prefix`."""
    return {prefix + METRIC_NAMES.get(k, k): v for k, v in metrics.items()}


def ui_link(ui_base: str, experiment_id: str, run_id: Optional[str] = None) -> str:
    """The MLflow UI address of an experiment (or one of its runs) in the classic
    model-development view: `<ui>/#/experiments/<id>[/runs/<run>]?workflowType=...`."""
    page = f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}"
    if run_id:
        page += f"/runs/{run_id}"
    return page + "?workflowType=machine_learning"


@dataclass
class ChildRun:
    run_id: str
    status: str
    tags: dict[str, str]
    start_time: int = 0

    def complete(self, content_key: str, state: str) -> bool:
        """Fully logged for this content and state: terminated with its state's status
        (`CHILD_STATUS`) after everything was logged (`COMPLETE_TAG`)."""
        return (self.status == CHILD_STATUS.get(state, "FINISHED")
                and self.tags.get(COMPLETE_TAG) == "1"
                and self.tags.get("content_key") == content_key
                and self.tags.get("state") == state)


class Tracker:
    """MlflowClient for the pipeline's run structure (module doc)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client = _client(uri)
        self.lock = _lock_for(uri)

    # ---------------------------------------------------------------- experiment / parent

    def experiment_id(self, name: str, description: str = "") -> str:
        """The experiment's id, created (or restored) when needed, with its kind
        (`EXPERIMENT_KIND`, so the UI opens the runs table) and description."""
        from mlflow.exceptions import MlflowException

        tags = {"gani.kind": "dataset", EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        if description:
            tags[NOTE_TAG] = description
        with self.lock:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                for key, value in tags.items():   # experiments created by earlier versions
                    if key not in exp.tags:
                        self.client.set_experiment_tag(exp.experiment_id, key, value)
                return exp.experiment_id
            try:
                return self.client.create_experiment(name, tags=tags)
            except MlflowException:  # created meanwhile by another worker
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                return exp.experiment_id

    def start_parent(self, experiment_id: str, run_name: str, tags: Mapping[str, str],
                     params: Mapping[str, str]) -> str:
        """A new parent run with its tags (the description among them) and params."""
        with self.lock:
            run = self.client.create_run(experiment_id, run_name=run_name,
                                         tags={"gani.kind": PARENT_KIND, **tags})
            rid = run.info.run_id
            self._log_params(rid, params)
        return rid

    def _log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in sorted(params.items())]
        for batch in _batches(items, 100):
            self.client.log_batch(run_id, params=batch)

    def parent_status(self, run_id: str) -> Optional[str]:
        """The parent's status, or None when it does not exist (or was deleted)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")):
                return None
            raise
        if run.info.lifecycle_stage != "active":
            return None
        return run.info.status

    def unfinished_parents(self, experiment_id: str, logical_run: str) -> list[str]:
        """Ids of the logical run's parents that did not finish, newest first."""
        runs = self.client.search_runs(
            [experiment_id], filter_string=(
                f"{_tag_filter('gani.kind', PARENT_KIND)} and "
                f"{_tag_filter('gani.logical_run', logical_run)} and "
                "attributes.status != 'FINISHED'"),
            order_by=["attributes.start_time DESC"], max_results=100)
        return [r.info.run_id for r in runs]

    def resume_parent(self, run_id: str, tags: Mapping[str, str],
                      params: Mapping[str, str], flow_run_id: str) -> None:
        """Reopen an unfinished parent for one more flow run of its logical run: status
        back to RUNNING, `flow_run_id` appended to `prefect_flow_run_ids`, missing params
        added, changed ones left as they were (MLflow params are immutable)."""
        from mlflow.entities import RunTag

        with self.lock:
            run = self.client.get_run(run_id)
            old = run.data.tags
            ids = [i for i in (old.get("prefect_flow_run_ids") or "").split(",") if i]
            if flow_run_id and flow_run_id not in ids:
                ids.append(flow_run_id)
            while len(",".join(ids)) > 4900:
                ids.pop(0)
            new_tags = {**tags, "prefect_flow_run_ids": ",".join(ids),
                        "resumed": str(int(old.get("resumed", "0") or 0) + 1)}
            changed = sorted(k for k, v in params.items()
                             if k in run.data.params and run.data.params[k] != str(v))
            if changed:
                new_tags["params_changed_on_resume"] = ",".join(changed)[:4900]
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000])
                                                for k, v in sorted(new_tags.items())])
            self._log_params(run_id, {k: v for k, v in params.items()
                                      if k not in run.data.params})

    def finish_parent(self, run_id: str, summary: Mapping[str, Any],
                      rows: list[Mapping[str, Any]], status: str = "FINISHED",
                      description: str = "") -> None:
        """Aggregate metrics, the per-image table (`images.json`), `summary.json` and the
        final description (counts and means)."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, 0)
                 for k, v in sorted(finite(parent_metrics(summary, rows)).items())]
        table = {c: [r.get(c) for r in rows] for c in IMAGE_TABLE_COLUMNS}
        table["tune_seconds"] = [r.get("seconds") for r in rows]
        with self.lock:
            if batch or description:
                self.client.log_batch(run_id, metrics=batch, tags=[RunTag(NOTE_TAG, description)]
                                      if description else ())
            if rows:
                self.client.log_table(run_id, data=table, artifact_file="images.json")
            self.client.log_dict(run_id, dict(summary), "summary.json")
            self.client.set_terminated(run_id, status)

    def fail_parent(self, run_id: str) -> None:
        with self.lock:
            self.client.set_terminated(run_id, "FAILED")

    # ---------------------------------------------------------------- children

    def _search_children(self, parent_run_id: str, extra: str = "") -> list[ChildRun]:
        exp = self.client.get_run(parent_run_id).info.experiment_id
        query = f"tags.mlflow.parentRunId = '{parent_run_id}'" + (f" and {extra}" if extra else "")
        out, token = [], None
        while True:
            page = self.client.search_runs([exp], filter_string=query, max_results=1000,
                                           page_token=token)
            out += [ChildRun(r.info.run_id, r.info.status, dict(r.data.tags),
                             r.info.start_time or 0) for r in page]
            token = page.token
            if not token:
                return out

    def children(self, parent_run_id: str) -> dict[str, list[ChildRun]]:
        """{image_id: [its active child runs under the parent]} (normally one each)."""
        out: dict[str, list[ChildRun]] = {}
        for r in self._search_children(parent_run_id):
            image_id = r.tags.get("image_id")
            if image_id:
                out.setdefault(image_id, []).append(r)
        return out

    def child_runs(self, parent_run_id: str) -> dict[str, str]:
        """{image_id: run_id} of the child runs already under `parent_run_id`."""
        return {i: sorted(rs, key=lambda r: -r.start_time)[0].run_id
                for i, rs in self.children(parent_run_id).items()}

    def _discard(self, run: ChildRun) -> None:
        if run.status in ("RUNNING", "SCHEDULED"):
            self.client.set_terminated(run.run_id, "KILLED")
        self.client.delete_run(run.run_id)

    def log_image(self, parent_run_id: str, image_id: str, *, tags: Mapping[str, str],
                  metrics: Mapping[str, Any], loss_curve: Iterable[float] = (),
                  artifacts: Mapping[str, str] = {}, state: str = "done",
                  params: Mapping[str, str] = {}, images: Mapping[str, Any] = {},
                  description: str = "") -> str:
        """Create the child run of `image_id` and log everything; returns its id.

        A complete child with the same content key and state is kept as it is (nothing is
        logged twice); any other child of the image under this parent is replaced (module
        doc). metrics: metrics.json keys (renamed by `METRIC_NAMES`); artifacts: {local
        file: the run's folder to put it in}; images: {key: PIL image}, logged with MLflow's
        `log_image(key=, step=0)` (the run's and the compare view's image grid);
        description: the run's `mlflow.note.content`.
        """
        content_key = str(tags.get("content_key", ""))
        with self.lock:
            exp = self.client.get_run(parent_run_id).info.experiment_id
            existing = sorted(self._search_children(parent_run_id,
                                                    f"tags.image_id = '{image_id}'"),
                              key=lambda r: -r.start_time)
            keep = next((r for r in existing if r.complete(content_key, state)), None)
            for r in existing:
                if r is not keep:
                    self._discard(r)
            if keep is not None:
                return keep.run_id
            rid = self.client.create_run(
                exp, run_name=image_id,
                tags={"mlflow.parentRunId": parent_run_id, "image_id": image_id,
                      "gani.kind": CHILD_KIND}).info.run_id
            if faults.ACTIVE:
                faults.hit("child_run")
            child_tags = {**tags, "state": state}
            if description:
                child_tags[NOTE_TAG] = description
            self._log_child(rid, child_tags, mlflow_metrics(metrics), loss_curve)
            self._log_params(rid, params)
            for key, image in images.items():
                self.client.log_image(rid, image, key=key, step=0)
            for path, folder in artifacts.items():
                self.client.log_artifact(rid, path, folder or None)
            self.client.set_tag(rid, COMPLETE_TAG, "1")
            self.client.set_terminated(rid, CHILD_STATUS.get(state, "FINISHED"))
        return rid

    def _log_child(self, run_id: str, tags: Mapping[str, str], metrics: Mapping[str, Any],
                   loss_curve: Iterable[float]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, 0) for k, v in sorted(finite(metrics).items())]
        batch += [Metric("tune_loss", float(v), now, i)
                  for i, v in enumerate(loss_curve) if v is not None and math.isfinite(v)]
        run_tags = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        for i, chunk in enumerate(_batches(batch, 1000) if batch else [[]]):
            self.client.log_batch(run_id, metrics=chunk, tags=run_tags if i == 0 else ())


# the columns of the parent's per-image table (images.json), as metrics.json and
# timing.json name them except `tune_seconds` (timing.json `seconds`)
IMAGE_TABLE_COLUMNS = ["image_id", "state", "reason", "l2", "ms_ssim", "lpips", "id",
                       "locality_l2", "locality_lpips", "peak_mem_bytes", "e4e_l2",
                       "child_run_id"]


def parent_metrics(summary: Mapping[str, Any], rows: Iterable[Mapping[str, Any]] = ()
                   ) -> dict[str, Any]:
    """The parent's metrics from summary.json: `mean_<metric>` / `e4e_mean_<metric>` over
    the done images, `n_<state>`, `processed`, `skipped`, `n_tracking_failed` and
    `wall_seconds` (the night's wall time, summary.json `seconds`); from the per-image
    `rows` (`gani.stages.image_rows`), the mean tuning cost over the done images
    (`mean_tune_seconds`: the mean tuning time of one image, `mean_peak_mem_bytes`),
    which summary.json does not hold (it is the same on every machine)."""
    done = [r for r in rows if r.get("state") == "done"]
    timing = {k: _mean(r.get(k) for r in done) for k in TIMING_KEYS}
    metrics = mlflow_metrics({k: v for k, v in timing.items() if v is not None}, "mean_")
    metrics.update(mlflow_metrics(summary.get("means") or {}, "mean_"))
    metrics.update(mlflow_metrics(summary.get("e4e_means") or {}, "e4e_mean_"))
    metrics.update({f"n_{k}": v for k, v in (summary.get("counts") or {}).items()})
    for k in ("processed", "skipped"):
        if k in summary:
            metrics[k] = summary[k]
    if "seconds" in summary:
        metrics["wall_seconds"] = summary["seconds"]
    metrics["n_tracking_failed"] = len(summary.get("tracking_failed") or [])
    return metrics


def experiment_name(template: str, dataset: str, profile: str) -> str:
    return template.format(dataset=dataset, profile=profile)


def _mean(values: Iterable[Any]) -> Optional[float]:
    """The mean of the numbers among `values` (None, bools and NaN skipped), or None."""
    nums = [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return sum(nums) / len(nums) if nums else None
