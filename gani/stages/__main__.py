"""Stage scripts for `dvc repro` (dvc.yaml): one stage over a whole dataset per call.

    python -m gani.stages demo-data outputs/dvc/input
    python -m gani.stages align    --input outputs/dvc/input --root outputs/dvc
    python -m gani.stages encode   --input outputs/dvc/input --root outputs/dvc
    python -m gani.stages tune     --input outputs/dvc/input --root outputs/dvc
    python -m gani.stages edit     --input outputs/dvc/input --root outputs/dvc
    python -m gani.stages evaluate --input outputs/dvc/input --root outputs/dvc \\
        --metrics outputs/dvc/metrics.json --timing outputs/dvc/timing.json \\
        --plots outputs/dvc/plots

Each stage writes under `<root>/<stage>/<image_id>/` (DVC outs must not overlap) and reads
the earlier stages' folders. evaluate also writes the DVC metrics (quality only), the
timing (not a DVC metric) and the plot data (gani/stages/dvc_files.py). Options: --profile
(default: params.yaml's `profile`), --params, --set key=value (repeatable), --data-dir.
"""
from __future__ import annotations

import argparse
import json
import sys

from gani import io

from .layout import STAGES, Layout


def _stage_layout(root: str) -> Layout:
    return Layout(io.join(root, "evaluate"), {s: io.join(root, s) for s in STAGES})


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
    p.add_argument("--timing", default=None,
                   help="evaluate: tuning time and memory file (not a DVC metric)")
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

    from .run import plan_run, run_stage, summarize_run
    from .summary import image_rows

    settings = load_settings(args.params, args.profile, args.overrides)
    layout = _stage_layout(args.root)
    planned = plan_run(args.input, layout, settings, args.data_dir, skip_finished=False)
    items = planned.items
    from .runtime import cpu_threads

    with cpu_threads(settings):
        out = run_stage(args.stage, items, layout, settings, progress=print,
                        data_dir=args.data_dir)
    if args.stage == "evaluate":
        summary = summarize_run(out, layout, settings, processed=len(out), skipped=0,
                                **planned.accounting())
        from .dvc_files import write_dvc_files

        write_dvc_files(summary, image_rows(out, layout), layout, args.metrics, args.plots,
                        args.timing)
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
