"""The `gani` command line (docs/pipeline.md, "Run it" and "Exit status").

    gani demo                                  the whole DAG on bundled demo data (demo profile)
    gani invert INPUT --out OUTPUT [--profile P] [--set key=value ...]
    gani checkpoints list | verify | import PATH...

Exit status:
    0  the run finished and every image is done or quarantined (a quarantined file is a bad
       input, recorded with its reason in summary.json; not a failure of the run)
    1  anything else (an unexpected error)
    2  bad usage or configuration (unknown profile, invalid parameter, missing input,
       credentials in a URI: INPUT/--out or tracking.uri; they belong in the environment)
    3  a checkpoint is missing, corrupt, unsafe (a pickle with code) or does not fit the
       configured architecture; nothing was processed
    4  the run finished but one or more images failed (summary.json `failed`; a re-run
       retries them)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_CHECKPOINT, EXIT_FAILED = 0, 1, 2, 3, 4


def _add_run_options(p: argparse.ArgumentParser, default_profile: str | None) -> None:
    p.add_argument("--profile", default=default_profile,
                   help="domain profile from params.yaml (ffhq, cars, church, horse, afhq_wild, demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter, e.g. --set tune.steps=50 (repeatable)")
    p.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gani", description="GANI StyleGAN2 inversion pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline on bundled demo data")
    _add_run_options(demo, "demo")
    demo.add_argument("--out", default="outputs/demo", help="output root (default outputs/demo)")

    inv = sub.add_parser("invert", help="invert every image under INPUT (folder or s3:// prefix)")
    inv.add_argument("input", help="local folder or s3://bucket/prefix of images")
    inv.add_argument("--out", required=True, help="output root: local folder or s3:// URI")
    inv.add_argument("--dataset", default=None, help="dataset name for MLflow (default: INPUT's name)")
    _add_run_options(inv, None)

    ck = sub.add_parser("checkpoints", help="list, verify or import pretrained checkpoints")
    ck_sub = ck.add_subparsers(dest="action", required=True)
    for action, text in (("list", "show known checkpoints and which are present"),
                         ("verify", "hash every present checkpoint")):
        a = ck_sub.add_parser(action, help=text)
        a.add_argument("--data-dir", default="data")
    imp = ck_sub.add_parser("import", help="copy checkpoint files into data/checkpoints and verify")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--name", default=None, help="registry name, when the file name differs")
    imp.add_argument("--data-dir", default="data")
    return parser


def _print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)


def _checkpoints(args: argparse.Namespace) -> int:
    from gani import checkpoints as ck

    if args.action == "import":
        statuses = ck.import_files(args.paths, args.data_dir, args.name)
        for s in statuses:
            print(f"imported {s.spec.name} -> {s.path} [{s.state}: {s.detail}]")
        print("Next: `dvc add data && git add data.dvc && dvc push` to version and share them.")
        return EXIT_OK
    statuses = ck.check_all(args.data_dir, hash_files=(args.action == "verify"))
    rows = [(s.spec.name, s.spec.kind, ",".join(s.spec.domains), s.state,
             str(s.path) if s.path else s.spec.file, s.detail) for s in statuses]
    _print_table(rows, ("name", "kind", "domains", "state", "file", "detail"))
    if args.action == "verify" and any(s.state == "corrupt" for s in statuses):
        return EXIT_CHECKPOINT
    return EXIT_OK


def _check_uris(args: argparse.Namespace) -> None:
    from gani.config import check_uris

    check_uris(INPUT=getattr(args, "input", None), **{"--out": args.out})


def _run(args: argparse.Namespace) -> int:
    from gani.config import load_settings

    _check_uris(args)
    settings = load_settings(args.params, args.profile, args.overrides)
    from flows.invert import run_demo, run_invert

    if args.command == "demo":
        summary = run_demo(settings, output_uri=args.out)
    else:
        summary = run_invert(args.input, args.out, settings, dataset_name=args.dataset)
    shown = {k: summary[k] for k in ("counts", "output", "tracking", "tracking_failed",
                                     "tracking_error")
             if k in summary}
    print(json.dumps(shown, indent=2))
    return exit_status(summary)


def exit_status(summary: dict) -> int:
    """EXIT_FAILED when the finished run has failed (or unfinished) images, else EXIT_OK."""
    counts = summary.get("counts") or {}
    if int(counts.get("failed", 0) or 0) > 0 or int(summary.get("pending", 0) or 0) > 0:
        failed = summary.get("failed") or {}
        shown = ", ".join(f"{i} ({r})" for i, r in list(failed.items())[:20])
        print(f"error: {counts.get('failed', 0)} image(s) failed"
              + (f": {shown}" if shown else "")
              + (f"; {summary.get('pending')} pending" if summary.get("pending") else "")
              + "; see summary.json (a re-run retries them)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gani.checkpoints import (CheckpointCorruptError, CheckpointLoadError,
                                  CheckpointMissingError)
    from gani.config import ConfigError
    from gani.redact import redact_text

    try:
        if args.command == "checkpoints":
            return _checkpoints(args)
        return _run(args)
    except ConfigError as exc:
        print(f"error: {redact_text(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except (CheckpointMissingError, CheckpointCorruptError, CheckpointLoadError) as exc:
        print(f"checkpoint error: {redact_text(exc)}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except (FileNotFoundError, KeyError) as exc:
        print(f"error: {redact_text(exc)}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
