"""The temporary Prefect server of a `gani` command run without PREFECT_API_URL.

Prefect would start one itself (`SubprocessASGIServer`: a uvicorn child stopped by an
atexit hook), and a `gani` killed by SIGKILL, or by SIGTERM before the hook runs, left it
running for good (PPID 1, ~200 MB, its port held). Here the CLI starts the same server
itself, before Prefect is imported, so that it cannot outlive the CLI:

- the child asks the kernel for SIGTERM when its parent dies (Linux
  `prctl(PR_SET_PDEATHSIG)`, set between fork and exec), whatever kills the parent;
- where prctl is missing, the child gets a watchdog instead (`--watch PID` below: it
  exits when its parent is gone);
- SIGTERM of the CLI becomes `Terminated` (a SystemExit), so the `finally` of
  `temporary_server` stops it cleanly too, and the CLI then exits 143 at once;
- its start waits `GANI_PREFECT_SERVER_TIMEOUT` seconds (default 180: a loaded machine
  took ~55 s) and a server that does not come up is one line (`ServerStartError`, exit 1),
  not a traceback.

PREFECT_API_URL set (a real server, the tests' harness): nothing is started.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Iterator, Optional

DEFAULT_TIMEOUT = 180.0
PR_SET_PDEATHSIG = 1


class ServerStartError(RuntimeError):
    """The temporary Prefect server did not answer in time (the message is one line)."""


def startup_timeout() -> float:
    raw = os.environ.get("GANI_PREFECT_SERVER_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM to this child when the process that forked it dies."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # the parent may have died between fork and prctl: then nobody would signal us
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _command(port: int) -> list[str]:
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    app_dir = os.path.dirname(os.path.dirname(spec.origin)) if spec and spec.origin else "."
    return [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
            str(port), "--log-level", "error", "--lifespan", "on"]


def start(timeout: Optional[float] = None) -> tuple[subprocess.Popen, str]:
    """Start the server (the command Prefect's ephemeral mode runs) tied to this process;
    returns (process, API URL) once /health answers, else ServerStartError."""
    timeout = startup_timeout() if timeout is None else timeout
    linux = sys.platform.startswith("linux")
    for _ in range(3):                       # a port taken between the probe and the bind
        port = _free_port()
        env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", **os.environ,
               "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        cmd = _command(port)
        if not linux:
            cmd = [sys.executable, "-m", "cli.server", "--watch", str(os.getpid()), "--",
                   *cmd]
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if linux else None)
        url = f"http://127.0.0.1:{port}/api"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                break
            if _healthy(url):
                return proc, url
            time.sleep(0.2)
        code = proc.poll()
        stop(proc)
        if code is None:
            raise ServerStartError(
                f"the temporary Prefect server did not answer within {timeout:.0f} s (a "
                f"loaded machine?); raise GANI_PREFECT_SERVER_TIMEOUT or set PREFECT_API_URL "
                f"to a running server (`prefect server start`)")
    raise ServerStartError(f"the temporary Prefect server exited at start (code {code}); "
                           f"set PREFECT_API_URL to a running server (`prefect server start`)")


def stop(proc: Optional[subprocess.Popen]) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_WAKEUP_SOCKETS: list[socket.socket] = []


def _watch_sigterm(proc: subprocess.Popen) -> None:
    """SIGTERM ends the command within a second even while a flow runs: Prefect's flow
    engine swaps in its own SIGTERM handler and then waits for the running task threads
    (minutes of tuning). The C-level handler writes every signal number to the wakeup fd
    whatever Python handler is installed; a daemon thread reads it, stops the server and
    ends the process (every write is atomic: the same as a kill, minus the server)."""
    if threading.current_thread() is not threading.main_thread():
        return
    r, w = socket.socketpair()
    w.setblocking(False)
    try:
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        return
    # the kernel only knows the fd number: the socket objects must live as long as the
    # process (a collected `w` closes the fd; the signal byte then goes nowhere, EINVAL)
    _WAKEUP_SOCKETS.extend((r, w))

    def watch() -> None:
        while True:
            data = r.recv(64)
            if not data:
                return
            if signal.SIGTERM in data:
                stop(proc)
                try:
                    print("terminated (SIGTERM); the temporary Prefect server is stopped; a "
                          "re-run redoes what is unfinished", file=sys.stderr, flush=True)
                    sys.stdout.flush()
                finally:
                    os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="gani-sigterm", daemon=True).start()


def _drain_prefect() -> None:
    """Send what Prefect still queues for the API (events, logs) while the server is up."""
    for module, name in (("prefect.events.worker", "EventsWorker"),
                         ("prefect.logging.handlers", "APILogWorker")):
        if module not in sys.modules:
            continue
        try:
            getattr(sys.modules[module], name).drain_all(timeout=10)
        except Exception:  # noqa: BLE001 - best effort: the run itself is over
            pass


class Terminated(SystemExit):
    """SIGTERM reached the command (the CLI ends the process at once once the server is
    stopped: the task threads cannot be interrupted, and every write is atomic)."""


def _sigterm(signum, frame):  # noqa: ARG001
    raise Terminated(128 + signum)


@contextlib.contextmanager
def temporary_server() -> Iterator[Optional[str]]:
    """A temporary Prefect API for this command when PREFECT_API_URL is not set (yields its
    URL, exported as PREFECT_API_URL before Prefect is imported), else nothing (yields
    None). SIGTERM ends the command through SystemExit, so the server is stopped."""
    previous = signal.signal(signal.SIGTERM, _sigterm)
    proc = None
    try:
        if os.environ.get("PREFECT_API_URL"):
            yield None
            return
        if "prefect" in sys.modules:   # too late: Prefect's settings are already read
            yield None
            return
        proc, url = start()
        print(f"started a temporary Prefect server on {url} (stops with this command; set "
              f"PREFECT_API_URL to use a running one)", flush=True)
        os.environ["PREFECT_API_URL"] = url
        _watch_sigterm(proc)
        # the server's database goes with it: no point in shipping logs there (and none
        # is left queued to fail against a stopped server at exit)
        os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
        yield url
    finally:
        if proc is not None:
            _drain_prefect()
            os.environ.pop("PREFECT_API_URL", None)
            stop(proc)
        signal.signal(signal.SIGTERM, previous)


def _watch(parent: int, cmd: list[str]) -> int:
    """Without prctl: run `cmd`, and end it when `parent` is gone."""
    child = subprocess.Popen(cmd)
    while child.poll() is None:
        if os.getppid() != parent:
            stop(child)
            break
        time.sleep(1)
    return child.wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) > 3 and args[0] == "--watch" and args[2] == "--":
        sys.exit(_watch(int(args[1]), args[3:]))
    sys.exit(2)
