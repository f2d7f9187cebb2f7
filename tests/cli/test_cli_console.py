"""What `gani` prints (issue 16, console): one progress display per night (a bar with rate
and ETA on a terminal, `[n/N]` lines otherwise), none of Prefect's task-run lines or
MLflow's database set-up lines unless --verbose, the readable summary with the MLflow link,
and JSON only with --json. The last two tests run the real command (a subprocess, profile
demo_random shrunk to seconds) from a folder outside the repository."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest

from cli.console import Display, RunLineHandler, quiet_logging
from tests.reliability.gani_runs import BIN, TINY, prefect_env, write_photos

ROOT = Path(__file__).resolve().parents[2]
PREFECT_NOISE = ("Finished in state", "Created task run", "Beginning flow run", "View at ")
MLFLOW_NOISE = ("alembic", "Context impl", "Creating initial MLflow database",
                "Running upgrade")


def test_plain_lines_count_and_give_an_eta():
    out = io.StringIO()
    d = Display(out, bar=False)
    d.night_started(3, skipped=1)
    d.image_ended("a", "done", None, "")
    d.image_ended("b", "quarantined", "truncated", "")
    d.image_ended("c", "failed", "tuning_nonfinite", "shard 2/2 ")
    lines = out.getvalue().splitlines()
    assert re.match(r"\[1/3\] a: done  \(\d+s elapsed, ETA \d+s\)$", lines[0]), lines
    assert lines[1].startswith("[2/3] b: quarantined (truncated)")
    assert re.match(r"shard 2/2 \[3/3\] c: failed \(tuning_nonfinite\)  \(\d+s elapsed\)$",
                    lines[2]), lines                 # the last one: no ETA left


def test_a_terminal_gets_one_bar_and_only_bad_images_as_lines():
    out = io.StringIO()
    d = Display(out, bar=True)
    d.night_started(2, skipped=0)
    d.line("dataset 'x': 2 images")
    d.image_ended("a", "done", None, "")
    d.image_ended("b", "failed", "storage_error", "")
    d.close()
    text = out.getvalue()
    assert "2/2" in text and "ETA" in text and "img/min" in text
    assert "b: failed (storage_error)" in text and "dataset 'x': 2 images" in text
    assert "a: done" not in text                       # the bar shows it


def _record(name: str, level: int, msg: str, pathname: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, pathname, 1, msg, None, None)


def test_only_the_runs_own_lines_and_warnings_pass():
    import prefect

    inside = os.path.join(os.path.dirname(prefect.__file__), "task_engine.py")
    out = io.StringIO()
    handler = RunLineHandler(Display(out, bar=False))
    handler.handle(_record("prefect.task_runs", logging.INFO,
                           "Finished in state Completed()", inside))
    handler.handle(_record("prefect.flow_runs", logging.INFO, "dataset 'x': 3 images",
                           str(ROOT / "flows" / "invert.py")))
    handler.handle(_record("alembic.runtime.migration", logging.INFO,
                           "Context impl SQLiteImpl.", "/x/alembic/migration.py"))
    handler.handle(_record("prefect.task_runs", logging.WARNING, "Task run failed", inside))
    handler.handle(_record("gani.config", logging.WARNING, "params.yaml x wins", "/x.py"))
    assert out.getvalue().splitlines() == ["dataset 'x': 3 images",
                                           "warning: Task run failed",
                                           "warning: params.yaml x wins"]


def test_quiet_logging_is_undone_after_the_run():
    root = logging.getLogger()
    before = list(root.handlers)
    restore = quiet_logging(Display(io.StringIO(), bar=False))
    assert any(isinstance(h, RunLineHandler) for h in root.handlers)
    assert logging.getLogger("alembic").level == logging.WARNING
    restore()
    assert root.handlers == before


def _gani(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **prefect_env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    cmd = [str(BIN / "gani"), "invert", "photos", *args, "--profile", "demo_random"]
    for s in TINY:
        cmd += ["--set", s]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.service
def test_a_run_outside_the_repository_prints_progress_and_the_summary(prefect_api, tmp_path):
    """`gani invert photos --out results` in a folder with no params.yaml (the packaged
    defaults), MLflow on a new SQLite file there: progress lines (no TTY), the summary with
    the MLflow link, and nothing of Prefect's or MLflow's own chatter."""
    write_photos(tmp_path / "photos", ["astronaut.png", "astronaut_mirrored.jpg", "broken.jpg"])
    r = _gani(tmp_path, "--out", "results")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert out.startswith("profile demo_random (from --profile)") and "packaged defaults" in out
    assert "NOTE: profile demo_random is small random networks" in out
    assert re.search(r"^\[3/3\] \S+: \w+", out, re.M), out
    assert re.search(r"^\[1/3\] .*ETA", out, re.M), out
    assert "Done in " in out and "2 done, 1 quarantined, 0 failed" in out
    assert re.search(r"then open http://127\.0\.0\.1:5000/#/experiments/\d+/runs/[0-9a-f]{32}"
                     r"\?workflowType=machine_learning", out), out
    for noise in PREFECT_NOISE + MLFLOW_NOISE:
        assert noise not in out + r.stderr, noise
    assert "{" not in out.split("Done in ", 1)[1]        # no JSON dump after the summary
    assert r.stderr == ""
    assert (tmp_path / "results" / "summary.json").is_file()


@pytest.mark.slow
@pytest.mark.service
def test_json_for_machines_and_verbose_for_debugging(prefect_api, tmp_path):
    """--json: stdout is summary.json alone (everything else on stderr); --verbose: Prefect's
    task-run lines are back."""
    write_photos(tmp_path / "photos", ["astronaut.png", "broken.jpg"])
    r = _gani(tmp_path, "--out", "results", "--json", "--verbose",
              "--set", "tracking.enabled=false")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary == json.loads((tmp_path / "results" / "summary.json").read_text())
    assert "Finished in state Completed()" in r.stderr
    assert "Done in " in r.stderr
