"""The `gani` command line (docs/pipeline.md, "Run it", "The console" and "Exit status").

    gani demo                                  the whole DAG on bundled demo data (demo profile:
                                               the trained testbed)
    gani invert INPUT --out OUTPUT --profile P [--set key=value ...] [--json] [--verbose]
    gani checkpoints list | verify [--json] | import PATH...

Arguments, help (with examples and the exit codes) and "did you mean" for mistyped flags:
`cli/parser.py`. What a run shows while it runs (a progress bar, Prefect's and MLflow's
set-up lines hidden unless --verbose): `cli/console.py`. Every run ends with the same
readable summary (`flows.report.report`: counts, reasons, means, where the files are,
the MLflow run and its link); `--json` prints summary.json to stdout instead and sends
the readable output to stderr.

Exit status (cli.parser.EXIT_CODES):
    0  the run finished and every image is done or quarantined
    1  anything else: a storage fault that stopped the run, or an unexpected error
    2  bad usage or configuration, `gani invert` without --profile included
    3  a checkpoint is missing (every missing file of the profile listed, with its source),
       corrupt, unsafe or does not fit; nothing was processed
    4  the run finished but one or more images failed (a re-run retries them)
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import time
from typing import TextIO

from cli.parser import build_parser

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_CHECKPOINT, EXIT_FAILED = 0, 1, 2, 3, 4
# an OSError that stops a run because the output store cannot take writes: one line, exit 1
STORAGE_ERRNOS = frozenset(getattr(errno, n) for n in (
    "ENOSPC", "EDQUOT", "EROFS", "EFBIG", "EACCES", "EPERM", "EIO") if hasattr(errno, n))
# profiles that are not networks of a real domain: said out loud when `gani invert` uses one
TRIAL_PROFILES = {"demo": "the 32-px testbed trained on procedural faces: real photos are "
                          "outside its domain",
                  "demo_random": "small random networks: reconstructions and edits of real "
                                 "photos mean nothing"}

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_CONFIG", "EXIT_CHECKPOINT", "EXIT_FAILED",
           "build_parser", "exit_status", "main"]


# --------------------------------------------------------------------------- checkpoints

def checkpoint_records(data_dir: str, hash_files: bool) -> list[dict]:
    """Every registry checkpoint with its state, source (Drive ids as URLs) and licence."""
    from gani import checkpoints as ck
    from gani.checkpoints.needs import source_text
    from gani.checkpoints.store import checkpoint_dir

    records = []
    for st in ck.check_all(data_dir, hash_files=hash_files):
        spec = st.spec
        records.append({"name": spec.name, "kind": spec.kind, "domains": list(spec.domains),
                        "file": spec.file, "state": st.state,
                        "path": str(st.path) if st.path else None,
                        "expected_at": str(checkpoint_dir(data_dir) / spec.file),
                        "detail": st.detail, "source": source_text(spec.source),
                        "licence": spec.licence, "size": spec.size, "sha256": spec.sha256,
                        "note": spec.note})
    return records


def render_checkpoints(records: list[dict]) -> str:
    """One block per checkpoint, every field whole (long sources and licences wrap in the
    terminal instead of being cut)."""
    blocks = []
    for r in records:
        where = r["path"] or f"{r['expected_at']} (expected)"
        lines = [f"{r['name']}  [{r['state']}]  {r['kind']}, {', '.join(r['domains'])}",
                 f"  file:    {where}",
                 f"  source:  {r['source']}",
                 f"  licence: {r['licence']}"]
        if r["state"] not in ("missing",):
            lines.append(f"  check:   {r['detail']}")
        if r["note"]:
            lines.append(f"  note:    {r['note']}")
        blocks.append("\n".join(lines))
    missing = sum(1 for r in records if r["state"] == "missing")
    blocks.append(f"{len(records)} checkpoints, {missing} missing. Import downloaded files "
                  f"with `gani checkpoints import FILE...`; `--json` for scripts.")
    return "\n\n".join(blocks)


def _checkpoints(args: argparse.Namespace) -> int:
    from gani import checkpoints as ck

    if args.action == "import":
        statuses = ck.import_files(args.paths, args.data_dir, args.name)
        for s in statuses:
            print(f"imported {s.spec.name} -> {s.path} [{s.state}: {s.detail}]")
        print("Next: `dvc add data && git add data.dvc && dvc push` to version and share them.")
        return EXIT_OK
    records = checkpoint_records(args.data_dir, hash_files=(args.action == "verify"))
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print(render_checkpoints(records))
    if args.action == "verify" and any(r["state"] == "corrupt" for r in records):
        return EXIT_CHECKPOINT
    return EXIT_OK


# --------------------------------------------------------------------------- runs

def _check_uris(args: argparse.Namespace) -> None:
    from gani.config import check_uris

    check_uris(INPUT=getattr(args, "input", None), **{"--out": args.out})


def chosen_profile(args: argparse.Namespace) -> tuple[str, str]:
    """(profile, where it was chosen). `gani invert` takes it from --profile or from a
    `profile:` key of the user's own parameters file (./params.yaml or --params), never
    from the packaged defaults (nor the repository's params.yaml, the same file): running
    a guessed network on real photos is the one mistake a run cannot show. ConfigError
    (exit 2), listing the profiles, otherwise."""
    from gani.config import ConfigError, packaged_params_path, params_sources, read_params

    if args.profile:
        return args.profile, "--profile"
    sources = params_sources(args.params)
    if args.command == "demo":
        return "demo", "gani demo's default"
    for source in reversed(sources):
        if source.resolve() != packaged_params_path().resolve():
            found = read_params(source).get("profile")
            if found:
                return str(found), str(source)
    from gani.config import read_layered_params

    known = ", ".join(sorted(read_layered_params(args.params).get("profiles") or {}))
    raise ConfigError(
        f"gani invert needs --profile: which networks to run on the photos. Choose one of: "
        f"{known} (ffhq, cars, church, horse, afhq_wild: real domains, their checkpoints "
        f"imported first; demo, demo_random: trial networks, not for real photos). E.g. "
        f"gani invert {args.input} --out {args.out} --profile ffhq")


def run_header(args: argparse.Namespace, settings, chosen_by: str) -> list[str]:
    """What the run will use, said before any work: profile (and who chose it), networks,
    tuner, parameter files; a loud note for a trial profile on `gani invert`."""
    from gani.config import packaged_params_path, params_sources
    from gani.tuning.api import steps_of

    m = settings.models
    [source] = params_sources(args.params)
    files = ("the packaged defaults" if source.resolve() == packaged_params_path().resolve()
             else str(source))
    lines = [f"profile {settings.profile} (from {chosen_by}): domain {settings.domain}, "
             f"generator {m.generator.checkpoint} ({m.generator.size} px), encoder "
             f"{m.encoder.checkpoint}, {steps_of(settings.tune.method, settings.tune)} "
             f"{settings.tune.method} steps; parameters: {files}"
             + (f" + {len(args.overrides)} --set" if args.overrides else "")]
    if args.command == "invert" and settings.profile in TRIAL_PROFILES:
        lines.append(f"NOTE: profile {settings.profile} is {TRIAL_PROFILES[settings.profile]}"
                     f". For real photos use a domain profile (ffhq, cars, church, horse, "
                     f"afhq_wild) with its checkpoints (`gani checkpoints list`).")
    return lines


class RunConsole:
    """The run's display and logging for its duration (cli/console.py): the bar or lines
    subscribed to `flows.progress`, Prefect's and MLflow's set-up lines hidden unless
    --verbose."""

    def __init__(self, stream: TextIO, verbose: bool):
        self.stream = stream
        self.verbose = verbose
        self.display = None
        self._unsubscribe = self._restore = None

    def __enter__(self) -> "RunConsole":
        if self.verbose:
            return self          # Prefect's handler and the flow's own [n/N] lines
        from cli.console import Display, quiet_logging
        from flows import progress

        self.display = Display(self.stream)
        self._restore = quiet_logging(self.display)
        self._unsubscribe = progress.subscribe(self.display)
        return self

    def __exit__(self, *exc) -> None:
        if self.display is not None:
            self.display.close()
            self._unsubscribe()
            self._restore()


def _flows_quiet(verbose: bool) -> None:
    """Before Prefect and MLflow are imported: MLflow's INFO set-up lines off unless
    --verbose (its loggers read MLFLOW_LOGGING_LEVEL when first imported)."""
    if not verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def _run(args: argparse.Namespace) -> tuple[int, dict]:
    """Run `gani demo` / `gani invert`: (exit status, the run's summary)."""
    from gani.checkpoints.needs import require_all
    from gani.config import load_settings

    _check_uris(args)
    profile, chosen_by = chosen_profile(args)
    settings = load_settings(args.params, profile, args.overrides)
    if args.command == "invert":     # one error line and nothing else when they fail
        from flows.checks import check_run_inputs

        check_run_inputs(args.input, args.out)
    require_all(settings)            # every missing file listed, before anything starts
    for line in run_header(args, settings, chosen_by):
        print(line)
    _flows_quiet(args.verbose)
    from cli.server import temporary_server

    t0 = time.perf_counter()
    summary = None
    if args.command == "demo":  # a re-run with nothing to do is answered from disk
        from flows.demo import finished_demo

        summary = finished_demo(settings, output_uri=args.out)
    if summary is None:
        with temporary_server():     # none outlives this process (cli/server.py)
            from flows.invert import run_demo, run_invert

            with RunConsole(sys.stdout, args.verbose):
                if args.command == "demo":
                    summary = run_demo(settings, output_uri=args.out)
                else:
                    summary = run_invert(args.input, args.out, settings,
                                         dataset_name=args.dataset)
            if args.command == "invert":
                from flows.report import report

                print(report(summary, settings, time.perf_counter() - t0))
    return exit_status(summary), summary


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
    as_json = args.command != "checkpoints" and args.json
    # Prefect's console log (--verbose) goes to stdout: stderr carries only the run's error
    # lines, one per problem (docs/output-contract.md#exit-status); with --json stdout is
    # the summary alone and everything a person reads goes to stderr
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM",
                          "ext://sys.stderr" if as_json else "ext://sys.stdout")
    from gani.checkpoints import (CheckpointCorruptError, CheckpointLoadError,
                                  CheckpointMissingError)
    from cli.server import ServerStartError, Terminated
    from gani.config import ConfigError
    from gani.redact import redact_text

    try:
        if args.command == "checkpoints":
            return _checkpoints(args)
        if as_json:
            with contextlib.redirect_stdout(sys.stderr):
                code, summary = _run(args)
            print(json.dumps(summary, indent=2, default=str))
            return code
        return _run(args)[0]
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
