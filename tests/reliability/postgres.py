"""A throwaway PostgreSQL server for tests: `initdb` into a temporary folder, `postgres` on a
free 127.0.0.1 port (its unix socket in that folder too), databases created with
`createdb`, everything stopped and removed by `stop()`.

PostgreSQL refuses to run as root, so as root (CI on a bare Debian machine, where
.ci/run installs the `postgresql` package) every command runs as the `postgres` user through
`runuser -u postgres --`, and the folder belongs to that user. `binaries()` is None when no
PostgreSQL is installed (a developer machine without it): the tests that need it skip.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from tests.servers import free_port


def binaries() -> Optional[Path]:
    """The folder holding initdb/postgres/createdb (Debian keeps them off PATH), or None."""
    found = shutil.which("initdb")
    if found:   # /usr/local/bin/initdb may be a link: its real folder holds the rest
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def why_unavailable() -> Optional[str]:
    """None when a cluster can be started here, else the reason (for pytest.skip)."""
    if binaries() is None:
        return ("PostgreSQL is not installed (no initdb on PATH or under "
                "/usr/lib/postgresql/*/bin): `apt-get install postgresql`; .ci/run does")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _user_exists("postgres")):
        return "running as root, and there is no `postgres` user / runuser to run PostgreSQL as"
    return None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class PgCluster:
    """`PgCluster(["prefect", "mlflow"]).start()`; `url(db, driver)`; `stop()`."""

    def __init__(self, databases: list[str]):
        self.databases = databases
        self.bin = binaries()
        self.as_root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="gani-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.folder / "postgres.log"

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def _run(self, *args: str) -> None:
        r = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({r.returncode}): {r.stdout[-2000:]}"
                               f"{r.stderr[-2000:]}")

    @property
    def user(self) -> str:
        return "postgres"

    def start(self) -> "PgCluster":
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        os.chmod(self.folder, 0o700)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self._cmd("postgres", "-D", str(self.data), "-p", str(self.port),
                      "-h", "127.0.0.1", "-k", str(self.folder), "-c", "fsync=off",
                      "-c", "max_connections=200", "-c", "synchronous_commit=off",
                      "-c", "full_page_writes=off"),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        end = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}): "
                                   f"{self.log_path.read_text()[-2000:]}")
            r = subprocess.run(self._cmd("pg_isready", "-h", "127.0.0.1", "-p", str(self.port)),
                               capture_output=True)
            if r.returncode == 0:
                break
            if time.monotonic() > end:
                raise TimeoutError(f"postgres did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        for db in self.databases:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, db)
        return self

    def url(self, db: str, driver: str = "postgresql") -> str:
        """A SQLAlchemy URL: driver `postgresql` (psycopg2) or `postgresql+asyncpg`."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL) and remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            try:  # SIGINT = PostgreSQL's fast shutdown (disconnects clients)
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
