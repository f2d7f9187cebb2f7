"""The temporary Prefect server of a `gani` run without PREFECT_API_URL never outlives the
command: SIGKILL or SIGTERM of the `gani` process alone (not its group) mid-run, and within
seconds no process it started is left and the server's port is free (cli/server.py). SIGTERM
ends the command within seconds (exit 143), and neither signal leaves an image marked done
with outputs missing."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import psutil
import pytest

from .gani_runs import BIN, ROOT, TINY, write_photos

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _no_false_done(out) -> list[str]:
    """Ids whose status.json says done while an artifact is missing: a partial result
    that a re-run would take for a finished one (must be none)."""
    from gani.stages.layout import ARTIFACTS, OPTIONAL_ARTIFACTS

    bad = []
    for status in out.glob("*/status.json") if out.is_dir() else []:
        record = json.loads(status.read_text())
        names = {name for a, (_, name) in ARTIFACTS.items() if a not in OPTIONAL_ARTIFACTS}
        if record.get("state") == "done" and any(
                not (status.parent / n).is_file() for n in names):
            bad.append(status.parent.name)
    return bad


# SIGTERM mid-flow: Prefect's flow engine swaps in its own SIGTERM handler and would wait
# for the task threads (minutes of tuning); the CLI's wakeup-fd watcher (cli/server.py)
# stops the server and ends the process at once, exit 143
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_temporary_server_dies_with_gani(tmp_path, reliability, sig):
    write_photos(tmp_path / "photos", ["astronaut.png", "astronaut_mirrored.jpg"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONUNBUFFERED="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    cmd = [str(BIN / "gani"), "invert", str(tmp_path / "photos"), "--out", str(tmp_path / "out"),
           "--profile", "demo", "--params", str(ROOT / "params.yaml")]
    for s in [*TINY, "tracking.enabled=false", "tune.steps=200"]:
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    started: list[psutil.Process] = []
    try:
        port, deadline = None, time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            text = "".join(lines)
            found = re.search(r"temporary Prefect server on http://127\.0\.0\.1:(\d+)", text)
            if found:
                port = int(found.group(1))
            if port and re.search(r"step \d+/200", text):     # tuning: mid-run
                break
            time.sleep(0.5)
        assert port and proc.poll() is None, "".join(lines)[-3000:]
        started = psutil.Process(proc.pid).children(recursive=True)
        assert started and _port_open(port)
        os.kill(proc.pid, sig)                               # the process, not its group
        rc = proc.wait(60)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            alive = [p for p in started if p.is_running()
                     and p.status() != psutil.STATUS_ZOMBIE]
            if not alive and not _port_open(port):
                break
            time.sleep(0.5)
        assert not alive, [(p.pid, p.cmdline()[:4]) for p in alive]
        assert not _port_open(port)
        if sig == signal.SIGTERM:
            assert rc == 143, "".join(lines)[-3000:]
            assert "terminated (SIGTERM)" in "".join(lines)
        assert not _no_false_done(tmp_path / "out")
        took = 20 - max(0.0, end - time.monotonic())
        reliability.add("crash", f"{sig.name} of gani (not its group): temporary Prefect "
                        f"server gone", images=2, faults_injected=1, faults_survived=1,
                        note=f"exit {rc}; {len(started)} child process(es) gone, port "
                        f"free within {took:.0f}s")
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in started:        # only what this gani started: never the session's server
            try:
                p.kill()
            except psutil.Error:
                pass
