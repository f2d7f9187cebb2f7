"""A finished run in words: the markdown artifact in the Prefect UI, and the text the demo
prints."""
from __future__ import annotations

from gani.config import Settings
from gani.redact import redact_uri


def skipped_files_note(skipped_files: dict | None) -> str:
    """'; 5 other files skipped (hidden 3, unsupported_extension 2)', or '' when every file
    under the input is an image: the files that are not inputs, counted per reason
    (summary.json `skipped_files`, docs/output-contract.md#input-accounting)."""
    counts = {k: int(v) for k, v in (skipped_files or {}).items() if v}
    if not counts:
        return ""
    total = sum(counts.values())
    shown = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
    return f"; {total} other file{'s' if total != 1 else ''} skipped ({shown})"


def summary_artifact(summary: dict, settings: Settings) -> None:
    """The night at a glance in the Prefect UI (a markdown artifact keyed by dataset)."""
    from prefect.artifacts import create_markdown_artifact

    c = summary["counts"]
    lines = [f"# GANI inversion of `{summary.get('dataset')}`", "",
             f"{c['done']} done, {c['quarantined']} quarantined, {c['failed']} failed, "
             f"{summary.get('pending', 0)} pending; {summary.get('processed')} processed this "
             f"run, {summary.get('skipped')} already finished"
             f"{skipped_files_note(summary.get('skipped_files'))}. "
             f"Output: `{summary.get('output')}`",
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
    """What every run prints at the end (`gani demo`, `gani invert`): counts, reasons,
    means, where the files are, and the MLflow run with a link to its page."""
    c = summary.get("counts", {})
    files = (f", {summary['files']} file{'s' if summary['files'] != 1 else ''} under the "
             f"input" if summary.get("files") is not None else "")
    lines = ["", f"Done in {seconds:.0f}s{files}: {c.get('done', 0)} done, "
             f"{c.get('quarantined', 0)} quarantined, {c.get('failed', 0)} failed "
             f"({summary.get('skipped', 0)} skipped as already finished"
             f"{skipped_files_note(summary.get('skipped_files'))})."]
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
                 f"edits.png, loss.png, metrics.json, status.json"
                 + (", edits.json" if settings.edit.regressor else "")
                 + f") and {out}/summary.json")
    if summary.get("tracking_failed") or summary.get("tracking") in ("incomplete",
                                                                      "unavailable"):
        lines.append(f"  warning: MLflow tracking {summary.get('tracking')}: "
                     f"{len(summary.get('tracking_failed') or [])} image(s) not logged; "
                     f"the next run logs them")
    if settings.tracking.enabled:
        experiment = settings.tracking.experiment.format(dataset=summary.get("dataset"),
                                                         profile=settings.profile)
        uri = redact_uri(settings.tracking.uri)
        lines.append(f"MLflow: experiment {experiment!r}, parent run "
                     f"{summary.get('mlflow_run_id')} with one child run per image.")
        link = mlflow_link(summary, settings)
        if uri.startswith(("http://", "https://")):
            lines.append(f"  open: {link or uri}")
        else:
            lines.append(f"  browse: mlflow ui --backend-store-uri {uri}"
                         + (f", then open {link}" if link else ""))
    return "\n".join(lines)


def mlflow_link(summary: dict, settings: Settings) -> str | None:
    """The MLflow UI page of the night's parent run, in the classic training view: on the
    tracking server for an http(s) URI, else on `mlflow ui`'s default address
    (http://127.0.0.1:5000). None when there is no parent run or MLflow cannot say its
    experiment."""
    run_id = summary.get("mlflow_run_id")
    if not run_id or not settings.tracking.enabled:
        return None
    uri = settings.tracking.uri
    try:
        from mlflow.tracking import MlflowClient

        experiment_id = MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - a link is a convenience: none when MLflow is away
        return None
    from tracking.client import ui_link

    base = redact_uri(uri) if uri.startswith(("http://", "https://")) else (
        "http://127.0.0.1:5000")
    return ui_link(base, experiment_id, run_id)     # the classic view (docs/mlflow.md)


def demo_rows(output_uri: str) -> list[dict]:
    """Per done image of a demo run: L2 of the start latent and after tuning, drift, the
    edit ratio after tuning and at the start (from metrics.json, e4e_metrics.json and
    edits.json under the output root)."""
    import json
    from pathlib import Path

    from gani.stages.layout import Layout

    root = Path(output_uri)
    layout = Layout(output_uri)
    rows = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        image_id = d.name
        try:
            status = layout.read_status(image_id)
        except ValueError:
            continue
        if not status or status.get("state") != "done":
            continue
        m = json.loads(layout.read(image_id, "metrics"))
        e = json.loads(layout.read(image_id, "e4e_metrics"))
        fx = (json.loads(layout.read(image_id, "edit_effects"))
              if layout.exists(image_id, "edit_effects") else {})
        rows.append({"image": image_id, "source": status.get("source") or image_id,
                     "l2_start": e.get("l2"), "l2": m.get("l2"),
                     "drift": m.get("locality_l2"), "edit_ratio": fx.get("edit_ratio"),
                     "edit_ratio_start": fx.get("edit_ratio_start"),
                     "compare": str(d / "compare.png"), "edits": str(d / "edits.png")})
    return rows


def _f(v, nd: int = 4) -> str:
    return "  n/a " if v is None else f"{v:.{nd}f}"


def demo_table(rows: list[dict]) -> str:
    """The demo's per-image numbers and a one-line reading of each (what the demo prints)."""
    if not rows:
        return "No image finished: nothing to compare."
    w = max(len(r["image"]) for r in rows)
    lines = ["", f"{'image':<{w}}  L2 start -> tuned   drift    edit ratio start -> tuned",
             ]
    for r in rows:
        lines.append(f"{r['image']:<{w}}  {_f(r['l2_start'])} -> {_f(r['l2'])}   "
                     f"{_f(r['drift'])}   {_f(r['edit_ratio_start'], 2)} -> "
                     f"{_f(r['edit_ratio'], 2)}")
    faces = [r for r in rows if r["image"].startswith("face_")]
    photos = [r for r in rows if not r["image"].startswith("face_")]

    def mean(rs, k):
        vs = [r[k] for r in rs if r[k] is not None]
        return sum(vs) / len(vs) if vs else None

    lines.append("")
    if faces:
        better = sum(1 for r in faces if None not in (r["l2"], r["l2_start"])
                     and r["l2"] < r["l2_start"])
        a, b = mean(faces, "l2_start"), mean(faces, "l2")
        gain = f" ({100 * (1 - b / a):.0f}% lower)" if a and b is not None else ""
        lines.append(f"L2: tuning lowered the reconstruction error on {better} of {len(faces)} "
                     f"procedural faces, mean {_f(a)} -> {_f(b)}{gain}.")
    for r in photos:
        ratio = (r["l2"] / faces_mean) if (faces and r["l2"] is not None and
                                           (faces_mean := mean(faces, "l2"))) else None
        lines.append(f"     {r['image']} (a real photo): {_f(r['l2_start'])} -> {_f(r['l2'])}"
                     + (f", still {ratio:.0f}x the faces' error" if ratio else "")
                     + ": the testbed generator has only seen procedural faces (the domain "
                       "gap, shown honestly).")
    d, dp = mean(faces, "drift"), mean(photos, "drift")
    if d is not None or dp is not None:
        lines.append("Drift: tuning changed what the generator draws for random latents by "
                     + (f"{_f(d)} L2 on average for the faces" if d is not None else "")
                     + (", " if d is not None and dp is not None else "")
                     + (f"{_f(dp)} for the photo" if dp is not None else "")
                     + " (0 = untouched; the price of the fit, to set against the L2 "
                       "gained above).")
    er, es = mean(faces or rows, "edit_ratio"), mean(faces or rows, "edit_ratio_start")
    if er is not None:
        lines.append(f"Edit ratio: on the tuned faces an edit moves its attribute {er:.2f}x as "
                     f"much as on generated samples (1 = edits work as on samples; "
                     f"{_f(es, 2)}x at the e4e start): tuning "
                     + ("kept the edits." if es is None or abs(er - es) < 0.1 else
                        "weakened the edits." if er < es else "strengthened the edits."))
    return "\n".join(lines)
