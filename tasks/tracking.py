"""MLflow tracking of a run: one experiment per dataset/profile, a parent run per flow run,
one nested child run per image.

Everything goes through `MlflowClient` with explicit run ids (never the fluent active-run
stack, which is per thread and breaks under Prefect's thread pool). Works against the
embedded default (`sqlite:///mlflow.db`, artifacts in ./mlruns) and an `mlflow server`
(artifacts proxied to S3); the URI comes from `settings.tracking.uri`.

Parent run: tags (git commit, DVC data version, params hash, Prefect flow-run id, dataset,
profile), every setting as a flattened param, aggregate metrics and per-image table
(`images.json`, shown as a table in the UI), `summary.json`.

Child run (tag `mlflow.parentRunId`, `image_id`): the metrics (DESIGN §8 keys, plus e4e_*
for the encoder alone), the tuning loss curve as steps of `tune_loss`, and the artifacts:
`inputs/aligned.png`, `recon/e4e.png`, `recon/<method>.png`, `compare/side_by_side.png`,
`edits/grid.png`, `latent/latent.pt`, `latent/e4e_latent.pt`, `tuned/tuned.safetensors`, `metrics.json`,
`status.json`.

Duplicate rule: a child run is identified by (parent run, image id). Logging an image again
under the same parent (a retried task, a resumed shard) reuses that child run.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

PARENT_KIND = "dataset-run"
CHILD_KIND = "image"

# which artifact of the per-image folder goes where in the child run
CHILD_ARTIFACTS = {
    "aligned": "inputs",
    "e4e_latent": "latent",
    "e4e": "recon",
    "recon": "recon",
    "compare": "compare",
    "edits": "edits",
    "latent": "latent",
    "tuned": "tuned",
    "metrics": "",
    "e4e_metrics": "",
    "status": "",
    "tune_info": "",
}
CHILD_NAMES = {"compare": "side_by_side.png", "edits": "grid.png"}

_SQLITE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _client(uri: str):
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


# --------------------------------------------------------------------------- helpers

def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'tune.steps': '30', ...}: nested settings as MLflow params (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            out[name] = text[:6000]
    return out


def redact_uri(uri: str) -> str:
    """Drop any user:password@ part and query string from a URI before it is logged."""
    uri = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", str(uri))
    return uri.split("?", 1)[0]


def git_commit(cwd: str | os.PathLike = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10)
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10)
        return sha + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dvc_data_version(dvc_file: str | os.PathLike = "data.dvc") -> str:
    """The md5 of the DVC-tracked data/ recorded in data.dvc ('none' when absent)."""
    p = Path(dvc_file)
    if not p.is_file():
        return "none"
    import yaml

    try:
        data = yaml.safe_load(p.read_text()) or {}
        outs = data.get("outs") or [{}]
        return str(outs[0].get("md5") or "unknown")
    except (yaml.YAMLError, AttributeError, IndexError):
        return "unknown"


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
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


# --------------------------------------------------------------------------- tracker

class Tracker:
    """Thin wrapper around MlflowClient for the pipeline's run structure."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client = _client(uri)
        self.lock = _lock_for(uri)

    # ---------------------------------------------------------------- experiment / parent

    def experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        with self.lock:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                return exp.experiment_id
            try:
                return self.client.create_experiment(name, tags={"gani.kind": "dataset"})
            except MlflowException:  # created meanwhile by another worker
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                return exp.experiment_id

    def start_parent(self, experiment_id: str, run_name: str, tags: Mapping[str, str],
                     params: Mapping[str, str]) -> str:
        from mlflow.entities import Param

        with self.lock:
            run = self.client.create_run(experiment_id, run_name=run_name,
                                         tags={"gani.kind": PARENT_KIND, **tags})
            rid = run.info.run_id
            items = [Param(k, str(v)) for k, v in sorted(params.items())]
            for i in range(0, len(items), 100):
                self.client.log_batch(rid, params=items[i:i + 100])
        return rid

    def finish_parent(self, run_id: str, summary: Mapping[str, Any],
                      rows: list[Mapping[str, Any]], status: str = "FINISHED") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = {f"mean_{k}": v for k, v in (summary.get("means") or {}).items()}
        metrics.update({f"e4e_mean_{k}": v for k, v in (summary.get("e4e_means") or {}).items()})
        metrics.update({f"n_{k}": v for k, v in (summary.get("counts") or {}).items()})
        for k in ("processed", "skipped", "seconds"):
            if k in summary:
                metrics[k] = summary[k]
        batch = [Metric(k, v, now, 0) for k, v in sorted(_finite(metrics).items())]
        columns = ["image_id", "state", "reason", "l2", "ms_ssim", "lpips", "id",
                   "locality_l2", "locality_lpips", "seconds", "peak_mem_bytes", "e4e_l2",
                   "child_run_id"]
        table = {c: [r.get(c) for r in rows] for c in columns}
        with self.lock:
            if batch:
                self.client.log_batch(run_id, metrics=batch)
            if rows:
                self.client.log_table(run_id, data=table, artifact_file="images.json")
            self.client.log_dict(run_id, dict(summary), "summary.json")
            self.client.set_terminated(run_id, status)

    def fail_parent(self, run_id: str) -> None:
        with self.lock:
            self.client.set_terminated(run_id, "FAILED")

    # ---------------------------------------------------------------- children

    def child_runs(self, parent_run_id: str) -> dict[str, str]:
        """{image_id: run_id} of the child runs already under `parent_run_id`."""
        run = self.client.get_run(parent_run_id)
        exp = run.info.experiment_id
        out: dict[str, str] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                max_results=1000, page_token=token)
            for r in page:
                image_id = r.data.tags.get("image_id")
                if image_id and image_id not in out:
                    out[image_id] = r.info.run_id
            token = page.token
            if not token:
                return out

    def log_image(self, parent_run_id: str, image_id: str, *, tags: Mapping[str, str],
                  metrics: Mapping[str, Any], loss_curve: Iterable[float] = (),
                  artifacts: Mapping[str, str] = {}, state: str = "done") -> str:
        """Create (or reuse) the child run of `image_id` and log everything; returns its id.

        artifacts: {artifact name (layout.ARTIFACTS key): local file path}.
        """
        from mlflow.entities import Metric, RunTag

        with self.lock:
            parent = self.client.get_run(parent_run_id)
            exp = parent.info.experiment_id
            existing = self.client.search_runs(
                [exp], filter_string=(f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                      f"tags.image_id = '{image_id}'"), max_results=1)
            if existing:
                rid = existing[0].info.run_id
            else:
                rid = self.client.create_run(
                    exp, run_name=image_id,
                    tags={"mlflow.parentRunId": parent_run_id, "image_id": image_id,
                          "gani.kind": CHILD_KIND}).info.run_id
            now = int(time.time() * 1000)
            batch = [Metric(k, v, now, 0) for k, v in sorted(_finite(metrics).items())]
            batch += [Metric("tune_loss", float(v), now, i)
                      for i, v in enumerate(loss_curve) if v is not None and math.isfinite(v)]
            run_tags = [RunTag(k, str(v)[:5000]) for k, v in {**tags, "state": state}.items()]
            for i in range(0, max(len(batch), 1), 1000):
                self.client.log_batch(rid, metrics=batch[i:i + 1000],
                                      tags=run_tags if i == 0 else ())
            for name, path in artifacts.items():
                folder = CHILD_ARTIFACTS.get(name, "")
                target_name = CHILD_NAMES.get(name)
                if target_name is None and name == "recon":
                    target_name = f"{tags.get('method', 'tuned')}{Path(path).suffix}"
                if target_name and Path(path).name != target_name:
                    with tempfile.TemporaryDirectory() as tmp:
                        dst = Path(tmp) / target_name
                        dst.write_bytes(Path(path).read_bytes())
                        self.client.log_artifact(rid, str(dst), folder or None)
                else:
                    self.client.log_artifact(rid, path, folder or None)
            self.client.set_terminated(rid, "FAILED" if state == "failed" else "FINISHED")
        return rid


def experiment_name(template: str, dataset: str, profile: str) -> str:
    return template.format(dataset=dataset, profile=profile)


# --------------------------------------------------------------------------- Prefect tasks

from prefect import task  # noqa: E402

from gani import io  # noqa: E402
from gani.config import Settings  # noqa: E402
from gani.stages import ImageItem, Layout, image_rows  # noqa: E402
from gani.stages.layout import ARTIFACTS  # noqa: E402
from gani.stages.plan import result_hash  # noqa: E402

from .pipeline import TASK_DEFAULTS  # noqa: E402


@task(name="start-tracking", **TASK_DEFAULTS)
def start_tracking_task(settings: Settings, dataset: str, input_uri: str, output_uri: str,
                        flow_run_id: str, n_images: int, n_todo: int) -> str:
    """The experiment of this dataset/profile and a new parent run for this flow run."""
    tracker = Tracker(settings.tracking.uri)
    exp = tracker.experiment_id(experiment_name(settings.tracking.experiment, dataset,
                                                settings.profile))
    tags = {"dataset": dataset, "profile": settings.profile, "input": redact_uri(input_uri),
            "output": redact_uri(output_uri), "git_commit": git_commit(),
            "dvc_data_version": dvc_data_version(), "params_hash": result_hash(settings),
            "prefect_flow_run_id": flow_run_id, "tune_method": settings.tune.method,
            "n_images": str(n_images), "n_to_process": str(n_todo)}
    params = flatten(settings.model_dump(mode="json"))
    name = f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return tracker.start_parent(exp, name, tags, params)


@task(name="log-image", task_run_name="log-{item.image_id}", **TASK_DEFAULTS)
def log_image_task(item: ImageItem, output_uri: str, settings: Settings,
                   parent_run_id: str) -> str:
    """One nested MLflow run for the image: its metrics, loss curve and artifacts."""
    layout = Layout(output_uri)
    status = layout.read_status(item.image_id) or {}
    state = status.get("state", item.state)
    metrics: dict[str, Any] = {}
    curve: list = []
    if state == "done":
        metrics = io.read_json(layout.uri(item.image_id, "metrics"), default={}) or {}
        e4e = io.read_json(layout.uri(item.image_id, "e4e_metrics"), default={}) or {}
        metrics.update({f"e4e_{k}": v for k, v in e4e.items()})
        if settings.tracking.log_loss_curve:
            info = io.read_json(layout.uri(item.image_id, "tune_info"), default={}) or {}
            curve = info.get("loss_curve") or []
    tags = {"image_id": item.image_id, "source": item.rel[:500], "content_key": item.key,
            "method": settings.tune.method, "reason": status.get("reason") or ""}
    with tempfile.TemporaryDirectory(prefix="gani-mlflow-") as tmp:
        files: dict[str, str] = {}
        for name in ARTIFACTS:
            try:
                data = io.read_bytes(layout.uri(item.image_id, name))
            except FileNotFoundError:
                continue
            local = Path(tmp) / ARTIFACTS[name][1]
            local.write_bytes(data)
            files[name] = str(local)
        return Tracker(settings.tracking.uri).log_image(
            parent_run_id, item.image_id, tags=tags, metrics=metrics, loss_curve=curve,
            artifacts=files, state=state)


@task(name="finish-tracking", **TASK_DEFAULTS)
def finish_tracking_task(settings: Settings, parent_run_id: str, summary: dict,
                         items: list[ImageItem], output_uri: str) -> None:
    """Aggregate metrics, the per-image table and summary.json on the parent run."""
    tracker = Tracker(settings.tracking.uri)
    rows = image_rows(items, Layout(output_uri))
    children = tracker.child_runs(parent_run_id)
    for row in rows:
        row["child_run_id"] = children.get(row["image_id"])
    tracker.finish_parent(parent_run_id, summary, rows)
