"""What `dvc metrics` and `dvc plots` read (issue 16, DVC): quality-only metrics, timing
apart, per-image loss curves against the step, plot definitions that point at files the
evaluate stage writes, and dvc_plots/ ignored."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gani.stages.dvc_files import QUALITY_KEYS, write_dvc_files
from gani.stages.layout import Layout

ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")
ROOT_VAR = "outputs/dvc"


def _dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _rows_and_layout(tmp_path: Path) -> tuple[list[dict], Layout]:
    """Two done images (with tune.json loss curves of 4 and 3 steps) and a quarantined one."""
    layout = Layout(str(tmp_path / "evaluate"), {"tune": str(tmp_path / "tune")})
    rows = []
    for image_id, curve in (("face_a", [0.5, 0.4, 0.3, 0.2]), ("photo_b", [0.9, 0.7, 0.6])):
        tune = tmp_path / "tune" / image_id
        tune.mkdir(parents=True)
        (tune / "tune.json").write_text(json.dumps({"loss_curve": curve}))
        rows.append({"image_id": image_id, "state": "done", "l2": 0.1, "e4e_l2": 0.2,
                     "ms_ssim": 0.8, "e4e_ms_ssim": 0.7, "lpips": None, "e4e_lpips": None,
                     "locality_l2": 0.01, "seconds": 3.0, "peak_mem_bytes": 100})
    rows.append({"image_id": "broken", "state": "quarantined", "reason": "truncated"})
    return rows, layout


def _summary() -> dict:
    means = {k: 0.5 for k in QUALITY_KEYS} | {"seconds": 3.0, "peak_mem_bytes": 100}
    return {"counts": {"done": 2, "quarantined": 1, "failed": 0}, "means": means,
            "e4e_means": dict(means)}


def _write(tmp_path: Path) -> Path:
    rows, layout = _rows_and_layout(tmp_path)
    out = tmp_path / ROOT_VAR
    write_dvc_files(_summary(), rows, layout, str(out / "metrics.json"), str(out / "plots"),
                    str(out / "timing.json"))
    return out


def test_metrics_hold_quality_only_and_timing_goes_apart(tmp_path):
    out = _write(tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["means"]) == set(QUALITY_KEYS) == set(metrics["e4e_means"])
    assert not {"seconds", "peak_mem_bytes", "tune_seconds"} & set(metrics["means"])
    timing = json.loads((out / "timing.json").read_text())
    assert timing["means"] == {"tune_seconds": 3.0, "peak_mem_bytes": 100.0}
    assert set(timing["images"]) == {"face_a", "photo_b"}


def test_loss_rows_are_per_image_and_step_and_per_image_rows_have_no_index(tmp_path):
    out = _write(tmp_path)
    loss = json.loads((out / "plots" / "loss.json").read_text())
    assert [(r["image_id"], r["step"]) for r in loss] == (
        [("face_a", s) for s in range(4)] + [("photo_b", s) for s in range(3)])
    per_image = json.loads((out / "plots" / "per_image.json").read_text())
    assert [r["image_id"] for r in per_image] == ["face_a", "photo_b"]
    assert all("image" not in r for r in per_image)


def test_dvc_yaml_declares_metrics_and_plots_only_where_they_belong():
    stages = _dvc_yaml()["stages"]
    assert all("plots" not in s for s in stages.values()), "stage-level plots draw junk charts"
    metrics = [next(iter(m)) if isinstance(m, dict) else m
               for s in stages.values() for m in s.get("metrics", [])]
    assert metrics == ["${root}/metrics.json"]
    outs = [next(iter(o)) if isinstance(o, dict) else o
            for s in stages.values() for o in s.get("outs", [])]
    assert not any("timing" in o for o in outs)
    assert "--timing ${root}/timing.json" in stages["evaluate"]["cmd"]


def test_every_plot_has_x_or_y_fields_of_files_the_evaluate_stage_writes(tmp_path):
    out = _write(tmp_path)
    plots = _dvc_yaml()["plots"]
    assert len(plots) >= 2
    for entry in plots:
        (title, spec), = entry.items()
        assert isinstance(spec.get("y"), dict), title
        template = spec.get("template")
        assert (ROOT / ".dvc" / "plots" / f"{template}.json").is_file(), template
        for axis in ("x", "y"):
            for path, fields in (spec.get(axis) or {}).items():
                assert path.startswith(f"{ROOT_VAR}/plots/"), path
                rows = json.loads((tmp_path / path).read_text())
                for field in [fields] if isinstance(fields, str) else fields:
                    assert all(field in r for r in rows), (title, path, field)
    loss = next(s for e in plots for t, s in e.items() if "loss" in t.lower())
    assert loss["x"] == {f"{ROOT_VAR}/plots/loss.json": "step"}


@pytest.mark.slow
def test_dvc_plots_show_draws_one_loss_line_per_image(tmp_path):
    """The real `dvc plots show --json` on written plot data: the loss chart's data carry
    image_id (the template's colour), the per-image charts one bar per image and field."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": _dvc_yaml()["plots"]}))
    rows, layout = _rows_and_layout(tmp_path)
    write_dvc_files(_summary(), rows, layout, plots_dir=str(repo / ROOT_VAR / "plots"))
    r = subprocess.run([DVC, "plots", "show", "--json"], cwd=repo, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)["data"]
    loss = next(v for k, v in data.items() if "loss" in k.lower())[0]["content"]
    assert loss["encoding"]["color"]["field"] == "image_id"
    assert loss["encoding"]["x"]["field"] == "step"
    assert {d["image_id"] for d in loss["data"]["values"]} == {"face_a", "photo_b"}
    bars = next(v for k, v in data.items() if k.startswith("L2"))[0]["content"]
    assert {(d["image_id"], d["field"]) for d in bars["data"]["values"]} == {
        (i, f) for i in ("face_a", "photo_b") for f in ("l2", "e4e_l2")}


def test_dvc_plots_output_is_git_ignored():
    r = subprocess.run(["git", "check-ignore", "-q", "dvc_plots/index.html"], cwd=ROOT)
    assert r.returncode == 0
    r = subprocess.run(["git", "check-ignore", "-q", "outputs/dvc/timing.json"], cwd=ROOT)
    assert r.returncode == 0
