"""The Prefect flow (on a temporary Prefect API) with MLflow tracking on SQLite:
fan-out, per-image MLflow runs, incremental re-runs, sharding, GPU slots and retries."""
import json

import pytest

from gani.stages.demo_data import demo_images

pytestmark = pytest.mark.slow


def write_dataset(root, names):
    files = demo_images()
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(files[name])


def test_flow_logs_parent_and_child_runs(prefect_api, mlflow_sqlite, tmp_path, shrink,
                                         tiny_settings):
    from mlflow.tracking import MlflowClient

    from flows.invert import run_invert

    data, out = tmp_path / "photos", tmp_path / "out"
    write_dataset(data, ["astronaut.png", "astronaut_mirrored.jpg", "chelsea.png"])
    settings = shrink(tiny_settings, **{"tracking.uri": mlflow_sqlite})
    summary = run_invert(str(data), str(out), settings)
    assert summary["counts"] == {"done": 2, "quarantined": 1, "failed": 0}
    assert summary["quarantined"] == {"chelsea": "no_face"}
    assert json.loads((out / "summary.json").read_text())["counts"] == summary["counts"]

    client = MlflowClient(mlflow_sqlite)
    exp = client.get_experiment_by_name("gani-photos-demo_random")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("gani.kind") == "dataset-run"]
    children = [r for r in runs if r.data.tags.get("gani.kind") == "image"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.run_id == summary["mlflow_run_id"]
    tags = parent.data.tags
    for key in ("git_commit", "dvc_data_version", "params_hash", "prefect_flow_run_id"):
        assert tags.get(key), key
    assert tags["prefect_flow_run_id"] == summary["prefect_flow_run_id"]
    assert parent.data.params["tune.steps"] == "2"
    assert parent.data.metrics["n_done"] == 2 and "mean_l2" in parent.data.metrics
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"images.json", "summary.json"} <= parent_files
    table = json.loads(open(client.download_artifacts(parent.info.run_id, "images.json")).read())
    assert sorted(r[0] for r in table["data"]) == ["astronaut", "astronaut_mirrored", "chelsea"]

    by_id = {r.data.tags["image_id"]: r for r in children}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    done = by_id["astronaut"]
    assert done.data.tags["state"] == "done"
    assert set(done.data.metrics) >= {"l2", "ms_ssim", "locality_l2", "tune_seconds",
                                      "e4e_l2", "tune_loss"}
    assert "seconds" not in done.data.metrics                  # one meaning per name
    assert "wall_seconds" in parent.data.metrics and "seconds" not in parent.data.metrics
    assert "mean_tune_seconds" in parent.data.metrics
    # params for compare-runs / parallel coordinates, on the child and the parent
    assert done.data.params["tune.method"] == "gani" and done.data.params["tune.steps"] == "2"
    assert done.data.params["profile"] == "demo_random"
    assert done.data.params["params_hash"] == parent.data.params["params_hash"] \
        == tags["params_hash"]
    # descriptions, the classic (model-development) experiment view
    assert "done" in done.data.tags["mlflow.note.content"]
    assert "1 quarantined" in client.get_run(parent.info.run_id).data.tags["mlflow.note.content"]
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # images by key (MLflow's image grid across runs), the plain files kept
    assert done.info.status == "FINISHED"
    history = client.get_metric_history(done.info.run_id, "tune_loss")
    assert [m.step for m in history] == [0, 1, 2]

    def files(run_id, path=None):
        out = set()
        for a in client.list_artifacts(run_id, path):
            out |= files(run_id, a.path) if a.is_dir else {a.path}
        return out

    got = files(done.info.run_id)
    assert {"align/aligned.png", "encode/e4e.png", "tune/recon.png", "evaluate/compare.png",
            "edit/edits.png", "tune/latent.pt", "tune/tuned.safetensors",
            "evaluate/metrics.json", "evaluate/status.json"} <= got
    image_keys = {p.split("/")[1].split("+step")[0] for p in got if p.startswith("images/")}
    assert {"input", "e4e_start", "tuned", "compare", "edits", "loss"} <= image_keys
    quarantined = by_id["chelsea"]
    assert quarantined.data.tags["state"] == "quarantined"
    assert quarantined.data.tags["reason"] == "no_face"
    assert quarantined.info.status == "KILLED"                 # not a green Finished
    assert "no_face" in quarantined.data.tags["mlflow.note.content"]
    assert any(p.startswith("images/input") for p in files(quarantined.info.run_id))

    # same inputs and params again: nothing recomputed, and no empty parent run
    again = run_invert(str(data), str(out), settings)
    assert again["processed"] == 0 and again["skipped"] == 3
    assert again["counts"] == summary["counts"]
    assert again["tracking"] == "ok" and again["mlflow_run_id"] is None
    runs = client.search_runs([exp.experiment_id])
    assert len([r for r in runs if r.data.tags.get("gani.kind") == "image"]) == 3
    assert len([r for r in runs if r.data.tags.get("gani.kind") == "dataset-run"]) == 1


def test_shards_gpu_slots_retries_and_failures(prefect_api, tmp_path, shrink, tiny_settings,
                                               monkeypatch):
    """shard_size 1 -> one subflow per image; tuning holds a slot of the GPU limit; a
    transient fault is retried; a permanent fault fails that image, not the run."""
    from prefect.client.orchestration import get_client

    import tasks.pipeline as tp
    from flows.invert import run_invert

    data, out = tmp_path / "photos", tmp_path / "out"
    write_dataset(data, ["astronaut.png", "astronaut_mirrored.jpg"])
    limit = f"gpu-test-{tmp_path.name[-6:]}"
    settings = shrink(tiny_settings, **{"tracking.enabled": "false",
                                        "orchestration.shard_size": 1,
                                        "orchestration.use_gpu_limit": "true",
                                        "orchestration.gpu_limit": limit})
    calls = {"edit": 0}
    real_edit, real_eval = tp.edit_image, tp.evaluate_image

    def flaky_edit(item, *a, **k):
        if item.image_id == "astronaut":
            calls["edit"] += 1
            if calls["edit"] == 1:
                raise ConnectionError("S3 went away for a moment")
        return real_edit(item, *a, **k)

    def broken_eval(item, *a, **k):
        if item.image_id == "astronaut_mirrored":
            raise ValueError("a bug that will not go away")
        return real_eval(item, *a, **k)

    monkeypatch.setattr(tp, "edit_image", flaky_edit)
    monkeypatch.setattr(tp, "evaluate_image", broken_eval)
    summary = run_invert(str(data), str(out), settings)

    assert calls["edit"] == 2                                  # retried once, then done
    assert summary["counts"] == {"done": 1, "quarantined": 0, "failed": 1}
    assert summary["failed"] == {"astronaut_mirrored": "evaluate_error"}
    status = json.loads((out / "astronaut_mirrored" / "status.json").read_text())
    assert status["state"] == "failed" and "ValueError" in status["detail"]

    with get_client(sync_client=True) as client:
        gcl = client.read_global_concurrency_limit_by_name(limit)
        assert gcl.limit == 1 and gcl.active_slots == 0
        runs = client.read_flow_runs()
        names = {r.name for r in runs}
    assert {"shard-1-of-2", "shard-2-of-2"} <= names

    # the failed image is retried by the next run; the done one is not
    monkeypatch.setattr(tp, "evaluate_image", real_eval)
    again = run_invert(str(data), str(out), settings)
    assert again["processed"] == 1
    assert again["counts"] == {"done": 2, "quarantined": 0, "failed": 0}
