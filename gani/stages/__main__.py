"""Stage scripts for `dvc repro` (dvc.yaml): one stage over a whole dataset per call.

    python -m gani.stages demo-data outputs/dvc/input
    python -m gani.stages align    --input outputs/dvc/input --root outputs/dvc
    python -m gani.stages encode   --input outputs/dvc/input --root outputs/dvc
    python -m gani.stages tune     --input outputs/dvc/input --root outputs/dvc
    python -m gani.stages edit     --input outputs/dvc/input --root outputs/dvc
    python -m gani.stages evaluate --input outputs/dvc/input --root outputs/dvc \\
        --metrics outputs/dvc/metrics.json --plots outputs/dvc/plots

Each stage writes under `<root>/<stage>/<image_id>/` (DVC outs must not overlap) and reads
the earlier stages' folders. Options: --profile (default: params.yaml's `profile`),
--params, --set key=value (repeatable), --data-dir.
"""
from __future__ import annotations

import argparse
import json
import sys

from gani import io

from .layout import STAGES, Layout


def _stage_layout(root: str) -> Layout:
    return Layout(io.join(root, "evaluate"), {s: io.join(root, s) for s in STAGES})


def _write_dvc_files(summary: dict, rows: list[dict], metrics_path: str | None,
                     plots_dir: str | None, layout: Layout) -> None:
    if metrics_path:
        metrics = {"counts": summary["counts"], "means": summary["means"],
                   "e4e_means": summary["e4e_means"]}
        io.write_json(metrics_path, metrics)
    if plots_dir:
        per_image = [{"image": k, "image_id": r["image_id"], "l2": r.get("l2"), "e4e_l2": r.get("e4e_l2"),
                      "ms_ssim": r.get("ms_ssim"), "e4e_ms_ssim": r.get("e4e_ms_ssim"),
                      "lpips": r.get("lpips"), "e4e_lpips": r.get("e4e_lpips"),
                      "locality_l2": r.get("locality_l2")}
                     for k, r in enumerate(r for r in rows if r["state"] == "done")]
        loss = []
        for r in rows:
            if r["state"] != "done":
                continue
            info = io.read_json(layout.uri(r["image_id"], "tune_info")) or {}
            loss += [{"image_id": r["image_id"], "step": i, "loss": v}
                     for i, v in enumerate(info.get("loss_curve") or [])]
        io.write_json(io.join(plots_dir, "per_image.json"), per_image)
        io.write_json(io.join(plots_dir, "loss.json"), loss)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gani.stages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("demo-data",) + STAGES)
    p.add_argument("dest", nargs="?", help="demo-data: where to write the demo dataset")
    p.add_argument("--input", help="dataset folder or s3:// prefix")
    p.add_argument("--root", default="outputs/dvc", help="stage output root")
    p.add_argument("--profile", default=None)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--metrics", default=None, help="evaluate: DVC metrics file to write")
    p.add_argument("--plots", default=None, help="evaluate: folder for DVC plot data")
    args = p.parse_args(argv)

    if args.stage == "demo-data":
        from .demo_data import materialize

        if not args.dest:
            p.error("demo-data needs a destination folder")
        for uri in materialize(args.dest):
            print(uri)
        return 0
    if not args.input:
        p.error("--input is required")

    from gani.config import load_settings

    from .run import plan, run_stage, summarize_run
    from .summary import image_rows

    settings = load_settings(args.params, args.profile, args.overrides)
    layout = _stage_layout(args.root)
    items = plan(args.input, layout, settings, args.data_dir, skip_finished=False)
    from .runtime import cpu_threads

    with cpu_threads(settings):
        out = run_stage(args.stage, items, layout, settings, progress=print,
                        data_dir=args.data_dir)
    if args.stage == "evaluate":
        summary = summarize_run(out, layout, settings, processed=len(out), skipped=0)
        _write_dvc_files(summary, image_rows(out, layout), args.metrics, args.plots, layout)
        print(json.dumps({"counts": summary["counts"], "means": summary["means"]}, indent=2))
    else:
        states = {}
        for item in out:
            state = "ok" if item.state == "pending" else item.state
            states[state] = states.get(state, 0) + 1
        print(f"{args.stage}: {states}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
