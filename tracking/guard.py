"""`TrackingGuard`: a circuit breaker per tracking URI, shared by the process's flow runs.

After a log task failed for good on a transient fault (the server is down), images are not
sent to MLflow (they count as tracking-failed and reconcile logs them later) until a probe
succeeds; a probe runs at most every `probe_seconds`: `GET <uri>/health` for an HTTP
server, else the next log attempt itself. `usable(force=True)` probes now (used before
reconcile). So a server that stays down costs one failed task, not one per image.
"""
from __future__ import annotations

import threading
import time
import urllib.request
from typing import Optional

from .client import is_http

PROBE_SECONDS = 30.0


class TrackingGuard:
    def __init__(self, uri: str, probe_seconds: float = PROBE_SECONDS):
        self.uri, self.probe_seconds = uri, probe_seconds
        self.down_since: Optional[float] = None
        self.last_try = 0.0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def usable(self, force: bool = False) -> bool:
        with self._lock:
            if self.down_since is None:
                return True
            now = time.monotonic()
            if not force and now - self.last_try < self.probe_seconds:
                return False
            self.last_try = now
        if not is_http(self.uri):
            return True  # half-open: the next attempt is the probe
        ok = self.probe()
        if ok:
            self.succeeded()
        return ok

    def probe(self, timeout: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=timeout) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    def failed(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self.down_since is None:
                self.down_since = now
            self.last_try = now

    def succeeded(self) -> None:
        with self._lock:
            self.down_since = None


_GUARDS: dict[str, TrackingGuard] = {}
_GUARDS_LOCK = threading.Lock()


def guard_for(uri: str) -> TrackingGuard:
    with _GUARDS_LOCK:
        return _GUARDS.setdefault(uri, TrackingGuard(uri))
