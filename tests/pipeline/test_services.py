"""The pipeline against real services on 127.0.0.1: S3 (moto server) for input, outputs and
MLflow artifacts behind a real `mlflow server`; DVC with an S3 remote; `dvc repro`."""
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gani.stages.demo_data import demo_images
from tests.servers import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def env_with_venv(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def mlflow_server(moto_s3, s3_bucket, tmp_path):
    """A real `mlflow server` (SQLite backend) whose artifacts go to the moto bucket."""
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
         f"s3://{s3_bucket}/mlflow", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env_with_venv(), start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


@pytest.mark.service
@pytest.mark.slow
def test_s3_input_output_and_mlflow_server(prefect_api, mlflow_server, s3_bucket, shrink,
                                           tiny_settings):
    import boto3
    from mlflow.tracking import MlflowClient

    from flows.invert import run_invert
    from gani import io

    files = demo_images()
    for name in ["astronaut.png", "broken.jpg"]:
        io.write_bytes(f"s3://{s3_bucket}/photos/{name}", files[name])
    settings = shrink(tiny_settings, **{"tracking.uri": mlflow_server})
    out = f"s3://{s3_bucket}/inversions"
    summary = run_invert(f"s3://{s3_bucket}/photos", out, settings, dataset_name="s3set")
    assert summary["counts"] == {"done": 1, "quarantined": 1, "failed": 0}
    assert io.read_json(f"{out}/summary.json")["counts"] == summary["counts"]
    assert io.read_json(f"{out}/astronaut/status.json")["state"] == "done"
    assert io.read_json(f"{out}/broken/status.json")["reason"] == "truncated"
    assert io.exists(f"{out}/astronaut/tuned.safetensors")

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("gani-s3set-demo_random")
    runs = client.search_runs([exp.experiment_id])
    child = [r for r in runs if r.data.tags.get("image_id") == "astronaut"][0]
    assert child.data.tags["mlflow.parentRunId"] == summary["mlflow_run_id"]
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket=s3_bucket, Prefix="mlflow/")["Contents"]]
    assert any(k.endswith(f"{child.info.run_id}/artifacts/tune/recon.png") for k in keys)
    assert any(k.endswith(f"{summary['mlflow_run_id']}/artifacts/images.json") for k in keys)

    # incremental on S3 too
    again = run_invert(f"s3://{s3_bucket}/photos", out, settings, dataset_name="s3set")
    assert again["processed"] == 0


def _git_dvc_repo(path: Path, env: dict) -> None:
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "test"], [str(BIN / "dvc"), "init", "-q"],
                [str(BIN / "dvc"), "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=path, env=env, check=True, capture_output=True)


@pytest.mark.service
def test_dvc_s3_remote_push_pull(moto_s3, s3_bucket, tmp_path):
    from gani.stages.demo_data import materialize

    repo, env = tmp_path / "repo", env_with_venv()
    repo.mkdir()
    _git_dvc_repo(repo, env)
    materialize(str(repo / "data" / "datasets" / "demo"))
    before = {p.relative_to(repo): p.read_bytes() for p in (repo / "data").rglob("*")
              if p.is_file()}
    dvc = str(BIN / "dvc")
    for cmd in ([dvc, "add", "data"], [dvc, "remote", "add", "-d", "s3store",
                                        f"s3://{s3_bucket}/dvc"],
                [dvc, "remote", "modify", "s3store", "endpointurl", moto_s3],
                [dvc, "push"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    assert (repo / "data.dvc").is_file()
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    r = subprocess.run([dvc, "pull"], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    after = {p.relative_to(repo): p.read_bytes() for p in (repo / "data").rglob("*")
             if p.is_file()}
    assert after == before
    r = subprocess.run([dvc, "status", "-c"], cwd=repo, env=env, capture_output=True, text=True)
    assert "in sync" in r.stdout


TINY_DEMO = {"generator": {"checkpoint": "demo", "size": 32, "style_dim": 32, "n_mlp": 2,
                           "channel_multiplier": 1, "channel_max": 32, "seed": 0},
             "encoder": {"checkpoint": "demo", "width_div": 16, "seed": 1}}


@pytest.mark.slow
def test_dvc_repro_runs_skips_and_reruns_from_tune(tmp_path):
    """`dvc repro` on a copy of the repository's pipeline (demo profile made tiny): runs every
    stage, then nothing, then after `--set-param tune.steps=3` (a base key the profile also
    sets) only tune, edit and evaluate, with 3 steps."""
    import yaml

    repo, env = tmp_path / "repo", env_with_venv(PYTHONPATH="")
    repo.mkdir()
    shutil.copytree(ROOT / "gani", repo / "gani",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # the pipeline's demo profile runs the trained testbed; here the random profile's
    # networks made tiny, on the same demo inputs (procedural faces are pre-aligned crops)
    demo = params["profiles"]["demo"] = copy.deepcopy(params["profiles"]["demo_random"])
    demo["models"] = TINY_DEMO
    demo["align"]["prealigned_max_side"] = 64
    demo["tune"].update(steps=2, batch_size=4)
    demo["edit"]["pca_samples"] = 64
    demo["evaluate"]["locality_n"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _git_dvc_repo(repo, env)
    subprocess.run(["git", "add", "-A"], cwd=repo, env=env, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "pipeline"], cwd=repo, env=env, check=True,
                   capture_output=True)
    dvc = str(BIN / "dvc")

    def repro(*args):
        r = subprocess.run([dvc, *args], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    first = repro("repro")
    for stage in ("demo_data", "align", "encode", "tune", "edit", "evaluate"):
        assert f"Running stage '{stage}'" in first, stage
    metrics = json.loads((repo / "outputs/dvc/metrics.json").read_text())
    assert metrics["counts"] == {"done": 6, "quarantined": 2, "failed": 0}
    assert (repo / "outputs/dvc/evaluate/astronaut/metrics.json").is_file()
    assert (repo / "outputs/dvc/evaluate/face_test_0/compare.png").is_file()
    assert (repo / "outputs/dvc/evaluate/summary.json").is_file()
    assert json.loads((repo / "outputs/dvc/plots/loss.json").read_text())
    assert "seconds" not in metrics["means"]          # timing apart, not a DVC metric
    assert json.loads((repo / "outputs/dvc/timing.json").read_text())["means"]["tune_seconds"]

    second = repro("repro")
    assert "Running stage" not in second

    # a base key the profile also sets: the explicit value wins (gani/config/loader.py)
    third = repro("exp", "run", "--set-param", "tune.steps=3", "-n", "steps3")
    ran = {s for s in ("demo_data", "align", "encode", "tune", "edit", "evaluate")
           if f"Running stage '{s}'" in third}
    assert ran == {"tune", "edit", "evaluate"}
    info = json.loads((repo / "outputs/dvc/tune/astronaut/tune.json").read_text())
    assert len(info["loss_curve"]) == 4
