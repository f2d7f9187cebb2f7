"""The reliability report: every test in tests/reliability adds rows saying what it tried and
what came out, and the session prints them as one table (and writes it when asked).

    def test_truncated(reliability, ...):
        summary = ...run the pipeline...
        reliability.from_summary("bad input", "truncated JPEG", summary, data_lost=0)
        reliability.add("crash", "SIGKILL during tune", faults_injected=3, faults_survived=3)

A row's `passed` is the outcome of the test that added it, so a failing test shows up in the
table as failed, never as a success. `GANI_RELIABILITY_REPORT=<dir>` writes `report.json`
and `report.md` there (benchmarks/reliability/run.py sets it).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

# pytest's per-run temporary folders, scrubbed from notes so reports of two runs compare
_TMP = re.compile(r"/\S*?pytest-of-[^/\s]+/pytest-\d+/")

COLUMNS = ("area", "case", "images", "done", "quarantined", "failed", "faults_injected",
           "faults_survived", "data_lost", "passed", "note")


@dataclass
class Row:
    area: str
    case: str
    images: int = 0
    done: int = 0
    quarantined: int = 0
    failed: int = 0
    faults_injected: int = 0
    faults_survived: int = 0
    data_lost: int = 0
    note: str = ""
    test: str = ""
    passed: Optional[bool] = None


@dataclass
class Recorder:
    """Collects the rows of one test (the `reliability` fixture)."""

    test: str
    rows: list[Row] = field(default_factory=list)

    def add(self, area: str, case: str, **values: Any) -> Row:
        unknown = set(values) - {f for f in Row.__dataclass_fields__} - {"test", "passed"}
        if unknown:
            raise TypeError(f"unknown report fields {sorted(unknown)}")
        if "note" in values:
            values["note"] = _TMP.sub("<tmp>/", str(values["note"]))
        row = Row(area=area, case=case, test=self.test, **values)
        self.rows.append(row)
        return row

    def from_summary(self, area: str, case: str, summary: Mapping[str, Any], **values: Any
                     ) -> Row:
        """A row whose image counts come from a run's summary.json."""
        counts = summary.get("counts") or {}
        images = sum(int(counts.get(k, 0)) for k in ("done", "quarantined", "failed")) \
            + int(summary.get("pending", 0) or 0)
        base = {"images": images, "done": int(counts.get("done", 0)),
                "quarantined": int(counts.get("quarantined", 0)),
                "failed": int(counts.get("failed", 0))}
        return self.add(area, case, **{**base, **values})


ALL_ROWS: list[Row] = []


def totals(rows: list[Row]) -> dict[str, int]:
    keys = ("images", "done", "quarantined", "failed", "faults_injected", "faults_survived",
            "data_lost")
    out = {k: sum(getattr(r, k) for r in rows) for k in keys}
    out["cases"] = len(rows)
    out["cases_passed"] = sum(1 for r in rows if r.passed)
    return out


def markdown(rows: list[Row]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for r in sorted(rows, key=lambda r: (r.area, r.case)):
        d = asdict(r)
        cells = []
        for c in COLUMNS:
            v = d[c]
            cells.append("yes" if v is True else "NO" if v is False else
                         "" if v is None else str(v).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    t = totals(rows)
    lines.append(f"| **total** | {t['cases']} cases, {t['cases_passed']} passed | {t['images']} "
                 f"| {t['done']} | {t['quarantined']} | {t['failed']} | {t['faults_injected']} "
                 f"| {t['faults_survived']} | {t['data_lost']} | | |")
    return "\n".join(lines)


def write(rows: list[Row], folder: str | os.PathLike) -> Path:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    data = {"totals": totals(rows), "rows": [asdict(r) for r in rows]}
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "report.md").write_text("# Reliability report\n\n" + markdown(rows) + "\n")
    return out
