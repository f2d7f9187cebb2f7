"""The `gani` command line (docs/pipeline.md, "Run it" and "Exit status").

    gani demo                                  the whole DAG on bundled demo data (demo profile:
                                               the trained testbed)
    gani invert INPUT --out OUTPUT [--profile P] [--set key=value ...]
    gani checkpoints list | verify | import PATH...

Exit status:
    0  the run finished and every image is done or quarantined (a quarantined file is a bad
       input, recorded with its reason in summary.json; not a failure of the run)
    1  anything else: a storage fault that stopped the run (disk full, read-only store: one
       line `storage error: ...`) or an unexpected error (one line; GANI_TRACEBACK=1 for the
       traceback)
    2  bad usage or configuration (unknown profile, invalid parameter, missing input, INPUT
       a file rather than a folder / prefix, a bad output root, credentials in a URI:
       INPUT/--out or tracking.uri; they belong in the environment)
    3  a checkpoint is missing, corrupt, unsafe (a pickle with code) or does not fit the
       configured architecture; nothing was processed
    4  the run finished but one or more images failed (summary.json `failed`; a re-run
       retries them)
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_CHECKPOINT, EXIT_FAILED = 0, 1, 2, 3, 4
# an OSError that stops a run because the output store cannot take writes: one line, exit 1
STORAGE_ERRNOS = frozenset(getattr(errno, n) for n in (
    "ENOSPC", "EDQUOT", "EROFS", "EFBIG", "EACCES", "EPERM", "EIO") if hasattr(errno, n))


def _add_run_options(p: argparse.ArgumentParser, default_profile: str | None) -> None:
    p.add_argument("--profile", default=default_profile,
                   help="domain profile from params.yaml (ffhq, cars, church, horse, afhq_wild, "
                        "demo: the trained testbed, demo_random: random networks)")
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
    from cli.server import temporary_server

    summary = None
    if args.command == "demo":  # a re-run with nothing to do is answered from disk
        from flows.demo import finished_demo

        summary = finished_demo(settings, output_uri=args.out)
    if summary is None:
        with temporary_server():     # none outlives this process (cli/server.py)
            from flows.invert import run_demo, run_invert

            if args.command == "demo":
                summary = run_demo(settings, output_uri=args.out)
            else:
                summary = run_invert(args.input, args.out, settings,
                                     dataset_name=args.dataset)
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
    # Prefect's console log (progress, task states) goes to stdout: stderr carries only
    # the run's error lines, one per problem (docs/output-contract.md#exit-status)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM", "ext://sys.stdout")
    from gani.checkpoints import (CheckpointCorruptError, CheckpointLoadError,
                                  CheckpointMissingError)
    from cli.server import ServerStartError, Terminated
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
    except (FileNotFoundError, NotADirectoryError, KeyError) as exc:
        print(f"error: {_one_line(redact_text(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except ServerStartError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted; a re-run redoes what is unfinished", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            return _unexpected(exc, redact_text)
        print(f"storage error: {_one_line(redact_text(f'{exc}'))}; the run stopped (a re-run "
              f"redoes what is unfinished)", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback (GANI_TRACEBACK=1)
        return _unexpected(exc, redact_text)
    except BaseException as exc:
        # SIGTERM: ours (cli/server.py) or Prefect's flow engine's (TerminationSignal, after
        # it marked the flow run crashed). The temporary server is stopped by now; task
        # threads cannot be interrupted and every write is atomic: end now, as a kill would
        if not (isinstance(exc, Terminated) or type(exc).__name__ == "TerminationSignal"):
            raise
        print("terminated (SIGTERM); a re-run redoes what is unfinished", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143)


def _one_line(text: object, limit: int = 400) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = " / ".join(lines)
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _unexpected(exc: BaseException, redact_text) -> int:
    """Exit 1 with one line on stderr; GANI_TRACEBACK=1 re-raises (the full traceback)."""
    if os.environ.get("GANI_TRACEBACK", "") not in ("", "0"):
        raise exc
    print(f"unexpected error: {_one_line(redact_text(f'{type(exc).__name__}: {exc}'))} "
          f"(GANI_TRACEBACK=1 shows the traceback)", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
