"""The per-image stages through the sequential driver: output contract, quarantine,
incremental re-runs, parameter changes and resuming a killed run."""
import json
from pathlib import Path

import pytest

from gani.metrics.core import QUALITY_KEYS, TIMING_KEYS
from gani.stages import Layout, plan, run_pipeline, run_stage
from gani.stages.demo_data import demo_images
from gani.stages.summary import build_summary



def write_dataset(root, names):
    files = demo_images()
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(files[name])


def mtimes(out):
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and p.name != "summary.json"}


PER_IMAGE = {"aligned.png", "e4e.png", "e4e_latent.pt", "latent.pt", "tuned.safetensors",
             "recon.png", "tune.json", "timing.json", "loss.png", "edits.png", "compare.png",
             "metrics.json", "e4e_metrics.json", "status.json"}


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, shrink):
    from gani.config import load_settings

    tmp = tmp_path_factory.mktemp("stages")
    data, out = tmp / "in", tmp / "out"
    write_dataset(data, ["astronaut.png", "broken.jpg", "chelsea.png"])
    settings = shrink(load_settings(ROOT / "params.yaml", "demo_random"))
    summary = run_pipeline(str(data), Layout(str(out)), settings)
    return data, out, settings, summary


def test_outputs_follow_the_contract(first_run):
    data, out, settings, summary = first_run
    assert summary["counts"] == {"done": 1, "quarantined": 2, "failed": 0}
    assert summary["quarantined"] == {"broken": "truncated", "chelsea": "no_face"}
    assert summary["failed"] == {}
    assert set(summary["means"]) == set(QUALITY_KEYS)     # no timing: the same everywhere
    assert summary["means"]["lpips"] is None and summary["means"]["id"] is None  # no nets
    assert summary["means"]["l2"] > 0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["counts"] == summary["counts"]

    files = {p.name for p in (out / "astronaut").iterdir() if not p.name.startswith(".")}
    assert files == PER_IMAGE
    metrics = json.loads((out / "astronaut" / "metrics.json").read_text())
    assert set(metrics) == set(QUALITY_KEYS)
    timing = json.loads((out / "astronaut" / "timing.json").read_text())
    assert set(TIMING_KEYS) <= set(timing) and timing["seconds"] > 0
    assert not set(TIMING_KEYS) & set(json.loads((out / "astronaut" / "tune.json").read_text()))
    status = json.loads((out / "astronaut" / "status.json").read_text())
    assert status["state"] == "done" and status["reason"] is None and status["key"]
    for bad, reason in [("broken", "truncated"), ("chelsea", "no_face")]:
        st = json.loads((out / bad / "status.json").read_text())
        assert (st["state"], st["reason"]) == ("quarantined", reason)
        assert not (out / bad / "aligned.png").exists()
    assert not list(out.rglob("*.tmp"))


def test_rerun_recomputes_nothing(first_run):
    data, out, settings, _ = first_run
    before = mtimes(out)
    summary = run_pipeline(str(data), Layout(str(out)), settings)
    assert summary["processed"] == 0 and summary["skipped"] == 3
    assert summary["counts"] == {"done": 1, "quarantined": 2, "failed": 0}
    assert mtimes(out) == before


def rerun_from_tune(data, out, settings) -> dict:
    """Run again, check tune, edit and evaluate were redone and align, encode kept; the
    files' new mtimes."""
    before = mtimes(out)
    summary = run_pipeline(str(data), Layout(str(out)), settings)
    assert summary["processed"] == 3 and summary["counts"]["done"] == 1
    after = mtimes(out)
    for kept in ["aligned.png", "e4e_latent.pt", "e4e.png"]:
        assert after[f"astronaut/{kept}"] == before[f"astronaut/{kept}"], kept
    for redone in ["recon.png", "tuned.safetensors", "edits.png", "metrics.json",
                   "status.json"]:
        assert after[f"astronaut/{redone}"] != before[f"astronaut/{redone}"], redone
    return after


def test_code_change_reruns_its_stage_and_what_follows_only(first_run, monkeypatch):
    """A changed tuner (its code version) recomputes tune, edit and evaluate; align and
    encode stay. The version is the hash of the sources tune runs (gani.stages.sources)."""
    import importlib

    plan_module = importlib.import_module("gani.stages.plan")  # gani.stages.plan: a function
    data, out, settings, _ = first_run
    real = plan_module.code_version
    monkeypatch.setattr(plan_module, "code_version",
                        lambda stage: real(stage) + ("-changed" if stage == "tune" else ""))
    after = rerun_from_tune(data, out, settings)
    again = run_pipeline(str(data), Layout(str(out)), settings)  # same code: nothing to do
    assert again["processed"] == 0 and mtimes(out) == after


@pytest.mark.parametrize("method", ["gani", "pti", "wplus_projection", "w_projection", "e4e"])
def test_tune_steps_is_the_step_count_of_every_method(first_run, shrink, tmp_path, method):
    """`--set tune.steps=3` runs 3 steps whatever `--set tune.method` is (e4e: none)."""
    import shutil

    data, out, settings, _ = first_run
    shutil.copytree(out, tmp_path / "out")
    layout = Layout(str(tmp_path / "out"))
    changed = shrink(settings, **{"tune.method": method, "tune.steps": 3})
    todo = [i for i in plan(str(data), layout, changed) if i.image_id == "astronaut"]
    assert [i.state for i in run_stage("tune", todo, layout, changed)] == ["pending"]
    info = json.loads((tmp_path / "out" / "astronaut" / "tune.json").read_text())
    steps = 0 if method == "e4e" else 3
    assert info["method"] == method and info["steps"] == steps
    assert len(info["loss_curve"]) == steps + 1


def test_tune_change_reruns_tune_and_what_follows_only(first_run, shrink):
    data, out, settings, _ = first_run
    rerun_from_tune(data, out, shrink(settings, **{"tune.steps": 3}))
    info = json.loads((out / "astronaut" / "tune.json").read_text())
    assert len(info["loss_curve"]) == 4        # steps 0..3


def test_killed_run_resumes_and_new_images_are_the_only_work(tmp_path, tiny_settings):
    data, out = tmp_path / "in", tmp_path / "out"
    write_dataset(data, ["astronaut.png", "chelsea.png"])
    layout = Layout(str(out))
    # a run killed after encoding: align/encode markers and outputs exist, nothing else
    items = plan(str(data), layout, tiny_settings)
    items = run_stage("align", items, layout, tiny_settings)
    run_stage("encode", [i for i in items if i.state == "pending"], layout, tiny_settings)
    aligned_mtime = (out / "astronaut" / "aligned.png").stat().st_mtime_ns
    (out / "astronaut" / "recon.png.tmp-leftover").write_bytes(b"half")  # debris of a kill
    summary = run_pipeline(str(data), layout, tiny_settings)
    assert summary["counts"] == {"done": 1, "quarantined": 1, "failed": 0}
    assert (out / "astronaut" / "aligned.png").stat().st_mtime_ns == aligned_mtime
    assert (out / "astronaut" / "recon.png").is_file()

    write_dataset(data, ["astronaut_mirrored.jpg"])
    summary = run_pipeline(str(data), layout, tiny_settings)
    assert summary["processed"] == 1 and summary["skipped"] == 2
    assert summary["counts"] == {"done": 2, "quarantined": 1, "failed": 0}


def test_summary_counts_pending_and_means_only_over_done():
    rows = [{"image_id": "a", "state": "done", "reason": None, "l2": 1.0},
            {"image_id": "b", "state": "done", "reason": None, "l2": 3.0},
            {"image_id": "c", "state": "failed", "reason": "tuning_nonfinite", "l2": 100.0},
            {"image_id": "d", "state": "pending", "reason": None}]
    s = build_summary(rows)
    assert s["counts"] == {"done": 2, "quarantined": 0, "failed": 1}
    assert s["pending"] == 1 and s["failed"] == {"c": "tuning_nonfinite"}
    assert s["means"]["l2"] == 2.0 and s["means"]["lpips"] is None
