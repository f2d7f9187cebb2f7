"""The dataset flows: plan -> shards -> per-image DAG -> summary, tracked in MLflow.

    gani-invert        (`invert_dataset`, the nightly entry point): resolves the settings,
                       removes temporary files a killed run left under the output root,
                       lists the dataset, skips images finished with the same content key,
                       opens (or resumes) the MLflow parent run of the logical run, splits
                       the rest into shards of `orchestration.shard_size`, runs them, logs
                       the images that still lack a child run (reconcile), writes
                       summary.json and closes the parent run. Run as a deployment with more than one shard, it
                       launches one `gani-invert-shard` deployment run per shard
                       (`run_deployment`) so GPU workers share the night; otherwise it runs
                       the shards in-process as subflows.
    gani-invert-shard  (`invert_shard`): the per-image DAG over one shard
                       align -> encode -> tune (batches of tune.batch_size, one GPU slot each)
                       -> edit -> evaluate -> log, at most orchestration.max_concurrency
                       images in flight (ThreadPoolTaskRunner(max_workers) when run in-process).

Crash safety: every file is written atomically (`gani.io.write_bytes`), a stage or image
is only marked finished after its outputs, so a run killed at any point (SIGKILL, power
loss) and run again redoes only unfinished work, leaves no partial file behind (stale
temporary files are removed at the start) and ends with one child run per image under one
FINISHED parent (`tasks.tracking`: logical runs, reconcile).

MLflow outages never stop the night: log tasks are retried (orchestration.retries, backoff),
a server that stays down trips `TrackingGuard` (no more waiting per image), the images that
could not be logged are listed in summary.json `tracking_failed` (with `tracking`: ok |
incomplete | unavailable | disabled) and the next run's reconcile logs them.

Entry points for Python and the CLI: `run_invert(input_uri, output_uri, settings)` and
`run_demo(settings)`.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections import deque
from typing import Any, Optional

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from prefect import flow  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from gani import io  # noqa: E402
from gani.config import Settings, check_uris, load_settings, resolve  # noqa: E402
from gani.stages import ImageItem, Layout, finalize, get_runtime, shards  # noqa: E402
from gani.stages.summary import write_summary  # noqa: E402
from gani.stages.plan import result_hash  # noqa: E402
from gani.stages.runtime import cpu_threads  # noqa: E402
from tasks.pipeline import (align_task, edit_task, encode_task, evaluate_task,  # noqa: E402
                            failure_reason, is_transient, plan_task, summarize_task,
                            tune_task, with_retries)
from tasks.tracking import (begin_tracking, close_tracking, guard_for,  # noqa: E402
                            log_image_task, reconcile, redact_uri)

SHARD_DEPLOYMENT = "gani-invert-shard/shard"


# --------------------------------------------------------------------------- settings

def resolve_settings(settings: Optional[dict] = None, profile: Optional[str] = None,
                     overrides: Optional[list[str]] = None,
                     params_path: str = "params.yaml") -> Settings:
    """A resolved Settings dict (from run_invert), else params.yaml + profile; then --set."""
    if settings is not None:
        name = settings.get("profile", "demo")
        return resolve({**settings, "profiles": {name: {}}}, name, overrides or [])
    return load_settings(params_path, profile, overrides or [])


def dataset_name_of(input_uri: str) -> str:
    name = str(input_uri).rstrip("/").rsplit("/", 1)[-1] or "dataset"
    return io.safe_id(name, keep_extension=True)


def _runner(settings: Settings) -> ThreadPoolTaskRunner:
    return ThreadPoolTaskRunner(max_workers=settings.orchestration.max_concurrency)


# --------------------------------------------------------------------------- fan-out

class _FanOut:
    """Submits each image's tasks as soon as their inputs are ready (no thread ever blocks
    waiting for an upstream task), forms tune batches, and turns task failures into
    failed images."""

    def __init__(self, items: list[ImageItem], output_uri: str, settings: Settings,
                 data_dir: str, parent_run_id: Optional[str], label: str = ""):
        self.s, self.out, self.data_dir, self.parent = settings, output_uri, data_dir, parent_run_id
        self.layout = Layout(output_uri)
        self.queue = deque(items)
        self.total = len(items)
        self.window = max(settings.orchestration.max_concurrency, settings.tune.batch_size)
        self.running: dict[cf.Future, tuple[Any, str, list[ImageItem], dict]] = {}
        self.encoded: list[ImageItem] = []
        self.in_flight = 0    # images between align and the end of their log task
        self.front = 0        # images in align / encode
        self.finished: list[ImageItem] = []
        self.tracking_failed: list[str] = []
        self.tracking_error: Optional[str] = None   # why the last image was not logged
        self.logged: list[str] = []
        self.guard = guard_for(settings.tracking.uri)
        self.label = label
        t = {name: with_retries(fn, settings) for name, fn in (
            ("align", align_task), ("encode", encode_task), ("tune", tune_task),
            ("edit", edit_task), ("evaluate", evaluate_task), ("log", log_image_task))}
        self.t = t
        self.t0 = time.perf_counter()

    # ---------------------------------------------------------------- submit
    def _submit(self, stage: str, items: list[ImageItem], meta: Optional[dict] = None) -> None:
        common = {"output_uri": self.out, "settings": self.s}
        if stage == "align":
            fut = self.t[stage].submit(item=items[0], **common)
        elif stage == "tune":
            fut = self.t[stage].submit(items=items, data_dir=self.data_dir, **common)
        elif stage == "log":
            fut = self.t[stage].submit(item=items[0], parent_run_id=self.parent, **common)
        else:
            fut = self.t[stage].submit(item=items[0], data_dir=self.data_dir, **common)
        self.running[fut.wrapped_future] = (fut, stage, items, meta or {})

    def _end(self, item: ImageItem, failure: Optional[tuple[str, BaseException]] = None) -> None:
        """An image left the DAG: write its status (failures), log it, count it.

        When the output store does not take the status.json (down past the retries), the
        image stays failed (or quarantined) in memory only, is not logged, and the run goes
        on: with no final status on disk the next run redoes it."""
        try:
            if failure is not None:
                stage, exc = failure
                reason = failure_reason(stage, exc)
                item = item.model_copy(update={"state": "failed", "reason": reason})
                item = finalize(item, self.layout, "failed", reason,
                                detail=f"{type(exc).__name__}: {exc}"[:500])
            elif item.state in ("quarantined", "failed"):
                item = finalize(item, self.layout)
        except Exception as exc:  # noqa: BLE001 - one image's status must not stop the run
            if item.state not in ("quarantined", "failed"):
                item = item.model_copy(update={"state": "failed", "reason": "storage_error"})
            print(f"warning: could not write the status of {item.image_id} "
                  f"({type(exc).__name__}: {exc}); it counts as {item.state} in this run "
                  f"and the next run redoes it")
            self._done(item, from_disk=False)
            return
        if self.parent and self.s.tracking.enabled:
            if self.guard.usable():
                self._submit("log", [item])
                return
            self.tracking_failed.append(item.image_id)  # server down: reconcile logs it later
            self.tracking_error = self.tracking_error or (
                "MLflow server unreachable (a log task failed; waiting for a health probe)")
        self._done(item)

    def _done(self, item: ImageItem, from_disk: bool = True) -> None:
        status: dict = {}
        if from_disk:
            try:
                status = self.layout.read_status(item.image_id) or {}
            except Exception as exc:  # noqa: BLE001 - the store is down: keep what we know
                print(f"warning: could not read the status of {item.image_id} "
                      f"({type(exc).__name__}: {exc}); keeping its state in memory")
                if item.state not in ("done", "quarantined", "failed"):
                    item = item.model_copy(update={"state": "failed",
                                                   "reason": "storage_error"})
        state = status.get("state", item.state)
        reason = status.get("reason") if status else item.reason
        self.finished.append(item.model_copy(update={"state": state, "reason": reason}))
        self.in_flight -= 1
        n = len(self.finished)
        took = time.perf_counter() - self.t0
        print(f"{self.label}[{n}/{self.total}] {item.image_id}: {state}"
              + (f" ({reason})" if reason else "") + f"  ({took:.0f}s elapsed)")

    # ---------------------------------------------------------------- results
    def _handle(self, fut, stage: str, items: list[ImageItem], meta: dict) -> None:
        try:
            state = fut.wrapped_future.result()   # the task's final State (return_type="state")
        except BaseException as exc:  # noqa: BLE001 - the engine itself failed
            state, exc_ = None, exc
        if state is None or not state.is_completed():
            exc = state.result(raise_on_failure=False) if state is not None else exc_
            if not isinstance(exc, BaseException):
                exc = RuntimeError(str(getattr(state, "message", "task failed")))
            if stage == "log":
                self.tracking_failed.append(items[0].image_id)
                self.tracking_error = f"{type(exc).__name__}: {exc}"[:300]
                if is_transient(exc):
                    self.guard.failed()
                print(f"warning: MLflow logging failed for {items[0].image_id}: {exc}")
                self._done(items[0])
            elif stage == "tune" and len(items) > 1:
                for item in items:  # one bad image must not fail its batch mates
                    self._submit("tune", [item], {"single": True})
            else:
                for item in items:
                    if stage in ("align", "encode"):
                        self.front -= 1
                    self._end(item, (stage, exc))
            return
        result = state.result()
        if stage == "align":
            if result.state != "pending":
                self.front -= 1
                self._end(result)
            else:
                self._submit("encode", [result])
        elif stage == "encode":
            self.front -= 1
            if result.state != "pending":
                self._end(result)
            else:
                self.encoded.append(result)
        elif stage == "tune":
            for item in result:
                if item.state != "pending":
                    self._end(item)
                else:
                    self._submit("edit", [item])
        elif stage == "edit":
            if result.state != "pending":
                self._end(result)
            else:
                self._submit("evaluate", [result])
        elif stage == "evaluate":
            self._end(result)
        elif stage == "log":
            self.guard.succeeded()
            self.logged.append(items[0].image_id)
            self._done(items[0])

    # ---------------------------------------------------------------- loop
    def run(self) -> list[ImageItem]:
        bs = self.s.tune.batch_size
        while self.queue or self.running or self.encoded:
            while self.queue and self.in_flight < self.window:
                self.in_flight += 1
                self.front += 1
                self._submit("align", [self.queue.popleft()])
            while self.encoded and (len(self.encoded) >= bs or (
                    self.front == 0 and (not self.queue or self.in_flight >= self.window))):
                batch, self.encoded = self.encoded[:bs], self.encoded[bs:]
                self._submit("tune", batch)
            if not self.running:
                continue
            done, _ = cf.wait(list(self.running), return_when=cf.FIRST_COMPLETED)
            for f in done:
                fut, stage, items, meta = self.running.pop(f)
                self._handle(fut, stage, items, meta)
        return self.finished


# --------------------------------------------------------------------------- flows

@flow(name="gani-invert-shard", log_prints=True)
def invert_shard(input_uri: str, output_uri: str, settings: dict,
                 images: Optional[list[str]] = None, parent_run_id: Optional[str] = None,
                 data_dir: str = "data", label: str = "") -> dict:
    """The per-image DAG over `images` (source URIs; None = the whole dataset)."""
    s = resolve_settings(settings)
    items = with_retries(plan_task, s)(input_uri, output_uri, s, data_dir, images)
    todo = [i for i in items if not i.skipped]
    fan = _FanOut(todo, output_uri, s, data_dir, parent_run_id, label)
    with cpu_threads(s):
        finished = fan.run() if todo else []
    counts: dict[str, int] = {}
    for item in finished:
        counts[item.state] = counts.get(item.state, 0) + 1
    return {"processed": len(finished), "skipped": len(items) - len(todo), "counts": counts,
            "logged": sorted(fan.logged), "tracking_failed": sorted(fan.tracking_failed),
            "tracking_error": fan.tracking_error}


def _in_deployment() -> bool:
    try:
        from prefect.runtime import deployment

        return deployment.id is not None
    except Exception:  # noqa: BLE001
        return False


def _flow_run_id() -> str:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "")
    except Exception:  # noqa: BLE001
        return ""


def _run_shards_as_deployments(groups, input_uri, output_uri, s, parent_run_id, data_dir,
                               shard_deployment: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    runs = []
    for k, group in enumerate(groups):
        run = run_deployment(
            shard_deployment, timeout=0, flow_run_name=f"shard-{k + 1}-of-{len(groups)}",
            parameters={"input_uri": input_uri, "output_uri": output_uri,
                        "settings": s.model_dump(mode="json"),
                        "images": [i.source for i in group], "parent_run_id": parent_run_id,
                        "data_dir": data_dir, "label": f"shard {k + 1}/{len(groups)} "})
        runs.append(run.id)
    print(f"launched {len(runs)} shard runs of {shard_deployment}; waiting for them")
    pending = set(runs)
    with get_client(sync_client=True) as client:
        while pending:
            time.sleep(5)
            for rid in list(pending):
                fr = client.read_flow_run(rid)
                if fr.state is not None and fr.state.is_final():
                    pending.discard(rid)
                    print(f"shard run {fr.name}: {fr.state.name}")


@flow(name="gani-invert", log_prints=True)
def invert_dataset(input_uri: str, output_uri: str, profile: Optional[str] = None,
                   overrides: Optional[list[str]] = None, settings: Optional[dict] = None,
                   dataset_name: Optional[str] = None, params_path: str = "params.yaml",
                   data_dir: str = "data", shard_deployment: Optional[str] = SHARD_DEPLOYMENT
                   ) -> dict:
    """Invert every image under `input_uri` into `output_uri`; returns the run summary."""
    t0 = time.perf_counter()
    check_uris(input_uri=input_uri, output_uri=output_uri)
    s = resolve_settings(settings, profile, overrides, params_path)
    dataset = dataset_name or dataset_name_of(input_uri)
    stale = io.remove_stale_temp(output_uri)
    if stale:
        print(f"removed {len(stale)} temporary file(s) left by a killed run under "
              f"{output_uri}")
    items = with_retries(plan_task, s)(input_uri, output_uri, s, data_dir)
    todo = [i for i in items if not i.skipped]
    print(f"dataset {dataset!r}: {len(items)} images, {len(items) - len(todo)} already "
          f"finished with the same inputs and parameters, {len(todo)} to process "
          f"(profile {s.profile}, tune.method {s.tune.method}, {s.tune.steps} steps)")
    if todo:
        rt = get_runtime(s, data_dir)  # fail fast on a missing/corrupt checkpoint
        _ = (rt.G, rt.encoder, rt.nets, rt.edits)
    track = None
    if s.tracking.enabled:
        track = begin_tracking(s, dataset, input_uri, output_uri, _flow_run_id(), items, todo)
    parent = track.parent if track else None
    try:
        groups = shards(todo, s.orchestration.shard_size) if todo else []
        if len(groups) > 1 and shard_deployment and _in_deployment():
            _run_shards_as_deployments(groups, input_uri, output_uri, s, parent, data_dir,
                                       shard_deployment)
        else:
            for k, group in enumerate(groups):
                label = f"shard {k + 1}/{len(groups)} " if len(groups) > 1 else ""
                done = invert_shard.with_options(
                    task_runner=_runner(s), flow_run_name=f"shard-{k + 1}-of-{len(groups)}")(
                    input_uri, output_uri, s.model_dump(mode="json"),
                    images=[i.source for i in group], parent_run_id=parent,
                    data_dir=data_dir, label=label)
                if track is not None and isinstance(done, dict):
                    track.logged.update(done.get("logged") or [])
                    track.error = done.get("tracking_error") or track.error
        tracking: dict[str, Any] = {"tracking": "disabled", "tracking_failed": [],
                                    "tracking_error": None}
        complete = False
        if track is not None:
            rec = reconcile(track, items, s)
            complete = bool(parent) and not rec["tracking_failed"] and not rec["pending"]
            tracking = {"tracking": "ok" if complete else
                        "incomplete" if parent else "unavailable",
                        "tracking_failed": rec["tracking_failed"],
                        "tracking_error": None if complete else track.error}
        summary = with_retries(summarize_task, s)(items, output_uri, s, {
            "dataset": dataset, "input": redact_uri(input_uri), "processed": len(todo),
            "skipped": len(items) - len(todo), "seconds": round(time.perf_counter() - t0, 1),
            "prefect_flow_run_id": _flow_run_id(), "mlflow_run_id": parent,
            "settings_hash": result_hash(s), **tracking})
    except BaseException:
        if parent:
            from tasks.tracking import Tracker

            try:
                Tracker(s.tracking.uri).fail_parent(parent)
            except Exception:  # noqa: BLE001
                pass
        raise
    if track is not None:
        state = close_tracking(track, s, summary, items, complete)
        if state != summary["tracking"]:
            summary["tracking"] = state
            write_summary(Layout(output_uri), summary)
        if summary["tracking_failed"] or state != "ok":
            n = len(summary["tracking_failed"])
            print(f"warning: MLflow tracking {state}: {n} image(s) not logged"
                  + (f" ({', '.join(summary['tracking_failed'][:20])}"
                     f"{' …' if n > 20 else ''})" if n else "")
                  + "; their results are on disk and the next run logs them")
    _summary_artifact(summary, s)
    return summary


def _summary_artifact(summary: dict, settings: Settings) -> None:
    """The night at a glance in the Prefect UI (a markdown artifact keyed by dataset)."""
    from prefect.artifacts import create_markdown_artifact

    c = summary["counts"]
    lines = [f"# GANI inversion of `{summary.get('dataset')}`", "",
             f"{c['done']} done, {c['quarantined']} quarantined, {c['failed']} failed, "
             f"{summary.get('pending', 0)} pending; {summary.get('processed')} processed this "
             f"run, {summary.get('skipped')} already finished. Output: `{summary.get('output')}`",
             "", "| metric | mean (tuned) | mean (e4e) |", "|---|---|---|"]
    for k, v in (summary.get("means") or {}).items():
        e = (summary.get("e4e_means") or {}).get(k)
        lines.append(f"| {k} | {'—' if v is None else f'{v:.4g}'} | "
                     f"{'—' if e is None else f'{e:.4g}'} |")
    for kind in ("quarantined", "failed"):
        bad = summary.get(kind) or {}
        if bad:
            lines += ["", f"**{kind}** ({len(bad)}): " + ", ".join(
                f"`{i}` ({r})" for i, r in list(bad.items())[:50])
                + (" …" if len(bad) > 50 else "")]
    if summary.get("mlflow_run_id"):
        lines += ["", f"MLflow parent run `{summary['mlflow_run_id']}` "
                      f"at {redact_uri(settings.tracking.uri)}"]
    if summary.get("tracking") not in (None, "ok", "disabled"):
        lines += ["", f"**MLflow tracking {summary['tracking']}**: "
                      f"{len(summary.get('tracking_failed') or [])} image(s) not logged yet "
                      f"(the next run logs them)"]
    key = "gani-" + "".join(ch if ch.isalnum() else "-" for ch in
                            str(summary.get("dataset", "run")).lower())[:50].strip("-")
    try:
        create_markdown_artifact("\n".join(lines), key=key, description="GANI run summary")
    except Exception as exc:  # noqa: BLE001 - an artifact must never fail the night
        print(f"warning: could not create the Prefect summary artifact: {exc}")


# --------------------------------------------------------------------------- entry points

def run_invert(input_uri: str, output_uri: str, settings: Settings,
               dataset_name: Optional[str] = None, data_dir: str = "data") -> dict:
    """Run the `gani-invert` flow (what `gani invert` calls); returns the summary.

    Checks first, before Prefect starts, that the input exists and every checkpoint the
    settings need is present and loads (the networks stay cached for the flow).
    Credentials in either URI are refused (ConfigError): they come from the environment."""
    check_uris(input_uri=input_uri, output_uri=output_uri)
    if not io.exists(input_uri):
        raise FileNotFoundError(f"input not found: {input_uri}")
    rt = get_runtime(settings, data_dir)
    _ = (rt.G, rt.encoder, rt.nets, rt.edits)
    with cpu_threads(settings):
        return invert_dataset.with_options(task_runner=_runner(settings))(
            input_uri=input_uri, output_uri=output_uri,
            settings=settings.model_dump(mode="json"), dataset_name=dataset_name,
            data_dir=data_dir)


def run_demo(settings: Optional[Settings] = None, output_uri: str = "outputs/demo",
             dataset_dir: str = "data/datasets/demo", data_dir: str = "data") -> dict:
    """Materialise the demo dataset, run the flow on it with the demo profile, and say
    what happened and where to look."""
    from gani.stages.demo_data import materialize

    settings = settings or load_settings("params.yaml", "demo")
    files = materialize(dataset_dir)
    print(f"GANI demo: {len(files)} images in {dataset_dir} (scikit-image's astronaut and "
          f"chelsea photos plus generated variants and a broken file), profile "
          f"{settings.profile!r}: a small untrained {settings.models.generator.size}-px "
          f"generator, {settings.tune.steps} {settings.tune.method} steps per image. "
          f"Reconstructions improve; edits of an untrained generator mean nothing.")
    t0 = time.perf_counter()
    summary = run_invert(dataset_dir, output_uri, settings, dataset_name="demo",
                         data_dir=data_dir)
    took = time.perf_counter() - t0
    print(report(summary, settings, took))
    return summary


def report(summary: dict, settings: Settings, seconds: float) -> str:
    c = summary.get("counts", {})
    lines = ["", f"Done in {seconds:.0f}s: {c.get('done', 0)} done, "
             f"{c.get('quarantined', 0)} quarantined, {c.get('failed', 0)} failed "
             f"({summary.get('skipped', 0)} skipped as already finished)."]
    for kind in ("quarantined", "failed"):
        for image_id, reason in (summary.get(kind) or {}).items():
            lines.append(f"  {kind}: {image_id} ({reason})")
    means = summary.get("means") or {}
    e4e = summary.get("e4e_means") or {}
    shown = [f"{k} {means[k]:.4f}" + (f" (e4e {e4e[k]:.4f})" if e4e.get(k) is not None else "")
             for k in ("l2", "ms_ssim", "lpips", "id", "locality_l2") if means.get(k) is not None]
    if shown:
        lines.append("  means over done images: " + ", ".join(shown))
    out = summary.get("output")
    lines.append(f"Outputs: {out}/<image_id>/ (aligned.png, e4e.png, recon.png, compare.png, "
                 f"edits.png, metrics.json, status.json) and {out}/summary.json")
    if summary.get("tracking_failed") or summary.get("tracking") in ("incomplete",
                                                                      "unavailable"):
        lines.append(f"  warning: MLflow tracking {summary.get('tracking')}: "
                     f"{len(summary.get('tracking_failed') or [])} image(s) not logged; "
                     f"the next run logs them")
    if settings.tracking.enabled:
        lines.append(f"MLflow: experiment "
                     f"{settings.tracking.experiment.format(dataset=summary.get('dataset'), profile=settings.profile)!r}"
                     f", parent run {summary.get('mlflow_run_id')} with one child run per image. "
                     f"Browse: mlflow ui --backend-store-uri {settings.tracking.uri}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    run_demo() if len(sys.argv) < 3 else print(run_invert(sys.argv[1], sys.argv[2],
                                                          load_settings()))
