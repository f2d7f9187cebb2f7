"""MLflow tracking of a run: one experiment per dataset/profile, one parent run per logical
run, one nested child run per image.

Everything goes through `MlflowClient` with explicit run ids (never the fluent active-run
stack, which is per thread and breaks under Prefect's thread pool). Works against the
embedded default (`sqlite:///mlflow.db`, artifacts in ./mlruns) and an `mlflow server`
(artifacts proxied to S3); the URI comes from `settings.tracking.uri`.

Parent run: tags (git commit, DVC data version, params hash, Prefect flow-run id(s),
dataset, profile, `gani.logical_run`), every setting as a flattened param, aggregate
metrics and per-image table (`images.json`, shown as a table in the UI), `summary.json`.

Child run (tag `mlflow.parentRunId`, `image_id`): the metrics (DESIGN §8 keys, plus e4e_*
for the encoder alone), the tuning loss curve as steps of `tune_loss`, and the artifacts:
`inputs/aligned.png`, `recon/e4e.png`, `recon/<method>.png`, `compare/side_by_side.png`,
`edits/grid.png`, `latent/latent.pt`, `latent/e4e_latent.pt`, `tuned/tuned.safetensors`, `metrics.json`,
`status.json`.

Logical run (what one parent run stands for). Key: (experiment, input, output root, params
hash) -> tag `gani.logical_run`. The output root keeps `.gani-tracking.json`: that key, the
tracking URI, the parent run id, the *scope* (ids of every image that one of the logical
run's flow runs had to process) and whether it finished.

- A flow run continues the logical run when that file says it is unfinished with the same
  key and URI; else, when MLflow has an unfinished parent (RUNNING / FAILED / KILLED) with
  the same key, it resumes the newest one; else it starts a new logical run. Continuing
  resumes the parent (status back to RUNNING, the Prefect flow-run id appended to the tag
  `prefect_flow_run_ids`, missing params added, changed ones left as they were) and adds
  this flow run's images to the scope. A finished logical run is never resumed: the next
  run (the next night) gets a new parent, and its scope is only what it processes.
- Reconcile (before the parent is closed): every image of the scope that is final on disk
  (status.json done / quarantined / failed with the current key) and has no complete child
  under the parent is logged now. So a run killed after some images were done, then
  re-run, ends with exactly the children an uninterrupted run would have had.
- The parent ends FINISHED (and the file says finished) only when every scope image is
  final and logged; otherwise it ends FAILED (or stays RUNNING when MLflow is unreachable)
  and the next run resumes and reconciles it.

Duplicate rule: the child of an image is the one active run under the parent with that
`image_id`. Logging an image again (a retried task, a resumed run, reconcile) keeps a
complete child (status FINISHED/FAILED, same `content_key` and `state` tags) untouched, and
replaces anything else (a child a kill left RUNNING, a child of an earlier attempt in
another state, an accidental duplicate): it is set KILLED and deleted, then a fresh child
is logged.

MLflow server outages never stop the night (`begin_tracking`, `reconcile` and
`close_tracking` never raise for MLflow): every call is a Prefect task retried on
transient faults (orchestration.retries, backoff); MLflow's own HTTP retries are shortened
(`HTTP_DEFAULTS`); a log task that fails for good leaves its image tracking-failed and trips
`TrackingGuard`, so later images are not sent until the server answers again. Down when
the run starts: no parent is opened, the images are processed anyway and the flow reports
`tracking: unavailable`; the scope is already in `.gani-tracking.json`, so the next run
opens the parent and reconcile logs them all. Down later: `tracking: incomplete`, the
parent is left FAILED or RUNNING, the next run resumes it and reconcile logs the rest. The
flow lists the images not logged in summary.json `tracking_failed` and warns.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from gani import faults

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
    _http_defaults(uri)
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



# MLflow's HTTP client retries each request 7 times with backoff factor 2 and a 120 s
# timeout (minutes per call) by default. The pipeline retries whole log tasks itself
# (orchestration.retries, exponential backoff), stops sending to a server that is down
# (TrackingGuard) and logs what was missed later (reconcile), so it shortens MLflow's own
# retries unless the environment sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _is_http(uri: str) -> bool:
    return str(uri).startswith(("http://", "https://"))


def _http_defaults(uri: str) -> None:
    if _is_http(uri):
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)


def _tag_filter(key: str, value: str) -> str:
    return f"tags.`{key}` = '{value}'"


@dataclass
class ChildRun:
    run_id: str
    status: str
    tags: dict[str, str]
    start_time: int = 0

    def complete(self, content_key: str, state: str) -> bool:
        """Fully logged (terminated) for this content and state."""
        return (self.status in ("FINISHED", "FAILED")
                and self.tags.get("content_key") == content_key
                and self.tags.get("state") == state)


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
        """Reopen an unfinished parent for one more flow run of its logical run."""
        from mlflow.entities import Param, RunTag

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
            if changed:  # params are immutable in MLflow: keep the first flow run's values
                new_tags["params_changed_on_resume"] = ",".join(changed)[:4900]
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000])
                                                for k, v in sorted(new_tags.items())])
            missing = [Param(k, str(v)) for k, v in sorted(params.items())
                       if k not in run.data.params]
            for i in range(0, len(missing), 100):
                self.client.log_batch(run_id, params=missing[i:i + 100])

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
        metrics["n_tracking_failed"] = len(summary.get("tracking_failed") or [])
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
                  artifacts: Mapping[str, str] = {}, state: str = "done") -> str:
        """Create the child run of `image_id` and log everything; returns its id.

        A complete child with the same content key and state is kept as it is (nothing is
        logged twice); any other child of the image under this parent is replaced (see the
        module doc). artifacts: {artifact name (layout.ARTIFACTS key): local file path}.
        """
        from mlflow.entities import Metric, RunTag

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


# --------------------------------------------------------------------------- server outages

PROBE_SECONDS = 30.0


class TrackingGuard:
    """Circuit breaker for one tracking URI (shared by the process's flow runs).

    After a log task failed for good on a transient fault (the server is down), images are
    not sent to MLflow (they are counted as tracking-failed and logged by reconcile) until
    a probe succeeds; a probe runs at most every `probe_seconds`: `GET <uri>/health` for an
    HTTP server, else the next log attempt itself. `usable(force=True)` probes now (used
    before reconcile). So a server that stays down costs one failed task, not one per image.
    """

    def __init__(self, uri: str, probe_seconds: float = PROBE_SECONDS):
        self.uri, self.probe_seconds = uri, probe_seconds
        self.down_since: Optional[float] = None
        self.last_try = 0.0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def usable(self, force: bool = False) -> bool:
        with self._lock:
            if self.down_since is None:
                return True
            now = time.monotonic()
            if not force and now - self.last_try < self.probe_seconds:
                return False
            self.last_try = now
        if not _is_http(self.uri):
            return True  # half-open: the next attempt is the probe
        ok = self.probe()
        if ok:
            self.succeeded()
        return ok

    def probe(self, timeout: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=timeout) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    def failed(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self.down_since is None:
                self.down_since = now
            self.last_try = now

    def succeeded(self) -> None:
        with self._lock:
            self.down_since = None


_GUARDS: dict[str, TrackingGuard] = {}


def guard_for(uri: str) -> TrackingGuard:
    with _LOCKS_GUARD:
        return _GUARDS.setdefault(uri, TrackingGuard(uri))


# --------------------------------------------------------------------------- logical run

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

    @property
    def scope(self) -> list[str]:
        return list(self.state.get("scope") or [])


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


# --------------------------------------------------------------------------- Prefect tasks

from prefect import task  # noqa: E402

from gani import io  # noqa: E402
from gani.config import Settings  # noqa: E402
from gani.stages import ImageItem, Layout, image_rows  # noqa: E402
from gani.stages.layout import ARTIFACTS, STATES  # noqa: E402
from gani.stages.plan import result_hash  # noqa: E402

from .pipeline import TASK_DEFAULTS, is_transient, with_retries  # noqa: E402


def _parent_tags(settings: Settings, dataset: str, input_uri: str, output_uri: str,
                 flow_run_id: str, n_images: int, n_todo: int, logical_run: str) -> dict:
    return {"dataset": dataset, "profile": settings.profile, "input": redact_uri(input_uri),
            "output": redact_uri(output_uri), "git_commit": git_commit(),
            "dvc_data_version": dvc_data_version(), "params_hash": result_hash(settings),
            "prefect_flow_run_id": flow_run_id, "tune_method": settings.tune.method,
            "n_images": str(n_images), "n_to_process": str(n_todo),
            "gani.logical_run": logical_run}


@task(name="start-tracking", **TASK_DEFAULTS)
def start_tracking_task(settings: Settings, dataset: str, input_uri: str, output_uri: str,
                        flow_run_id: str, n_images: int, n_todo: int,
                        resume_run_id: Optional[str] = None, search: bool = True) -> dict:
    """The parent run of this flow run's logical run: `resume_run_id` when it is still
    unfinished, else (with `search`) the newest unfinished parent with the same logical-run
    key, else a new one. Returns {"run_id", "resumed", "previous_finished"}."""
    tracker = Tracker(settings.tracking.uri)
    name = experiment_name(settings.tracking.experiment, dataset, settings.profile)
    exp = tracker.experiment_id(name)
    key = logical_run_key(name, input_uri, output_uri, result_hash(settings))
    tags = _parent_tags(settings, dataset, input_uri, output_uri, flow_run_id, n_images,
                        n_todo, key)
    params = flatten(settings.model_dump(mode="json"))
    if "tracking.uri" in params:  # a second guard: settings already refuse passwords in it
        params["tracking.uri"] = redact_uri(params["tracking.uri"])
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


def begin_tracking(settings: Settings, dataset: str, input_uri: str, output_uri: str,
                   flow_run_id: str, items: list[ImageItem], todo: list[ImageItem]
                   ) -> TrackingRun:
    """Continue or start the logical run (see the module doc) and open its parent run.

    Never raises for MLflow: when the server cannot be reached (after the task's retries)
    the run goes on untracked, `error` says why, and the next run logs its images."""
    uri = settings.tracking.uri
    name = experiment_name(settings.tracking.experiment, dataset, settings.profile)
    key = logical_run_key(name, input_uri, output_uri, result_hash(settings))
    old = read_state(output_uri)
    same = old.get("logical_run") == key and old.get("tracking_uri") == redact_uri(uri)
    continuing = same and not old.get("finished")
    todo_ids = {i.image_id for i in todo}
    scope = set(old.get("scope") or []) | todo_ids if continuing else set(todo_ids)
    runs = (list(old.get("flow_runs") or []) if continuing else []) + [flow_run_id]
    state = {"logical_run": key, "tracking_uri": redact_uri(uri), "experiment": name,
             "input": redact_uri(input_uri), "params_hash": result_hash(settings),
             "parent_run_id": old.get("parent_run_id") if continuing else None,
             "scope": sorted(scope), "flow_runs": runs[-50:], "finished": False}
    write_state(output_uri, state)  # before MLflow: the scope survives an outage
    track = TrackingRun(uri=uri, output_uri=output_uri, state=state)
    try:
        opened = with_retries(start_tracking_task, settings)(
            settings, dataset, input_uri, output_uri, flow_run_id, len(items), len(todo),
            resume_run_id=state["parent_run_id"], search=not (same and old.get("finished")))
    except Exception as exc:  # noqa: BLE001 - the images matter more than their tracking
        track.error = f"{type(exc).__name__}: {exc}"[:500]
        guard_for(uri).failed()
        print(f"warning: MLflow at {redact_uri(uri)} is unavailable ({track.error}); the "
              f"images are processed and kept on disk, summary.json lists them under "
              f"tracking_failed, and the next run logs them")
        return track
    guard_for(uri).succeeded()
    if opened["previous_finished"]:  # killed between closing the parent and the state file
        state["scope"] = sorted(todo_ids)
        state["flow_runs"] = [flow_run_id]
    track.parent, track.resumed = opened["run_id"], opened["resumed"]
    state["parent_run_id"] = track.parent
    write_state(output_uri, state)
    return track


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


def _final_state(layout: Layout, item: ImageItem) -> Optional[str]:
    status = layout.read_status(item.image_id) or {}
    if status.get("key") == item.key and status.get("state") in STATES:
        return status["state"]
    return None


def reconcile(track: TrackingRun, items: list[ImageItem], settings: Settings) -> dict:
    """Log every final image of the scope that has no complete child under the parent.

    Returns {"tracking_failed": [ids final on disk but not logged], "pending": [ids of the
    scope not final yet], "logged": n logged now}. Never raises."""
    layout = Layout(track.output_uri)
    scope = set(track.scope)
    final: dict[str, tuple[ImageItem, str]] = {}
    pending = []
    for item in items:
        if item.image_id not in scope:
            continue
        state = _final_state(layout, item)
        if state is None:
            pending.append(item.image_id)
        else:
            final[item.image_id] = (item.model_copy(update={"state": state}), state)
    out = {"tracking_failed": sorted(final), "pending": sorted(pending), "logged": 0}
    if not track.parent:
        return out
    guard = guard_for(track.uri)
    if not guard.usable(force=True):
        out["tracking_failed"] = sorted(set(final) - track.logged)
        print("warning: MLflow is still unreachable; reconcile skipped")
        return out
    try:
        children = with_retries(_children_task, settings)(settings, track.parent)
    except Exception as exc:  # noqa: BLE001
        guard.failed()
        out["tracking_failed"] = sorted(set(final) - track.logged)
        print(f"warning: MLflow: could not list the child runs ({exc}); reconcile skipped")
        return out
    todo = [item for image_id, (item, state) in sorted(final.items())
            if not (len(children.get(image_id, [])) == 1
                    and ChildRun(**children[image_id][0]).complete(item.key, state))]
    failed = []
    if todo:
        print(f"MLflow reconcile: {len(todo)} image(s) final on disk without a complete "
              f"child run under {track.parent}: logging them")
    log = with_retries(log_image_task, settings)
    width = max(1, settings.orchestration.max_concurrency)
    for i in range(0, len(todo), width):
        window = todo[i:i + width]
        if not guard.usable():
            failed += [it.image_id for it in window]
            continue
        futures = [(it, log.submit(item=it, output_uri=track.output_uri, settings=settings,
                                   parent_run_id=track.parent)) for it in window]
        for it, fut in futures:
            try:
                fut.result()
                track.logged.add(it.image_id)
                out["logged"] += 1
                guard.succeeded()
            except Exception as exc:  # noqa: BLE001
                failed.append(it.image_id)
                if is_transient(exc):
                    guard.failed()
    out["tracking_failed"] = sorted(failed)
    return out


@task(name="list-child-runs", **TASK_DEFAULTS)
def _children_task(settings: Settings, parent_run_id: str) -> dict:
    return {i: [vars(r) for r in rs]
            for i, rs in Tracker(settings.tracking.uri).children(parent_run_id).items()}


@task(name="finish-tracking", **TASK_DEFAULTS)
def finish_tracking_task(settings: Settings, parent_run_id: str, summary: dict,
                         items: list[ImageItem], output_uri: str,
                         status: str = "FINISHED") -> None:
    """Aggregate metrics, the per-image table and summary.json on the parent run."""
    tracker = Tracker(settings.tracking.uri)
    rows = image_rows(items, Layout(output_uri))
    children = tracker.child_runs(parent_run_id)
    for row in rows:
        row["child_run_id"] = children.get(row["image_id"])
    tracker.finish_parent(parent_run_id, summary, rows, status=status)


def close_tracking(track: TrackingRun, settings: Settings, summary: dict,
                   items: list[ImageItem], complete: bool) -> str:
    """Close the parent: FINISHED when the logical run is `complete` (every scope image
    final and logged), else FAILED so that the next run resumes it. Returns the tracking
    state for summary.json: ok | incomplete. Never raises."""
    if not track.parent:
        return "unavailable"
    status = "FINISHED" if complete else "FAILED"
    try:
        with_retries(finish_tracking_task, settings)(settings, track.parent, summary, items,
                                                     track.output_uri, status=status)
    except Exception as exc:  # noqa: BLE001
        guard_for(track.uri).failed()
        print(f"warning: MLflow: could not close the parent run {track.parent} ({exc}); "
              f"the next run resumes it")
        return "incomplete"
    if complete:
        track.state["finished"] = True
        write_state(track.output_uri, track.state)
        return "ok"
    return "incomplete"
