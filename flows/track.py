"""The flow's side of the MLflow logical run (`tracking.logical_run` holds the rules): open
or resume the parent before the images, log what the run left unlogged (reconcile), close
the parent after the summary.

None of these raises for MLflow: the images matter more than their tracking. A server
that cannot be reached (after the tasks' retries) trips `TrackingGuard`, and the run says
`tracking: unavailable` (no parent) or `incomplete`; the next run resumes the parent and
reconciles (docs/pipeline.md, "MLflow").
"""
from __future__ import annotations

from prefect.utilities.annotations import unmapped

from gani.config import Settings
from gani.redact import redact_text, redact_uri
from gani.stages import ImageItem
from tasks.pipeline import Tasks
from tasks.retry import is_transient
from tracking import TrackingRun, guard_for
from tracking.logical_run import final_images, next_state, unlogged, write_state


def begin_tracking(tasks: Tasks, settings: Settings, dataset: str, input_uri: str,
                   output_uri: str, flow_run_id: str, items: list[ImageItem],
                   todo: list[ImageItem]) -> TrackingRun:
    """Continue or start the logical run and open its parent run. When the server cannot
    be reached the run goes on untracked, `error` says why, the next run logs its images."""
    uri = settings.tracking.uri
    state, was_finished = next_state(settings, dataset, input_uri, output_uri, flow_run_id,
                                     {i.image_id for i in todo})
    if not state["scope"]:   # nothing to process and no unfinished logical run to complete
        print("MLflow: nothing to process or log; no parent run opened")
        return TrackingRun(uri=uri, output_uri=output_uri, state=state, idle=True)
    write_state(output_uri, state)  # before MLflow: the scope survives an outage
    track = TrackingRun(uri=uri, output_uri=output_uri, state=state)
    try:
        opened = tasks.start_tracking(settings, dataset, input_uri, output_uri, flow_run_id,
                                      len(items), len(todo),
                                      resume_run_id=state["parent_run_id"],
                                      search=not was_finished)
    except Exception as exc:  # noqa: BLE001 - the images matter more than their tracking
        track.error = redact_text(f"{type(exc).__name__}: {exc}")[:500]
        guard_for(uri).failed()
        print(f"warning: MLflow at {redact_uri(uri)} is unavailable ({track.error}); the "
              f"images are processed and kept on disk, summary.json lists them under "
              f"tracking_failed, and the next run logs them")
        return track
    guard_for(uri).succeeded()
    if opened["previous_finished"]:  # killed between closing the parent and the state file
        state["scope"] = sorted(i.image_id for i in todo)
        state["flow_runs"] = [flow_run_id]
    track.parent, track.resumed = opened["run_id"], opened["resumed"]
    state["parent_run_id"] = track.parent
    write_state(output_uri, state)
    return track


def reconcile(tasks: Tasks, track: TrackingRun, items: list[ImageItem],
              settings: Settings) -> dict:
    """Log every final image of the scope that has no complete child under the parent.

    Returns {"tracking_failed": [ids final on disk but not logged], "pending": [ids of the
    scope not final yet], "logged": n logged now}."""
    final, pending = final_images(track, items)
    out = {"tracking_failed": sorted(final), "pending": pending, "logged": 0}
    if not track.parent:
        return out
    guard = guard_for(track.uri)
    not_logged = sorted(set(final) - track.logged)
    if not guard.usable(force=True):
        print("warning: MLflow is still unreachable; reconcile skipped")
        return {**out, "tracking_failed": not_logged}
    try:
        children = tasks.list_children(settings, track.parent)
    except Exception as exc:  # noqa: BLE001
        guard.failed()
        print(f"warning: MLflow: could not list the child runs ({redact_text(exc)}); "
              f"reconcile skipped")
        return {**out, "tracking_failed": not_logged}
    todo = unlogged(final, children)
    if todo:
        print(f"MLflow reconcile: {len(todo)} image(s) final on disk without a complete "
              f"child run under {track.parent}: logging them")
    failed: list[str] = []
    width = max(1, settings.orchestration.max_concurrency)
    for i in range(0, len(todo), width):   # a window at a time: stop when the server goes
        window = todo[i:i + width]
        if not guard.usable():
            failed += [it.image_id for it in window]
            continue
        futures = tasks.log_image.map(window, output_uri=unmapped(track.output_uri),
                                      settings=unmapped(settings),
                                      parent_run_id=unmapped(track.parent))
        for item, fut in zip(window, futures):
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001
                failed.append(item.image_id)
                if is_transient(exc):
                    guard.failed()
                continue
            track.logged.add(item.image_id)
            out["logged"] += 1
            guard.succeeded()
    return {**out, "tracking_failed": sorted(failed)}


def close_tracking(tasks: Tasks, track: TrackingRun, settings: Settings, summary: dict,
                   items: list[ImageItem], complete: bool) -> str:
    """Close the parent: FINISHED when the logical run is `complete` (every scope image
    final and logged), else FAILED so that the next run resumes it. Returns the tracking
    state for summary.json: ok | incomplete | unavailable (ok for an idle run: nothing to
    log, no parent)."""
    if track.idle:
        return "ok"
    if not track.parent:
        return "unavailable"
    status = "FINISHED" if complete else "FAILED"
    try:
        tasks.finish_tracking(settings, track.parent, summary, items, track.output_uri,
                              status=status)
    except Exception as exc:  # noqa: BLE001
        guard_for(track.uri).failed()
        print(f"warning: MLflow: could not close the parent run {track.parent} "
              f"({redact_text(exc)}); "
              f"the next run resumes it")
        return "incomplete"
    if complete:
        track.state["finished"] = True
        write_state(track.output_uri, track.state)
        return "ok"
    return "incomplete"
