"""The dataset flows: plan -> shards -> per-image DAG -> summary, tracked in MLflow.

    gani-invert        (`invert_dataset`, the nightly entry point): removes temporary files a
                       killed run left under the output root, lists the dataset, skips
                       images finished with the same content key, opens (or resumes) the
                       MLflow parent run of the logical run, splits the rest into shards of
                       orchestration.shard_size and runs them, logs the images that still
                       lack a child run (reconcile), writes summary.json and closes the
                       parent run. Run as a deployment with more than one shard, it launches
                       one `gani-invert-shard` deployment run per shard (`run_deployment`) so
                       GPU workers share the night; otherwise the shards run in-process as
                       subflows.
    gani-invert-shard  (`invert_shard`): the per-image DAG over one shard (`flows.images`):
                       align -> encode -> tune (batches, one GPU slot each) -> edit ->
                       evaluate -> log, on a ThreadPoolTaskRunner of
                       orchestration.max_concurrency workers.

Settings are validated once (params.yaml + profile + --set, or a deployment's `settings`
parameter) and travel as the `Settings` model to the subflows and tasks.

Crash safety: every file is written atomically (`gani.io.write_bytes`) and an image is only
marked finished after its outputs, so a run killed at any point and run again redoes only
unfinished work, leaves no partial file behind (stale temporary files are removed first)
and ends with one child run per image under one FINISHED parent (`tracking.logical_run`).
MLflow outages never stop the night (`flows.track`; docs/pipeline.md, "MLflow").

Final state: a night that wrote every result and its summary but has failed (or pending)
images ends **Failed** (Prefect's own state, returned by the flow with the summary as its
data), so a "flow run failed" automation fires; the CLI's exit 4 is the same condition.
Shard runs stay Completed (their images are counted by the night; a Failed shard run means
a lost worker to `flows.shards` and is relaunched). Flow runs are named
`<dataset>-<profile>-<YYYY-MM-DD>` (the night's scheduled date, UTC).

Entry points for Python and the CLI: `run_invert(input_uri, output_uri, settings)` and
`run_demo(settings)`; both return the summary, whatever the final state.
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from prefect import flow  # noqa: E402
from prefect.states import Failed, State  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from gani import io  # noqa: E402
from gani.checkpoints.needs import require_all  # noqa: E402
from gani.config import (ConfigError, Settings, check_uris, load_settings,  # noqa: E402
                         resolve)
from gani.redact import install_log_redaction, redact_uri  # noqa: E402
from gani.stages import ImageItem, Layout, get_runtime, shards  # noqa: E402
from gani.stages.plan import check_output_root, result_hash  # noqa: E402
from gani.stages.runtime import cpu_threads  # noqa: E402
from gani.stages.summary import write_summary  # noqa: E402
from gani.tuning.api import steps_of  # noqa: E402
from tasks.pipeline import Tasks  # noqa: E402
from tracking import Tracker, TrackingRun  # noqa: E402

from flows import progress  # noqa: E402
from flows.checks import check_run_inputs  # noqa: E402
from flows.images import ShardRun  # noqa: E402
from flows.report import (demo_rows, demo_table, report, skipped_files_note,  # noqa: E402
                          summary_artifact)
from flows.track import begin_tracking, close_tracking, reconcile  # noqa: E402

SHARD_DEPLOYMENT = "gani-invert-shard/shard"


def settings_for(settings: Optional[Settings], profile: Optional[str],
                 overrides: Optional[list[str]], params_path: Optional[str]) -> Settings:
    """The run's settings: the model given (with `overrides` applied when there are any),
    else the packaged defaults + params.yaml (`params_path`, or ./params.yaml when None) +
    profile + overrides (a scheduled deployment run). A run without either `settings` or
    `profile` is refused (ConfigError) before any work, as `gani invert` without --profile
    is: the parameters file's default profile is the demo's trial network."""
    if settings is None:
        if not profile:
            raise ConfigError("the night needs a `profile` parameter (ffhq, cars, church, "
                              "horse, afhq_wild; demo / demo_random are trial networks) or "
                              "`settings`: set it in prefect.yaml's deployment parameters")
        return load_settings(params_path, profile, overrides or [])
    if not overrides:
        return settings
    dump = settings.model_dump(mode="json")
    return resolve({**dump, "profiles": {settings.profile: {}}}, settings.profile, overrides)


def dataset_name_of(input_uri: str) -> str:
    name = str(input_uri).rstrip("/").rsplit("/", 1)[-1] or "dataset"
    return io.safe_id(name, keep_extension=True)


def _runner(settings: Settings) -> ThreadPoolTaskRunner:
    return ThreadPoolTaskRunner(max_workers=settings.orchestration.max_concurrency)


def _check_runtime(settings: Settings, data_dir: str) -> None:
    """Load every network the settings need: a missing or corrupt checkpoint fails now,
    before any image (the networks stay cached for the tasks). Missing files are listed all
    at once, each with where to get it (`gani.checkpoints.needs`)."""
    require_all(settings, data_dir)
    rt = get_runtime(settings, data_dir)
    _ = (rt.G, rt.encoder, rt.nets, rt.edits, rt.regressor)


def _param(params: dict, key: str) -> Any:
    """A flow-run parameter, from a model or a plain mapping (a deployment's JSON)."""
    value = params.get(key)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def night_run_name() -> str:
    """The name of a night's flow run: `<dataset>-<profile>-<YYYY-MM-DD>`, the date of its
    scheduled start in UTC (the night a scheduled run stands for; the start for a run by
    hand), so a night's runs can be found by dataset and date in the UI."""
    try:
        from prefect.runtime import flow_run

        params = dict(flow_run.parameters or {})
        dataset = params.get("dataset_name") or dataset_name_of(params.get("input_uri") or "")
        settings = _param(params, "settings") or {}
        profile = params.get("profile") or settings.get("profile") or "default"
        when = flow_run.scheduled_start_time
        day = when.in_timezone("UTC").strftime("%Y-%m-%d") if when else time.strftime(
            "%Y-%m-%d", time.gmtime())
        return f"{dataset}-{profile}-{day}"
    except Exception:  # noqa: BLE001 - a name must never fail the night
        return f"gani-night-{time.strftime('%Y-%m-%d', time.gmtime())}"


def night_state(summary: dict) -> Optional[State]:
    """Failed (with the summary as its data) when images failed or are left pending, else
    None (the flow completes). The same condition as the CLI's exit 4."""
    counts = summary.get("counts") or {}
    failed, pending = int(counts.get("failed", 0) or 0), int(summary.get("pending", 0) or 0)
    if not failed and not pending:
        return None
    ids = list((summary.get("failed") or {}).items())[:10]
    shown = ", ".join(f"{i} ({r})" for i, r in ids) + (" …" if failed > len(ids) else "")
    return Failed(message=f"{failed} image(s) failed" + (f": {shown}" if shown else "")
                  + (f"; {pending} pending" if pending else "")
                  + f"; every result and summary.json are written under "
                  f"{summary.get('output')} (a re-run retries them)", data=summary)


# --------------------------------------------------------------------------- flows

def still_to_do(items: list[ImageItem], output_uri: str) -> list[ImageItem]:
    """The planned `items` as a shard receives them, each marked skipped when its status.json
    already says done / quarantined with the same content key (a shard run retried after
    its first try finished some): one small read per image, no listing, no hashing."""
    layout = Layout(output_uri)
    out = []
    for item in items:
        status = layout.read_status(item.image_id)
        if (status and status.get("key") == item.key
                and status.get("state") in ("done", "quarantined")):
            item = item.model_copy(update={"state": status["state"], "skipped": True,
                                           "reason": status.get("reason")})
        out.append(item)
    return out


@flow(name="gani-invert-shard", log_prints=True)
def invert_shard(input_uri: str, output_uri: str, settings: Settings,
                 images: Optional[list[str]] = None, parent_run_id: Optional[str] = None,
                 data_dir: str = "data", label: str = "",
                 items: Optional[list[ImageItem]] = None) -> dict:
    """The per-image DAG over `items`: the manifests the night planned for this shard
    (listed and hashed once per night, by `invert_dataset`). Without them the shard plans
    itself: `images` (source URIs) or, None, the whole dataset (a shard run by hand).

    Args:
        input_uri: the night's input, a folder or s3:// prefix of photos.
        output_uri: the output root (per-image folders, summary.json).
        settings: the night's validated settings (params.yaml + profile + overrides).
        images: source URIs to process when `items` is not given; None = the whole input.
        parent_run_id: the night's MLflow parent run (each image gets a child run under it).
        data_dir: the folder holding checkpoints/ and datasets/ on the worker.
        label: prefix of the progress lines, e.g. "shard 2/5 ".
        items: the image manifests the night planned for this shard.
    """
    install_log_redaction()
    tasks = Tasks.for_run(settings)
    if items is None:
        items = tasks.plan(input_uri, output_uri, settings, data_dir, images).items
    else:
        items = still_to_do([ImageItem.model_validate(i) for i in items], output_uri)
    todo = [i for i in items if not i.skipped]
    run = ShardRun(tasks, settings, output_uri, data_dir, parent_run_id, label)
    with cpu_threads(settings):
        if todo:
            run.run(todo)
    return run.report(skipped=len(items) - len(todo))


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


def _run_shards_as_deployments(groups: list[list[ImageItem]], input_uri: str,
                               output_uri: str, s: Settings, parent_run_id: Optional[str],
                               data_dir: str, shard_deployment: str) -> None:
    """One run of `shard_deployment` per shard, watched and relaunched when lost
    (`flows.shards`)."""
    from flows.shards import run_shards_as_deployments

    run_shards_as_deployments(
        [{"input_uri": input_uri, "output_uri": output_uri,
          "settings": s.model_dump(mode="json"),
          "items": [i.model_dump(mode="json") for i in group],
          "parent_run_id": parent_run_id, "data_dir": data_dir,
          "label": f"shard {k + 1}/{len(groups)} "} for k, group in enumerate(groups)],
        shard_deployment, s)


def _run_shards(groups: list[list[ImageItem]], input_uri: str, output_uri: str,
                s: Settings, track: Optional[TrackingRun], data_dir: str,
                shard_deployment: Optional[str]) -> None:
    parent = track.parent if track else None
    if len(groups) > 1 and shard_deployment and _in_deployment():
        _run_shards_as_deployments(groups, input_uri, output_uri, s, parent, data_dir,
                                   shard_deployment)
        return
    for k, group in enumerate(groups):
        label = f"shard {k + 1}/{len(groups)} " if len(groups) > 1 else ""
        done = invert_shard.with_options(
            task_runner=_runner(s), flow_run_name=f"shard-{k + 1}-of-{len(groups)}")(
            input_uri, output_uri, s, items=group, parent_run_id=parent,
            data_dir=data_dir, label=label)
        if track is not None and isinstance(done, dict):
            track.logged.update(done.get("logged") or [])
            track.error = done.get("tracking_error") or track.error


def _tracking_fields(tasks: Tasks, track: Optional[TrackingRun], items: list[ImageItem],
                     s: Settings) -> tuple[dict[str, Any], bool]:
    """summary.json's tracking fields after reconcile, and whether the logical run is
    complete (every scope image final and logged)."""
    if track is None:
        return {"tracking": "disabled", "tracking_failed": [], "tracking_error": None}, False
    rec = reconcile(tasks, track, items, s)
    complete = track.opened and not rec["tracking_failed"] and not rec["pending"]
    return {"tracking": "ok" if complete else "incomplete" if track.opened else "unavailable",
            "tracking_failed": rec["tracking_failed"],
            "tracking_error": None if complete else track.error}, complete


@flow(name="gani-invert", log_prints=True, flow_run_name=night_run_name)
def invert_dataset(input_uri: str, output_uri: str, profile: Optional[str] = None,
                   overrides: Optional[list[str]] = None, settings: Optional[Settings] = None,
                   dataset_name: Optional[str] = None, params_path: Optional[str] = None,
                   data_dir: str = "data", shard_deployment: Optional[str] = SHARD_DEPLOYMENT
                   ) -> dict | State:
    """Invert every image under `input_uri` into `output_uri`; returns the run summary, or
    a Failed state carrying it when images failed (after every result and summary.json are
    written), so that automations on failed flow runs fire.

    Args:
        input_uri: the photos to invert: a local folder or an s3://bucket/prefix (no
            credentials in it; S3 credentials come from the worker's AWS environment).
        output_uri: the output root, a local folder or s3:// URI: per-image folders and
            summary.json.
        profile: the domain profile of params.yaml (ffhq, cars, church, horse, afhq_wild;
            demo and demo_random are test networks); required unless `settings` is given.
        overrides: `key=value` settings applied on top, as `gani invert --set`, e.g.
            tracking.uri=http://mlflow:5000 or orchestration.use_gpu_limit=true.
        settings: the validated settings model (Python and the CLI); None = read
            params.yaml with `profile` and `overrides`.
        dataset_name: the name used for the MLflow experiment (gani-<dataset>-<profile>)
            and the flow-run name; None = the input's last path part.
        params_path: the parameters file on the worker; None = the packaged defaults with
            ./params.yaml of the checkout on top.
        data_dir: the folder holding checkpoints/ (and datasets/) on the worker.
        shard_deployment: the deployment that runs one shard when the night has more than
            orchestration.shard_size images; None = run every shard in this flow run.
    """
    t0 = time.perf_counter()
    install_log_redaction()    # Prefect's console and API log handlers: no secret in a line
    check_uris(input_uri=input_uri, output_uri=output_uri)
    check_output_root(input_uri, output_uri)
    s = settings_for(settings, profile, overrides, params_path)
    tasks = Tasks.for_run(s)
    dataset = dataset_name or dataset_name_of(input_uri)
    stale = io.remove_stale_temp(output_uri)
    if stale:
        print(f"removed {len(stale)} temporary file(s) left by a killed run under "
              f"{redact_uri(output_uri)}")
    planned = tasks.plan(input_uri, output_uri, s, data_dir)
    items = planned.items
    todo = [i for i in items if not i.skipped]
    progress.night_started(len(todo), len(items) - len(todo))
    print(f"dataset {dataset!r}: {len(items)} images, {len(items) - len(todo)} already "
          f"finished with the same inputs and parameters, {len(todo)} to process"
          f"{skipped_files_note(planned.skipped_files)} "
          f"(profile {s.profile}, tune.method {s.tune.method}, "
          f"{steps_of(s.tune.method, s.tune)} steps)")
    if todo:
        _check_runtime(s, data_dir)
    track = None
    if s.tracking.enabled:
        track = begin_tracking(tasks, s, dataset, input_uri, output_uri, _flow_run_id(),
                               items, todo)
    parent = track.parent if track else None
    try:
        groups = shards(todo, s.orchestration.shard_size) if todo else []
        _run_shards(groups, input_uri, output_uri, s, track, data_dir, shard_deployment)
        tracking, complete = _tracking_fields(tasks, track, items, s)
        summary = tasks.summarize(items, output_uri, s, {
            "dataset": dataset, "input": redact_uri(input_uri), "processed": len(todo),
            "skipped": len(items) - len(todo), "seconds": round(time.perf_counter() - t0, 1),
            "prefect_flow_run_id": _flow_run_id(), "mlflow_run_id": parent,
            "settings_hash": result_hash(s), **tracking, **planned.accounting()})
    except BaseException:
        if parent:
            try:
                Tracker(s.tracking.uri).fail_parent(parent)
            except Exception:  # noqa: BLE001
                pass
        raise
    if track is not None:
        _close(tasks, track, s, summary, items, complete, output_uri)
    summary_artifact(summary, s)
    return night_state(summary) or summary


def _close(tasks: Tasks, track: TrackingRun, s: Settings, summary: dict,
           items: list[ImageItem], complete: bool, output_uri: str) -> None:
    """Close the parent run; summary.json and a warning say when tracking is not ok."""
    state = close_tracking(tasks, track, s, summary, items, complete)
    if state != summary["tracking"]:
        summary["tracking"] = state
        write_summary(Layout(output_uri), summary)
    if summary["tracking_failed"] or state != "ok":
        n = len(summary["tracking_failed"])
        print(f"warning: MLflow tracking {state}: {n} image(s) not logged"
              + (f" ({', '.join(summary['tracking_failed'][:20])}"
                 f"{' …' if n > 20 else ''})" if n else "")
              + "; their results are on disk and the next run logs them")


# --------------------------------------------------------------------------- entry points

def run_invert(input_uri: str, output_uri: str, settings: Settings,
               dataset_name: Optional[str] = None, data_dir: str = "data") -> dict:
    """Run the `gani-invert` flow (what `gani invert` calls); returns the summary.

    Checks first, before Prefect starts, that the input exists and every checkpoint the
    settings need is present and loads (the networks stay cached for the flow).
    Credentials in either URI are refused (ConfigError): they come from the environment."""
    check_run_inputs(input_uri, output_uri)
    _check_runtime(settings, data_dir)
    with cpu_threads(settings):
        state = invert_dataset.with_options(task_runner=_runner(settings))(
            input_uri=input_uri, output_uri=output_uri, settings=settings,
            dataset_name=dataset_name, data_dir=data_dir, return_state=True)
    return summary_of(state)


def summary_of(state: State) -> dict:
    """The summary a finished night returned, Completed or Failed (its data); a night that
    raised re-raises its exception here."""
    if state.is_completed():
        return state.result()
    result = state.result(raise_on_failure=False)
    if isinstance(result, dict):
        return result
    if isinstance(result, BaseException):
        raise result
    raise RuntimeError(f"the night ended {state.name}: {state.message}")


def run_demo(settings: Optional[Settings] = None, output_uri: str = "outputs/demo",
             dataset_dir: str = "data/datasets/demo", data_dir: str = "data") -> dict:
    """Materialise the demo dataset, run the flow on it with the demo profile, and say
    what happened, per image, and where to look."""
    from gani.stages.demo_data import materialize

    settings = settings or load_settings(None, "demo")
    testbed = settings.models.generator.checkpoint != "demo"
    files = materialize(dataset_dir, kind="testbed" if testbed else "photos")
    steps = steps_of(settings.tune.method, settings.tune)
    size = settings.models.generator.size
    if testbed:
        print(f"GANI demo: {len(files)} files in {dataset_dir}: held-out procedural faces "
              f"(test and shifted splits), scikit-image's astronaut photo, a truncated JPEG "
              f"and a text file named .png. Profile {settings.profile!r}: the {size}-px "
              f"StyleGAN2 trained on procedural faces (gani/testbed), its e4e, "
              f"{steps} {settings.tune.method} steps per image, edits along attribute "
              f"directions measured by the attribute regressor.")
    else:
        print(f"GANI demo: {len(files)} images in {dataset_dir} (scikit-image's astronaut and "
              f"chelsea photos plus generated variants and a broken file), profile "
              f"{settings.profile!r}: a small untrained {size}-px generator, {steps} "
              f"{settings.tune.method} steps per image. "
              f"Reconstructions improve; edits of an untrained generator mean nothing.")
    t0 = time.perf_counter()
    summary = run_invert(dataset_dir, output_uri, settings, dataset_name="demo",
                         data_dir=data_dir)
    print(report(summary, settings, time.perf_counter() - t0))
    if not io.is_remote(output_uri):
        print(demo_table(demo_rows(output_uri)))
    return summary
