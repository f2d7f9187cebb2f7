"""A night across two workers, as a team runs it, with one worker lost mid-shard.

Set-up: a throwaway PostgreSQL server (tests/reliability/postgres.py) with databases
`prefect` and `mlflow`; a real `prefect server` on it (asyncpg); the process work pool `gpu`
and `prefect deploy --all` of prefect.yaml; a real `mlflow server` on it with artifacts on
the moto S3 server; input photos and the output root on S3 too. 40 procedural faces, shard
size 10 (4 shards), the random-network profile made tiny.

The night runs on two `prefect worker start` processes. When a shard run of the worker
that does not host the night is RUNNING with some but not all of its images done on S3,
that worker is SIGKILLed with every process under it (a machine lost). Its run stops
heartbeating; the lost-run automation marks it Crashed; the night relaunches the shard; the
other worker runs it. Checked: the night COMPLETED, every image exactly once and done on S3
(no temp file, summary.json right), exactly one complete MLflow child per image under one
FINISHED parent, and the timeline (which shard ran where, the kill, the relaunch).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import free_port, wait_http

from . import postgres
from .gani_runs import (_audit_child_artifacts, audit_mlflow, audit_outputs, lost_in_mlflow,
                        lost_on_disk)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.service, pytest.mark.slow]

N_IMAGES, SHARD_SIZE = 40, 10
HEARTBEAT, LOST_AFTER = 30, 45      # seconds: Prefect's minimum heartbeat; the automation's
DATASET = "night"


@pytest.fixture
def pg():
    why = postgres.why_unavailable()
    if why:
        pytest.skip(why)
    cluster = postgres.PgCluster(["prefect", "mlflow"])
    try:
        yield cluster.start()
    finally:
        cluster.stop()


class Services:
    """Every process the test starts, stopped (its whole group) at teardown."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env, self.procs = folder, env, {}

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.is_file() else ""

    def stop_all(self) -> None:
        import psutil

        for proc in reversed(list(self.procs.values())):
            kids = []
            try:
                kids = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            for k in kids:       # flow-run subprocesses in their own session
                try:
                    k.kill()
                except psutil.Error:
                    pass


def run_cli(env: dict, *args: str, timeout: float = 300) -> str:
    r = subprocess.run(list(args), cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{args}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def write_faces(bucket: str) -> list[str]:
    """N_IMAGES procedural 32-px faces (pre-aligned crops) under s3://bucket/photos."""
    from gani import io
    from gani.stages.demo_data import _png
    from gani.testbed.faces import make_face

    ids = []
    for i in range(N_IMAGES):
        io.write_bytes(f"s3://{bucket}/photos/face_{i:02d}.png",
                       _png(make_face(0, "test", i, size=32)[0]))
        ids.append(f"face_{i:02d}")
    return ids


def worker_of(pid: int, workers: dict[str, int]) -> str | None:
    """The worker (name) whose process tree holds `pid`."""
    import psutil

    try:
        chain = [psutil.Process(pid), *psutil.Process(pid).parents()]
    except psutil.Error:
        return None
    for p in chain:
        for name, wpid in workers.items():
            if p.pid == wpid:
                return name
    return None


def kill_machine(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the worker's process group and every process under it (a flow-run
    subprocess may sit in its own session): what a lost machine looks like."""
    import psutil

    kids = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for k in kids:
        try:
            os.killpg(k.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            k.kill()
        except psutil.Error:
            pass
    proc.wait(30)
    return [proc.pid] + [k.pid for k in kids]


def test_night_survives_a_lost_worker(pg, moto_s3, s3_bucket, tmp_path, shrink, reliability):
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from gani import io
    from gani.config import load_settings

    t_start = time.monotonic()
    port, mport = free_port(), free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ)
    env.pop("PREFECT_PROFILE", None)
    env.pop("GANI_FAULT", None)
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
                "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
                "PREFECT_API_DATABASE_CONNECTION_URL": pg.url("prefect", "postgresql+asyncpg"),
                "GANI_REPO_DIR": str(ROOT)})
    svc = Services(tmp_path, env)
    prefect, events = str(BIN / "prefect"), []

    def note(what: str) -> None:
        events.append((time.monotonic() - t_start, what))
        print(f"[{events[-1][0]:6.1f}s] {what}", flush=True)

    try:
        server = svc.start("prefect-server", [prefect, "server", "start", "--host", "127.0.0.1",
                                              "--port", str(port), "--no-ui"])
        mlflow = svc.start("mlflow-server", [
            str(BIN / "mlflow"), "server", "--backend-store-uri", pg.url("mlflow"),
            "--artifacts-destination", f"s3://{s3_bucket}/mlflow", "--host", "127.0.0.1",
            "--port", str(mport), "--workers", "1"])
        ids = write_faces(s3_bucket)
        wait_http(f"{api}/health", 180, server, "prefect server",
                  lambda: svc.log("prefect-server"))
        note("prefect server up (PostgreSQL)")
        run_cli(env, "sh", "-c", f"{prefect} work-pool create gpu --type process && "
                                 f"{prefect} --no-prompt deploy --all")
        wait_http(f"http://127.0.0.1:{mport}/health", 180, mlflow, "mlflow server",
                  lambda: svc.log("mlflow-server"))
        tracking = f"http://127.0.0.1:{mport}"
        note("mlflow server up (PostgreSQL, artifacts on S3); deployments registered")

        settings = shrink(load_settings(ROOT / "params.yaml", "demo_random"), **{
            "align.output_size": 32, "align.prealigned_max_side": 64,
            "tracking.uri": tracking, "orchestration.shard_size": SHARD_SIZE,
            "orchestration.shard_lost_after": LOST_AFTER, "orchestration.max_concurrency": 2,
            "tune.steps": 3})
        out = f"s3://{s3_bucket}/inversions"
        params = {"input_uri": f"s3://{s3_bucket}/photos", "output_uri": out,
                  "dataset_name": DATASET, "settings": settings.model_dump(mode="json"),
                  "overrides": []}
        wenv = {"PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "2",
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT)}
        workers = {}
        with temporary_settings(updates={PREFECT_API_URL: api}), \
                get_client(sync_client=True) as client:
            # the 02:00 schedule must not fire inside the test; then a run of the night now
            nightly = client.read_deployment_by_name("gani-invert/nightly")
            for sched in client.read_deployment_schedules(nightly.id):
                client.update_deployment_schedule(nightly.id, sched.id, active=False)
            night_id = str(client.create_flow_run_from_deployment(
                nightly.id, parameters=params).id)
            # worker-a: the night + 2 shards at once; worker-b: 2 shards
            w1 = svc.start("worker-a", [prefect, "worker", "start", "--pool", "gpu", "--name",
                                        "worker-a", "--limit", "3"], wenv)
            workers["worker-a"] = w1.pid
            note("nightly run created; worker-a started (limit 3)")
            # the night starts on worker-a; worker-b joins, so both take shards
            end = time.monotonic() + 180
            while client.read_flow_run(night_id).state.type.value != "RUNNING":
                assert time.monotonic() < end, svc.log("worker-a")
                time.sleep(1)
            w2 = svc.start("worker-b", [prefect, "worker", "start", "--pool", "gpu", "--name",
                                        "worker-b", "--limit", "2"], wenv)
            workers["worker-b"] = w2.pid
            note("nightly run RUNNING on worker-a; worker-b started (limit 2)")
            shard_dep = client.read_deployment_by_name("gani-invert-shard/shard").id

            seen: dict[str, dict] = {}     # flow run id -> {name, worker, states}
            killed = None
            end = time.monotonic() + 600
            while True:
                night = client.read_flow_run(night_id)
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[shard_dep])))
                for fr in runs:
                    rec = seen.setdefault(str(fr.id), {"name": fr.name, "worker": None,
                                                       "states": [], "ids": []})
                    state = fr.state.type.value if fr.state else "?"
                    if not rec["states"] or rec["states"][-1] != state:
                        rec["states"].append(state)
                        note(f"{fr.name}: {state}"
                             + (f" ({fr.state.message})" if state == "CRASHED" else ""))
                    if rec["worker"] is None and fr.infrastructure_pid:
                        pid = int(str(fr.infrastructure_pid).rsplit(":", 1)[-1])
                        rec["worker"] = worker_of(pid, workers)
                        if rec["worker"]:
                            note(f"{fr.name} runs on {rec['worker']} (pid {pid})")
                    rec["ids"] = [i["image_id"] for i in fr.parameters.get("items") or []]
                if killed is None:
                    for rid, rec in seen.items():
                        if rec["worker"] != "worker-b" or rec["states"][-1] != "RUNNING":
                            continue
                        done = sum(1 for i in rec["ids"] if (io.read_json(
                            f"{out}/{i}/status.json") if io.exists(f"{out}/{i}/status.json")
                            else {}).get("state") == "done")
                        if 0 < done < len(rec["ids"]):
                            pids = kill_machine(w2)
                            killed = rid
                            note(f"SIGKILL worker-b and its processes {pids} in the middle "
                                 f"of {rec['name']} ({done}/{len(rec['ids'])} images done)")
                            break
                if night.state.is_final():
                    note(f"nightly run {night.state.name}")
                    break
                assert time.monotonic() < end, (
                    f"night not final after 600 s: {night.state.name}\n"
                    + svc.log("worker-a") + svc.log("worker-b"))
                time.sleep(1)

        timeline = "\n".join(f"[{t:6.1f}s] {w}" for t, w in events)
        (tmp_path / "timeline.txt").write_text(timeline + "\n")
        print("\nTIMELINE\n" + timeline)
        wlog = svc.log("worker-a", 8000)
        assert killed is not None, f"worker-b never ran a shard mid-way\n{timeline}\n{wlog}"
        assert night.state.type.value == "COMPLETED", f"{night.state}\n{timeline}\n{wlog}"

        # the shard that died: Crashed, relaunched, completed on the surviving worker
        lost = seen[killed]
        assert lost["states"][-1] == "CRASHED", lost
        relaunch = [r for r in seen.values()
                    if r["name"].startswith(lost["name"] + "-relaunch-")]
        assert len(relaunch) == 1 and relaunch[0]["states"][-1] == "COMPLETED", seen
        assert relaunch[0]["worker"] == "worker-a", relaunch
        assert sorted(relaunch[0]["ids"]) == sorted(lost["ids"])
        completed = [r for r in seen.values() if r["states"][-1] == "COMPLETED"]
        assert sorted(i for r in completed for i in r["ids"]) == sorted(ids), \
            "every image in exactly one completed shard run"
        assert len(completed) == N_IMAGES // SHARD_SIZE

        # outputs: a local copy of the output root, audited like every crash test's
        local = tmp_path / "out"
        fs, path = io.filesystem(out)
        fs.get(path, str(local), recursive=True)
        a = audit_outputs(local, ids, ids)
        summary = a["summary"]
        assert not a["extra_folders"] and sorted(p.name for p in local.iterdir()
                                                 if p.is_dir()) == sorted(ids)
        assert lost_on_disk(a) == 0, {k: a[k] for k in ("not_done", "missing", "unfinished",
                                                         "corrupt", "temp_files", "summary_ok")}
        assert summary["counts"] == {"done": N_IMAGES, "quarantined": 0, "failed": 0}
        assert summary["images"] == N_IMAGES and summary["pending"] == 0
        assert summary["processed"] == N_IMAGES and summary["skipped"] == 0
        assert summary["tracking"] == "ok" and summary["tracking_failed"] == []
        assert summary["prefect_flow_run_id"] == night_id

        # MLflow (PostgreSQL + S3): one FINISHED parent, exactly one complete child per image
        exps = [e.name for e in MlflowClient(tracking).search_experiments()
                if e.name.startswith(f"gani-{DATASET}-")]
        assert len(exps) == 1, exps
        m = audit_mlflow(tracking, exps[0], local, ids, check_artifacts=False)
        assert lost_in_mlflow(m) == 0, {k: m[k] for k in ("missing", "duplicated", "stray",
                                                           "wrong", "running", "problems")}
        assert m["parent"].info.run_id == summary["mlflow_run_id"]
        mc = MlflowClient(tracking)   # children of the lost shard (first and last): artifacts
        bad = [b for i in (lost["ids"][0], lost["ids"][-1])
               for b in _audit_child_artifacts(mc, m["children"][i][0].info.run_id, local)]
        assert bad == []
        data_lost = lost_on_disk(a) + lost_in_mlflow(m)
    except BaseException:
        for name in svc.procs:
            print(f"--- {name} log (tail) ---\n{svc.log(name)}")
        raise
    finally:
        svc.stop_all()

    wall = time.monotonic() - t_start
    where = {r["name"]: r["worker"] for r in seen.values()}
    crashed = sorted(r["name"] for r in seen.values() if r["states"][-1] == "CRASHED")
    print(f"test wall time {wall:.0f} s")
    reliability.from_summary(
        "multi-worker", "SIGKILL of a worker mid-shard: 2 process workers, Prefect + MLflow "
        "on PostgreSQL, S3 (moto)", summary, faults_injected=1, faults_survived=1,
        data_lost=data_lost,
        note=f"{len(where)} shard runs: " + ", ".join(f"{n}@{w}" for n, w in sorted(
            where.items())) + f"; killed mid {lost['name']}; Crashed (no heartbeat for "
        f"{LOST_AFTER} s) and relaunched on worker-a: {', '.join(crashed)}; {wall:.0f} s")
