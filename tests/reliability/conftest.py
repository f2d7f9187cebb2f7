"""Fixtures of the reliability suite: the `reliability` report recorder (see report.py)."""
from __future__ import annotations

import os

import pytest

from . import report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    rec = getattr(item, "_reliability", None)
    if rec is None:
        return
    failed = rep.failed or (rep.when == "call" and rep.outcome != "passed")
    for row in rec.rows:
        if failed:
            row.passed = False
        elif rep.when == "call" and row.passed is None:
            row.passed = True


@pytest.fixture
def reliability(request):
    rec = report.Recorder(test=request.node.nodeid.split("::", 1)[-1])
    request.node._reliability = rec
    yield rec
    report.ALL_ROWS.extend(rec.rows)


def pytest_terminal_summary(terminalreporter):
    if not report.ALL_ROWS:
        return
    terminalreporter.section("reliability report")
    terminalreporter.write_line(report.markdown(report.ALL_ROWS))
    folder = os.environ.get("GANI_RELIABILITY_REPORT")
    if folder:
        path = report.write(report.ALL_ROWS, folder)
        terminalreporter.write_line(f"written to {path}/report.md and report.json")
