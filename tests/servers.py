"""What the service tests share to start and reach a real server: a free local port and a wait
until an HTTP endpoint answers 200."""
from __future__ import annotations

import socket
import time
import urllib.request
from typing import Callable, Optional


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120, proc=None, what: str = "server",
              logs: Optional[Callable[[], str]] = None) -> None:
    """Return once `url` answers 200; fail (AssertionError, with `logs()` when given) when the
    process `proc` exits first or `timeout` seconds pass."""
    def tail() -> str:
        return f":\n{logs()}" if logs is not None else ""

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}{tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{what} at {url} did not answer in {timeout}s{tail()}")
