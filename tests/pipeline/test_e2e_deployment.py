"""End to end, as production runs it: a real `prefect server`, the `gpu` process work pool,
`prefect deploy --all` of prefect.yaml, a run of the nightly deployment on a 2-image
dataset executed by `prefect worker start --pool gpu --run-once`; then its outputs and
MLflow runs are checked. Then the same night sharded (shard_size 1): the planner launches
one shard deployment run per image, which a long-running worker executes."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gani.stages.demo_data import demo_images

from tests.servers import free_port, wait_http
from test_services import BIN, env_with_venv, stop  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.service, pytest.mark.slow]

CLIENT_SCRIPT = """
import json, sys
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as c:
    if sys.argv[1] == "deployment":
        d = c.read_deployment_by_name("gani-invert/nightly")
        print(json.dumps({"crons": [s.schedule.cron for s in d.schedules],
                          "limit": d.global_concurrency_limit.limit
                          if d.global_concurrency_limit else d.concurrency_limit,
                          "pool": d.work_pool_name}))
    elif sys.argv[1] == "shards":
        d = c.read_deployment_by_name("gani-invert-shard/shard")
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        runs = c.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[d.id])))
        print(json.dumps([[r.name, r.state.type.value] for r in runs]))
    else:
        r = c.read_flow_run(sys.argv[2])
        print(json.dumps({"state": r.state.type.value, "name": r.state.name}))
"""


def test_nightly_deployment_on_a_process_worker(tmp_path, shrink, tiny_settings):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = env_with_venv(PREFECT_HOME=tmp_path / "prefect-home", PREFECT_API_URL=api,
                        PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore", GANI_REPO_DIR=ROOT)
    env.pop("PREFECT_PROFILE", None)
    prefect = str(BIN / "prefect")

    def run(*args, cwd=ROOT, timeout=300):
        r = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout)
        assert r.returncode == 0, f"{args}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
        return r.stdout + r.stderr

    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port",
                               str(port), "--no-ui"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"{api}/health", 180, server)
        run(prefect, "work-pool", "create", "gpu", "--type", "process")
        run(prefect, "--no-prompt", "deploy", "--all")
        dep = json.loads(run(sys.executable, "-c", CLIENT_SCRIPT, "deployment"))
        assert dep == {"crons": ["0 2 * * *"], "limit": 1, "pool": "gpu"}
        # keep the 02:00 schedule from firing inside this test
        run(prefect, "deployment", "schedule", "pause", "--all")

        data, out = tmp_path / "photos", tmp_path / "out"
        data.mkdir()
        files = demo_images()
        for name in ["astronaut.png", "chelsea.png"]:
            (data / name).write_bytes(files[name])
        mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        settings = shrink(tiny_settings, **{"tracking.uri": mlflow_uri,
                                            "orchestration.use_gpu_limit": "true"})
        params = {"input_uri": str(data), "output_uri": str(out), "dataset_name": "e2e",
                  "settings": settings.model_dump(mode="json"), "overrides": []}
        created = run(prefect, "deployment", "run", "gani-invert/nightly", "--params",
                      json.dumps(params))
        run_id = [ln.split()[-1] for ln in created.splitlines() if "UUID" in ln][0]

        worker = run(prefect, "worker", "start", "--pool", "gpu", "--run-once", timeout=600)

        (tmp_path / "worker.log").write_text(worker)
        state = json.loads(run(sys.executable, "-c", CLIENT_SCRIPT, "flow-run", run_id))
        assert state["state"] == "COMPLETED", f"{state}; worker log: {tmp_path / 'worker.log'}"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["counts"] == {"done": 1, "quarantined": 1, "failed": 0}, (
            summary, (out / "astronaut" / "status.json").read_text(), worker[-3000:])
        assert summary["prefect_flow_run_id"] == run_id
        assert json.loads((out / "astronaut" / "metrics.json").read_text())["l2"] > 0

        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlflow_uri)
        exp = client.get_experiment_by_name("gani-e2e-demo_random")
        runs = client.search_runs([exp.experiment_id])
        parent = [r for r in runs if r.data.tags.get("gani.kind") == "dataset-run"]
        assert len(parent) == 1 and parent[0].data.tags["prefect_flow_run_id"] == run_id
        assert sorted(r.data.tags["image_id"] for r in runs
                      if r.data.tags.get("gani.kind") == "image") == ["astronaut", "chelsea"]

        # Sharded night: shard_size 1 -> the planner launches one `gani-invert-shard/shard`
        # deployment run per image; a long-running worker picks up the planner and shards.
        sharded = shrink(settings, **{"orchestration.shard_size": 1})
        params.update(output_uri=str(tmp_path / "out-sharded"), dataset_name="sharded",
                      settings=sharded.model_dump(mode="json"))
        created = run(prefect, "deployment", "run", "gani-invert/nightly", "--params",
                      json.dumps(params))
        run_id = [ln.split()[-1] for ln in created.splitlines() if "UUID" in ln][0]
        wlog = open(tmp_path / "worker-sharded.log", "wb")
        worker_proc = subprocess.Popen(
            [prefect, "worker", "start", "--pool", "gpu", "--limit", "3"], cwd=ROOT,
            env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, stdout=wlog,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 600
            while time.time() < deadline:
                state = json.loads(run(sys.executable, "-c", CLIENT_SCRIPT, "flow-run", run_id))
                if state["state"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                time.sleep(3)
        finally:
            stop(worker_proc)
            wlog.close()
        assert state["state"] == "COMPLETED", f"{state}; see {tmp_path / 'worker-sharded.log'}"
        summary = json.loads((tmp_path / "out-sharded" / "summary.json").read_text())
        assert summary["counts"] == {"done": 1, "quarantined": 1, "failed": 0}
        shards = json.loads(run(sys.executable, "-c", CLIENT_SCRIPT, "shards"))
        assert sorted(shards) == [["shard-1-of-2", "COMPLETED"], ["shard-2-of-2", "COMPLETED"]]
        exp = client.get_experiment_by_name("gani-sharded-demo_random")
        runs = client.search_runs([exp.experiment_id])
        parent = [r for r in runs if r.data.tags.get("gani.kind") == "dataset-run"][0]
        children = [r for r in runs if r.data.tags.get("gani.kind") == "image"]
        assert sorted(r.data.tags["image_id"] for r in children) == ["astronaut", "chelsea"]
        assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    finally:
        stop(server)
        log.close()
