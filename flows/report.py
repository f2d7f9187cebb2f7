"""A finished run in words: the markdown artifact in the Prefect UI, and the text the demo
prints."""
from __future__ import annotations

from gani.config import Settings
from gani.redact import redact_uri


def summary_artifact(summary: dict, settings: Settings) -> None:
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


def report(summary: dict, settings: Settings, seconds: float) -> str:
    """What the demo prints at the end: counts, reasons, means, where to look."""
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
        experiment = settings.tracking.experiment.format(dataset=summary.get("dataset"),
                                                         profile=settings.profile)
        lines.append(f"MLflow: experiment {experiment!r}, parent run "
                     f"{summary.get('mlflow_run_id')} with one child run per image. "
                     f"Browse: mlflow ui --backend-store-uri {settings.tracking.uri}")
    return "\n".join(lines)
