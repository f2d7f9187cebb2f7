"""The report recorder itself: rows, totals, markdown and the files it writes."""
from __future__ import annotations

import json

from . import report


def test_rows_totals_and_files(tmp_path):
    rec = report.Recorder(test="t")
    rec.from_summary("bad input", "mix", {"counts": {"done": 3, "quarantined": 2, "failed": 1}},
                     faults_injected=1, faults_survived=1)
    rec.add("crash", "kill", images=4, done=4, data_lost=0)
    for r in rec.rows:
        r.passed = True
    rec.rows[1].passed = False
    t = report.totals(rec.rows)
    assert t == {"images": 10, "done": 7, "quarantined": 2, "failed": 1, "faults_injected": 1,
                 "faults_survived": 1, "data_lost": 0, "cases": 2, "cases_passed": 1}
    md = report.markdown(rec.rows)
    assert "| bad input | mix | 6 | 3 | 2 | 1 | 1 | 1 | 0 | yes |" in md
    assert "| crash | kill | 4 | 4 | 0 | 0 | 0 | 0 | 0 | NO |" in md
    out = report.write(rec.rows, tmp_path / "r")
    data = json.loads((out / "report.json").read_text())
    assert data["totals"]["cases"] == 2 and len(data["rows"]) == 2
    assert (out / "report.md").read_text().startswith("# Reliability report")


def test_unknown_field_is_refused():
    rec = report.Recorder(test="t")
    try:
        rec.add("x", "y", imagez=1)
    except TypeError as exc:
        assert "imagez" in str(exc)
    else:
        raise AssertionError("an unknown field was accepted")
