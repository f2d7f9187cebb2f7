"""Run the reliability suite (tests/reliability) and write its report table.

    .venv/bin/python -m benchmarks.reliability.run            # -> benchmarks/reliability/results/
    .venv/bin/python -m benchmarks.reliability.run -k crash   # extra arguments go to pytest

Every case builds its own bad input or injects its own fault (see tests/reliability/); the
table lists cases tried, images done / quarantined / failed, faults injected and survived,
and data lost. Exit status is pytest's.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> int:
    env = {**os.environ, "GANI_RELIABILITY_REPORT": str(RESULTS)}
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider",
           *argv]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
