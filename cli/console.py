"""What the `gani` command shows while a night runs (docs/pipeline.md#the-console).

By default only what a person needs: the run's own lines (the plan, warnings, errors) and
one progress display for the night's images, a rich bar with counts, rate and ETA on a
terminal, plain `[n/N] id: state (elapsed, ETA)` lines otherwise (a log file, CI, a pipe).
Prefect's per-run INFO lines ("Created task run", "Finished in state Completed()", "View
at ...") and MLflow's / alembic's database set-up lines are dropped; their warnings and
errors still show. `--verbose` keeps Prefect's console handler as Prefect configures it and
MLflow's loggers as they are, with the flow's own `[n/N]` lines instead of the bar.

`quiet_logging(stream, display)` swaps Prefect's console handler on the root logger for
`RunLineHandler` and lowers nothing else; `Display` is a `flows.progress` listener.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import time
from pathlib import Path
from typing import Callable, Optional, TextIO

# MLflow's store and migrations say INFO per table and revision when a database is created
NOISY_LOGGERS = ("alembic", "mlflow")
TUNE_STEP = re.compile(r"^\S+ step \d+/\d+: ")


def _package_dir(name: str) -> str:
    """Where an installed package's files are (to tell its log records from ours)."""
    spec = importlib.util.find_spec(name)
    return str(Path(spec.origin).parent) if spec and spec.origin else "\0"


PREFECT_DIR = _package_dir("prefect")


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    m, s = divmod(seconds, 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


class Display:
    """The night's progress: a rich bar on a terminal, else one plain line per image.

    A `flows.progress` listener (`night_started`, `image_ended`), and where the run's own
    log lines go (`line`), so they print above the bar instead of through it."""

    def __init__(self, stream: TextIO, bar: Optional[bool] = None):
        self.stream = stream
        self.bar = stream.isatty() if bar is None else bar
        self.total = 0
        self.done = 0
        self.counts: dict[str, int] = {}
        self.t0 = time.monotonic()
        self._progress = None
        self._task = None

    # ---------------------------------------------------------------- listener

    def night_started(self, total: int, skipped: int) -> None:
        """A night with `total` images to process begins (a later night adds to it)."""
        self.total += total
        if self.done == 0:
            self.t0 = time.monotonic()
        if self.bar and total:
            self._start_bar()

    def image_ended(self, image_id: str, state: str, reason: Optional[str],
                    label: str) -> None:
        """Count one image; a bar advances (and prints bad ones above it), lines print."""
        self.done += 1
        self.counts[state] = self.counts.get(state, 0) + 1
        why = f" ({reason})" if reason else ""
        if self._progress is not None:
            self._progress.update(self._task, advance=1, status=self._status(),
                                  rate=speed_text(self.done, time.monotonic() - self.t0))
            if state != "done":
                self._progress.console.print(f"{label}{image_id}: {state}{why}",
                                             markup=False, highlight=False)
            return
        elapsed = time.monotonic() - self.t0
        total = max(self.total, self.done)
        eta = (f", ETA {_duration(elapsed / self.done * (total - self.done))}"
               if self.done < total else "")
        self._write(f"{label}[{self.done}/{total}] {image_id}: {state}{why}  "
                    f"({_duration(elapsed)} elapsed{eta})")

    # ---------------------------------------------------------------- output

    def line(self, text: str) -> None:
        """One line of the run's own output, above the bar when there is one."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self._write(text)

    def close(self) -> None:
        """Stop the bar (its last state stays on screen)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _status(self) -> str:
        return ", ".join(f"{n} {state}" for state, n in sorted(self.counts.items()))

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        if self._progress is None:
            console = Console(file=self.stream, force_terminal=True)
            self._progress = Progress(
                TextColumn("images"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                console=console, transient=False, redirect_stdout=False,
                redirect_stderr=False)
            self._task = self._progress.add_task("images", total=self.total, status="",
                                                 rate="")
            self._progress.start()
        else:
            self._progress.update(self._task, total=self.total)


def speed_text(done: int, seconds: float) -> str:
    """'12.0 img/min' (or '/h' when slower than one a minute)."""
    if done <= 0 or seconds <= 0:
        return ""
    per_min = done / seconds * 60
    return f"{per_min:.1f} img/min" if per_min >= 1 else f"{per_min * 60:.1f} img/h"


class RunLineHandler(logging.Handler):
    """The root logger's console handler when not --verbose: the run's own lines (what
    the flow and tasks print, which Prefect's log_prints turns into INFO records), plus
    WARNING and above from anything, each as a plain line through the display. Prefect's
    own INFO records (task and flow run lifecycle) are dropped, and so are the tuner's
    per-step loss lines while a bar shows progress."""

    def __init__(self, display: Display):
        super().__init__(level=logging.NOTSET)
        self.display = display

    def keep(self, record: logging.LogRecord) -> bool:
        """Whether a record is worth a line by default."""
        if record.levelno >= logging.WARNING:
            return True
        if record.pathname.startswith(PREFECT_DIR) or not record.name.startswith("prefect"):
            return False        # Prefect's own lifecycle lines; other libraries' INFO
        return not (self.display.bar and TUNE_STEP.match(record.getMessage()))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not self.keep(record):
                return
            text = record.getMessage()
            if record.levelno >= logging.WARNING and not text.lower().startswith(
                    ("warning", "error")):
                text = f"{record.levelname.lower()}: {text}"
            if record.exc_info and record.levelno >= logging.ERROR:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.display.line(text)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


def quiet_logging(display: Display) -> Callable[[], None]:
    """Prefect's console handler on the root logger replaced by `RunLineHandler`, MLflow's
    and alembic's INFO set-up lines silenced (their warnings stay). Returns the function
    that puts everything back (the CLI runs in-process in tests and Python sessions)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    root = logging.getLogger()
    removed = [(i, h) for i, h in enumerate(root.handlers)
               if isinstance(h, PrefectConsoleHandler)]
    for _, handler in removed:
        root.removeHandler(handler)
    ours = RunLineHandler(display)
    root.addHandler(ours)
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    def restore() -> None:
        root.removeHandler(ours)
        for index, handler in removed:     # back where they were, in the same order
            if handler not in root.handlers:
                root.handlers.insert(min(index, len(root.handlers)), handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    return restore
