"""Remote: a real `mlflow server` (SQLite backend, proxied local artifacts) that stops in
the middle of a run and comes back, that stops for good, and that is down when the run
starts. `gani invert` runs as a subprocess with MLflow's own HTTP retries turned down
(MLFLOW_HTTP_REQUEST_MAX_RETRIES=0, a 5 s timeout) so that the pipeline's retries
(orchestration.retries, exponential backoff from retry_delay_seconds) do the work and show
in the log. The night is never lost: images are processed and kept on disk, summary.json
says which were not logged (`tracking_failed`), and the next run logs them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.reliability.gani_runs import (BAD, BIN, GOOD, TINY, GaniProcess, audit_mlflow,
                                         audit_outputs, lost_in_mlflow, lost_on_disk,
                                         run_to_end, write_photos)
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.timeout(900)]

EXPERIMENT = "gani-photos-demo_random"
FAST_MLFLOW = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}


class MlflowServer:
    """`mlflow server` on a fixed port; stop() kills it (SIGKILL to its group), start()
    brings it back on the same port with the same store."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.starts = 0

    def start(self, timeout: float = 180) -> None:
        log = open(self.root / f"mlflow-server-{self.starts}.log", "wb")
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri",
             f"sqlite:///{self.root / 'server.db'}", "--artifacts-destination",
             (self.root / "server-artifacts").as_uri(), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.starts += 1
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError("mlflow server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def workdir(tmp_path, prefect_api, server):
    data = tmp_path / "photos"
    ids = write_photos(data, GOOD + BAD)
    good = sorted(i for i, name in ids.items() if name in GOOD)
    return {"tmp": tmp_path, "data": data, "out": tmp_path / "out", "ids": sorted(ids),
            "good": good, "uri": server.url}


def sets(w: dict, retries: int, delay: float) -> list[str]:
    return TINY + [f"tracking.uri={w['uri']}", f"orchestration.retries={retries}",
                   f"orchestration.retry_delay_seconds={delay}"]


def summary_of(w: dict) -> dict:
    return json.loads((w["out"] / "summary.json").read_text())


def retries_seen(output: str) -> int:
    return sum(1 for ln in output.splitlines() if " - Retry " in ln and "will start" in ln)


def test_server_stops_mid_run_and_comes_back(workdir, server, reliability):
    """The server is killed right after the first image's child run is logged and started
    again on the same port 4 s later; the log tasks in between are retried with backoff
    (1, 2, 4, 8, 16 s) and the run completes with every image logged."""
    w = workdir
    server.start()
    p = GaniProcess(w["data"], w["out"], sets(w, retries=5, delay=1), w["tmp"], FAST_MLFLOW)
    outage = {}

    def chaos():
        if p.wait_for(r"\[1/\d+\] ", timeout=300) is None:
            return
        server.stop()
        outage["t0"] = time.monotonic()
        time.sleep(4)
        server.start()
        outage["seconds"] = round(time.monotonic() - outage["t0"], 1)

    t = threading.Thread(target=chaos)
    t.start()
    rc = p.wait(600)
    t.join(300)
    output = p.output
    assert rc == 0, output[-4000:]
    assert "seconds" in outage, "the server was never stopped"
    disk = audit_outputs(w["out"], w["ids"], w["good"])
    ml = audit_mlflow(w["uri"], EXPERIMENT, w["out"], w["ids"])
    retried = retries_seen(output)
    summary = summary_of(w)
    reliability.from_summary(
        "remote: MLflow", f"server killed after the first image, back after "
        f"{outage['seconds']} s", summary, faults_injected=1,
        faults_survived=int(summary["tracking"] == "ok" and not summary["tracking_failed"]),
        data_lost=lost_on_disk(disk) + lost_in_mlflow(ml),
        note=f"{retried} task retries logged; tracking {summary['tracking']}")
    assert retried >= 1, "no MLflow call met the outage"
    assert summary["tracking"] == "ok" and summary["tracking_failed"] == []
    assert summary["tracking_error"] is None
    assert disk["not_done"] == [] and disk["corrupt"] == {} and disk["summary_ok"]
    assert ml["problems"] == [] and ml["missing"] == [] and ml["duplicated"] == []
    assert ml["running"] == [] and ml["wrong"] == [] and ml["bad_artifacts"] == []


def test_server_gone_for_good_then_next_run_logs_the_rest(workdir, server, reliability):
    """The server dies after the first image and does not come back: the run still
    finishes (every image processed and kept), lists the images it could not log in
    summary.json `tracking_failed` and warns. With the server back, the next run resumes
    the same parent and logs exactly those images (reconcile)."""
    w = workdir
    server.start()
    p = GaniProcess(w["data"], w["out"], sets(w, retries=1, delay=0.5), w["tmp"], FAST_MLFLOW)
    assert p.wait_for(r"\[1/\d+\] ", timeout=300) is not None, p.output[-3000:]
    server.stop()
    t0 = time.monotonic()
    rc = p.wait(600)
    took = time.monotonic() - t0
    output = p.output
    assert rc == 0, output[-4000:]
    summary = summary_of(w)
    disk = audit_outputs(w["out"], w["ids"], w["good"])
    state = json.loads((w["out"] / ".gani-tracking.json").read_text())
    # what the outage run left in MLflow (read with the server back, before the next run):
    # an image neither logged completely nor listed in tracking_failed was lost silently
    server.start()
    before = audit_mlflow(w["uri"], EXPERIMENT, w["out"], w["ids"], check_artifacts=False)
    failed_listed = set(summary["tracking_failed"])
    incomplete = {i for i in w["ids"]
                  if i in before["missing"] or i in before["duplicated"] or i in before["wrong"]}
    unlisted = sorted(incomplete - failed_listed)
    server.stop()
    reliability.from_summary(
        "remote: MLflow", "server killed after the first image, never back", summary,
        faults_injected=1, faults_survived=1,
        data_lost=lost_on_disk(disk) + len(unlisted) + len(failed_listed - set(w["ids"])),
        note=f"run finished {took:.0f}s after the kill; tracking {summary['tracking']}, "
             f"tracking_failed {len(summary['tracking_failed'])}")
    assert unlisted == [], f"not logged and not reported: {unlisted}"
    assert disk["not_done"] == [] and disk["corrupt"] == {} and disk["unfinished"] == []
    assert summary["tracking"] == "incomplete"
    assert summary["tracking_failed"] and set(summary["tracking_failed"]) < set(w["ids"])
    assert summary["tracking_error"], "the reason the images were not logged"
    assert "warning: MLflow tracking incomplete" in output
    assert state["finished"] is False and state["parent_run_id"] == summary["mlflow_run_id"]

    server.start()
    rc, output2 = run_to_end(w["data"], w["out"], sets(w, retries=1, delay=0.5), w["tmp"],
                             FAST_MLFLOW)
    assert rc == 0, output2[-4000:]
    again = summary_of(w)
    ml = audit_mlflow(w["uri"], EXPERIMENT, w["out"], w["ids"])
    reliability.from_summary(
        "remote: MLflow", "next run after a permanent outage (reconcile)", again,
        faults_injected=0, faults_survived=0,
        data_lost=lost_on_disk(audit_outputs(w["out"], w["ids"], w["good"]))
        + lost_in_mlflow(ml),
        note=f"logged the {len(incomplete)} images the outage missed under the same parent"
             + (f" ({len(failed_listed - incomplete)} listed were complete already)"
                if failed_listed - incomplete else ""))
    assert again["processed"] == 0 and again["tracking"] == "ok"
    assert again["tracking_failed"] == [] and again["tracking_error"] is None
    # reconcile logs exactly the images without a complete child run. That is every listed
    # image, except one whose child run was completed server-side while its client call
    # failed at the kill (listed, yet complete: nothing left to log)
    assert incomplete <= failed_listed, (incomplete, failed_listed)
    said = [ln for ln in output2.splitlines() if "MLflow reconcile:" in ln]
    if incomplete:
        assert any(f"{len(incomplete)} image(s) final on disk without a complete child run"
                   in ln for ln in said), (said, sorted(incomplete), sorted(failed_listed))
    else:
        assert said == [], (said, sorted(failed_listed))
    assert ml["parent"].info.run_id == summary["mlflow_run_id"]      # resumed, not new
    assert ml["problems"] == [] and ml["missing"] == [] and ml["duplicated"] == []
    assert ml["running"] == [] and ml["wrong"] == [] and ml["bad_artifacts"] == []


def test_server_down_at_start(workdir, server, reliability):
    """No server when the run starts: the images are processed anyway, summary.json says
    tracking `unavailable` and lists them; the next run (server up) opens the parent and
    logs every image of the logical run."""
    w = workdir
    rc, output = run_to_end(w["data"], w["out"], sets(w, retries=2, delay=0.5), w["tmp"],
                            FAST_MLFLOW)
    assert rc == 0, output[-4000:]
    summary = summary_of(w)
    disk = audit_outputs(w["out"], w["ids"], w["good"])
    unreported = sorted(set(w["ids"]) - set(summary["tracking_failed"]))  # not logged either
    reliability.from_summary(
        "remote: MLflow", "server down when the run starts", summary, faults_injected=1,
        faults_survived=1, data_lost=lost_on_disk(disk) + len(unreported),
        note=f"{retries_seen(output)} retries of start-tracking; tracking "
             f"{summary['tracking']}, {len(summary['tracking_failed'])} images to log later")
    assert retries_seen(output) >= 2
    assert summary["tracking"] == "unavailable" and summary["mlflow_run_id"] is None
    assert sorted(summary["tracking_failed"]) == w["ids"]
    assert summary["tracking_error"], "why tracking was unavailable"
    assert disk["not_done"] == [] and disk["corrupt"] == {} and disk["summary_ok"]
    assert "is unavailable" in output

    server.start()
    rc, output2 = run_to_end(w["data"], w["out"], sets(w, retries=2, delay=0.5), w["tmp"],
                             FAST_MLFLOW)
    assert rc == 0, output2[-4000:]
    again = summary_of(w)
    ml = audit_mlflow(w["uri"], EXPERIMENT, w["out"], w["ids"])
    reliability.from_summary(
        "remote: MLflow", "next run after MLflow was down at the start", again,
        data_lost=lost_in_mlflow(ml), note="all images logged by reconcile")
    assert again["processed"] == 0 and again["tracking"] == "ok"
    assert again["tracking_failed"] == [] and again["tracking_error"] is None
    assert ml["problems"] == [] and ml["missing"] == [] and ml["duplicated"] == []
    assert ml["running"] == [] and ml["wrong"] == [] and ml["bad_artifacts"] == []
