"""Helpers of the crash and MLflow-fault tests: run `gani invert` as a real subprocess (so it
can be SIGKILLed), and audit what a run left: the output root and the MLflow runs.

- `TINY`: the `--set` overrides of `shrink` (tests/conftest.py) for the CLI.
- `run_captured(fn, ...)`: fn's result and everything it printed (in-process runs).
- `GaniProcess`: `gani invert` in its own process group, its output collected line by
  line; `wait_for(regex)`, `kill()` (SIGKILL to the group: a crashed machine), `wait()`.
- `audit_outputs(out, ids, good)`: every file under the output root parsed by its kind, no
  temporary file left, every good image done and complete, summary.json agreeing with the
  status files.
- `audit_mlflow(uri, experiment, out, ids)`: one FINISHED parent for the output root's
  logical run, exactly one complete child per image (state and content key as on disk),
  no RUNNING run anywhere in the experiment, the children's artifacts parse.
"""
from __future__ import annotations

import contextlib
import io as _io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

TINY = ["models.generator.size=32", "models.generator.style_dim=32",
        "models.generator.n_mlp=2", "models.generator.channel_max=32",
        "models.encoder.width_div=16", "tune.steps=2", "tune.batch_size=2", "tune.log_every=1",
        "encode.projection_steps=2", "edit.pca_samples=64", "edit.factors=[-2.0,2.0]",
        "evaluate.locality_n=1", "evaluate.size=64", "orchestration.max_concurrency=2",
        "orchestration.retries=1", "orchestration.retry_delay_seconds=0"]

GOOD = ["astronaut.png", "astronaut_mirrored.jpg", "astronaut_tilted.png"]
BAD = ["broken.jpg"]   # a truncated JPEG: quarantined, never done


def write_photos(folder: Path, names: list[str]) -> dict[str, str]:
    """The demo images `names` in `folder`; returns {image id: file name}."""
    from gani import io
    from gani.stages.demo_data import demo_images

    files = demo_images()
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(files[name])
    return dict(zip(io.image_ids(sorted(names)), sorted(names)))


def prefect_env() -> dict[str, str]:
    """PREFECT_API_URL / PREFECT_HOME of the running test harness, for subprocesses."""
    import prefect.settings

    return {"PREFECT_API_URL": str(prefect.settings.PREFECT_API_URL.value()),
            "PREFECT_HOME": os.environ.get("PREFECT_HOME", ""),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}


class KeptOpen(StringIO):
    """A capture buffer that stays usable after the test: Prefect's console log handler
    keeps the stream it found at its first flow run, and pytest's capsys/capfd streams are
    closed after their test (later flow runs would then fail writing to them)."""

    def close(self):
        pass


def run_captured(fn, *args, **kwargs):
    """(fn's result, everything it printed to sys.stdout/sys.stderr)."""
    buf = KeptOpen()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        result = fn(*args, **kwargs)
    return result, buf.getvalue()


class GaniProcess:
    """`gani invert data --out out --profile demo --set ...` in its own process group."""

    def __init__(self, data: Path, out: Path, sets: list[str], cwd: Path,
                 env: Optional[dict] = None):
        full = dict(os.environ)
        full.update({"PYTHONUNBUFFERED": "1", "PATH": f"{BIN}{os.pathsep}{full.get('PATH', '')}",
                     **prefect_env(), **(env or {})})
        if "GANI_FAULT" not in (env or {}):
            full.pop("GANI_FAULT", None)
        # --verbose: Prefect's task-run lines, which test_crash counts to time its kills
        cmd = [str(BIN / "gani"), "invert", str(data), "--out", str(out), "--profile", "demo_random",
               "--params", str(ROOT / "params.yaml"), "--verbose"]
        for s in sets:
            cmd += ["--set", s]
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=full, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 300) -> Optional[str]:
        """The `count`-th output line matching `pattern`, or None if the process ended (or
        `timeout` passed) first."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [ln for ln in self.lines if rx.search(ln)]
                if len(hits) >= count:
                    return hits[count - 1]
                if self.proc.poll() is not None and not self._reader.is_alive():
                    return None
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def kill(self) -> bool:
        """SIGKILL the whole process group; True if the run was still going."""
        alive = self.proc.poll() is None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(60)
        self._reader.join(10)
        return alive

    def wait(self, timeout: float = 600) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            try:  # the group may hold children the run left (a self-killed run's helpers)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reader.join(10)
        return rc

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def run_to_end(data: Path, out: Path, sets: list[str], cwd: Path, env: Optional[dict] = None,
               timeout: float = 600) -> tuple[int, str]:
    p = GaniProcess(data, out, sets, cwd, env)
    rc = p.wait(timeout)
    return rc, p.output


# --------------------------------------------------------------------------- output audit

def parse_file(path: Path) -> Optional[str]:
    """None when the file parses as its kind says, else the reason."""
    name = path.name
    try:
        if name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith((".png", ".webp", ".jpg", ".jpeg")):   # .webp: mlflow log_image
            from PIL import Image

            with Image.open(path) as im:
                im.load()
        elif name.endswith(".pt"):
            import torch

            torch.load(_io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
        elif name.endswith(".safetensors"):
            from safetensors.torch import load_file

            load_file(str(path))
        else:
            return "unexpected file"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def temp_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"))


def audit_files(out: Path) -> dict[str, str]:
    """{relative path: why it is bad} for every file that does not parse (temporary
    files excluded: see `temp_files`)."""
    bad = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp")):
            why = parse_file(p)
            if why:
                bad[str(p.relative_to(out))] = why
    return bad


def audit_outputs(out: Path, ids: list[str], good: list[str]) -> dict:
    """What is wrong under the output root after a finished run (empty lists: nothing)."""
    from gani.stages.layout import ARTIFACTS, OPTIONAL_ARTIFACTS

    statuses = {i: json.loads((out / i / "status.json").read_text())
                if (out / i / "status.json").is_file() else {} for i in ids}
    not_done = sorted(i for i in good if statuses[i].get("state") != "done")
    missing = sorted(f"{i}/{name}" for i in good for a, (_, name) in ARTIFACTS.items()
                     if a not in OPTIONAL_ARTIFACTS and not (out / i / name).is_file())
    unfinished = sorted(i for i in ids if statuses[i].get("state") not in
                        ("done", "quarantined", "failed"))
    summary = json.loads((out / "summary.json").read_text()) \
        if (out / "summary.json").is_file() else {}
    tally = {k: sum(1 for s in statuses.values() if s.get("state") == k)
             for k in ("done", "quarantined", "failed")}
    summary_ok = (summary.get("counts") == tally and summary.get("images") == len(ids)
                  and summary.get("pending") == 0
                  and set(summary.get("quarantined") or {}) == {
                      i for i, s in statuses.items() if s.get("state") == "quarantined"})
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    return {"not_done": not_done, "missing": missing, "unfinished": unfinished,
            "corrupt": audit_files(out), "temp_files": temp_files(out),
            "summary_ok": summary_ok, "summary": summary, "statuses": statuses,
            "extra_folders": sorted(set(folders) - set(ids)), "tally": tally}


# --------------------------------------------------------------------------- MLflow audit

def mlflow_runs(uri: str, experiment: str):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, []
    return client, client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL,
                                      max_results=5000)


def audit_mlflow(uri: str, experiment: str, out: Path, ids: list[str],
                 check_artifacts: bool = True) -> dict:
    """The logical run of `out` (key from out/.gani-tracking.json) in MLflow."""
    from tracking import CHILD_KIND, PARENT_KIND, STATE_FILE

    state = json.loads((out / STATE_FILE).read_text())
    client, runs = mlflow_runs(uri, experiment)
    active = [r for r in runs if r.info.lifecycle_stage == "active"]
    parents = [r for r in active if r.data.tags.get("gani.kind") == PARENT_KIND
               and r.data.tags.get("gani.logical_run") == state["logical_run"]]
    running = [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    problems: list[str] = []
    if len(parents) != 1:
        problems.append(f"{len(parents)} parent runs for the logical run")
    finished = [p for p in parents if p.info.status == "FINISHED"]
    parent = finished[0] if len(finished) == 1 else (parents[0] if parents else None)
    if parent is not None and parent.info.status != "FINISHED":
        problems.append(f"parent {parent.info.status}")
    children: dict[str, list] = {}
    if parent is not None:
        for r in active:
            if (r.data.tags.get("gani.kind") == CHILD_KIND
                    and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id):
                children.setdefault(r.data.tags.get("image_id"), []).append(r)
    missing = sorted(i for i in ids if not children.get(i))
    duplicated = sorted(i for i in ids if len(children.get(i, [])) > 1)
    stray = sorted(set(children) - set(ids))
    wrong, bad_artifacts = [], []
    for i in ids:
        if len(children.get(i, [])) != 1:
            continue
        child = children[i][0]
        status = json.loads((out / i / "status.json").read_text())
        from tracking.client import CHILD_STATUS

        expect = CHILD_STATUS[status["state"]]
        if (child.info.status != expect or child.data.tags.get("state") != status["state"]
                or child.data.tags.get("content_key") != status["key"]):
            wrong.append(i)
        if check_artifacts and status["state"] == "done":
            bad_artifacts += _audit_child_artifacts(client, child.info.run_id, out)
    return {"parents": parents, "parent": parent, "children": children, "missing": missing,
            "duplicated": duplicated, "stray": stray, "wrong": wrong, "running": running,
            "bad_artifacts": bad_artifacts, "problems": problems, "state": state}


# the child run's artifacts: each file of the image's folder under the stage that wrote it
CHILD_FILES = {"align/aligned.png", "encode/e4e.png", "encode/e4e_latent.pt", "tune/recon.png",
               "tune/latent.pt", "tune/tuned.safetensors", "tune/tune.json", "tune/timing.json",
               "tune/loss.png",
               "edit/edits.png", "evaluate/compare.png", "evaluate/metrics.json",
               "evaluate/e4e_metrics.json", "evaluate/status.json"}


def _audit_child_artifacts(client, run_id: str, out: Path) -> list[str]:
    def files(path=None):
        found = set()
        for a in client.list_artifacts(run_id, path):
            found |= files(a.path) if a.is_dir else {a.path}
        return found

    got = files()
    bad = [f"{run_id}: missing {f}" for f in sorted(CHILD_FILES - got)]
    dest = out.parent / f"artifacts-{run_id}"
    dest.mkdir(exist_ok=True)
    local = Path(client.download_artifacts(run_id, "", str(dest)))
    for f in sorted(got):
        why = parse_file(local / f)
        if why:
            bad.append(f"{run_id}: {f}: {why}")
    return bad


def lost_in_mlflow(m: dict) -> int:
    """Missing + duplicated children, RUNNING runs, wrong children, parent problems."""
    return (len(m["missing"]) + len(m["duplicated"]) + len(m["running"]) + len(m["wrong"])
            + len(m["stray"]) + len(m["bad_artifacts"]) + len(m["problems"]))


def lost_on_disk(a: dict) -> int:
    """Good images not done + missing / corrupt / temporary files + a wrong summary."""
    return (len(a["not_done"]) + len(a["missing"]) + len(a["corrupt"]) + len(a["temp_files"])
            + len(a["unfinished"]) + (0 if a["summary_ok"] else 1))
