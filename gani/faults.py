"""Fault injection points for the reliability tests: off by default, free when unset.

    GANI_FAULT=kill_after_<point>:<n>[,kill_after_<point>:<n>...]

SIGKILLs this process the n-th time (counted per process, from 1) it reaches `<point>`:

    tmp_write   `gani.io.write_bytes`: the temporary file is written and fsync'd, the
                `os.replace` onto the target has not happened yet (a kill mid-write)
    child_run   `tracking.Tracker.log_image`: the image's MLflow child run was just
                created, nothing is logged into it yet (a kill mid-log)

Callers guard with `if faults.ACTIVE:` so an unset GANI_FAULT costs one attribute read.
The variable is read once, at import: set it in the environment of the process to kill.
"""
from __future__ import annotations

import os
import signal
import threading

ENV = "GANI_FAULT"
POINTS = ("tmp_write", "child_run")


def _parse(spec: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, n = part.partition(":")
        if not name.startswith("kill_after_") or name[len("kill_after_"):] not in POINTS:
            raise ValueError(f"{ENV}: unknown fault {name!r}; use kill_after_<point>:<n> "
                             f"with point one of {', '.join(POINTS)}")
        try:
            count = int(n)
        except ValueError:
            raise ValueError(f"{ENV}: {part!r} needs a count, e.g. {name}:3") from None
        if count < 1:
            raise ValueError(f"{ENV}: {part!r}: the count starts at 1")
        out[name[len("kill_after_"):]] = count
    return out


_KILL_AT = _parse(os.environ.get(ENV, ""))
ACTIVE = bool(_KILL_AT)
_SEEN: dict[str, int] = {}
_LOCK = threading.Lock()


def hit(point: str) -> None:
    """Count one pass through `point`; SIGKILL this process when its count is reached."""
    if point not in _KILL_AT:
        return
    with _LOCK:
        _SEEN[point] = _SEEN.get(point, 0) + 1
        if _SEEN[point] == _KILL_AT[point]:
            os.kill(os.getpid(), signal.SIGKILL)
