"""The demo on the trained testbed (issue 14): deterministic inputs, tuning that fits every
procedural face better than the encoder's start, a smile edit that raises the regressor's
smile on the inverted face, and the files a person looks at.

One module-scoped run of every stage (`gani.stages.run.run_pipeline`, no Prefect) with the
demo profile as shipped (tracking off), on the demo dataset: about a minute on 2 busy cores.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from gani.config import load_settings
from gani.stages import Layout
from gani.stages import demo_data
from gani.stages.demo_data import DEMO_FACES, FACE_SIZE, demo_labels, face_name, materialize
from gani.stages.layout import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
FACES = [face_name(sp, i).rsplit(".", 1)[0] for sp, i in DEMO_FACES]
GOOD = FACES + ["astronaut"]


def test_demo_inputs_are_deterministic_and_labelled(tmp_path):
    a, b = demo_data.testbed_demo_images(), demo_data.testbed_demo_images()
    assert a == b
    assert {f"{i}.png" for i in FACES} <= set(a)
    assert {"astronaut.png", "broken.jpg", "notes.png"} <= set(a)
    for sp, i in DEMO_FACES:
        img = Image.open(__import__("io").BytesIO(a[face_name(sp, i)]))
        assert img.size == (FACE_SIZE, FACE_SIZE)
    labels = demo_labels()
    assert set(labels) == {face_name(sp, i) for sp, i in DEMO_FACES}
    # the shifted split's faces have smile or yaw outside the training range (±0.6)
    for sp, i in DEMO_FACES:
        lab = labels[face_name(sp, i)]
        outside = max(abs(lab["smile"]), abs(lab["yaw"])) > 0.6
        assert outside == (sp == "shifted"), (sp, i, lab)
    first = materialize(str(tmp_path / "ds"))
    mtimes = {p: Path(p).stat().st_mtime_ns for p in first}
    assert materialize(str(tmp_path / "ds")) == first
    assert {p: Path(p).stat().st_mtime_ns for p in first} == mtimes


def test_a_changed_testbed_file_is_refused(tmp_path):
    from gani.checkpoints import CheckpointCorruptError
    from gani.checkpoints.store import locate, require_verified

    assert require_verified("testbed-generator", tmp_path) == locate("testbed-generator",
                                                                     tmp_path)
    bad = tmp_path / "checkpoints" / "g_ema.safetensors"
    bad.parent.mkdir(parents=True)
    data = bytearray(locate("testbed-generator", tmp_path).read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match="testbed-generator"):
        require_verified("testbed-generator", tmp_path)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from gani.stages.run import run_pipeline

    tmp = tmp_path_factory.mktemp("demo")
    data, out = tmp / "in", tmp / "out"
    materialize(str(data))
    settings = load_settings(ROOT / "params.yaml", "demo", ["tracking.enabled=false"])
    summary = run_pipeline(str(data), Layout(str(out)), settings)
    return out, settings, summary


def test_demo_writes_the_expected_files(demo_run):
    out, settings, summary = demo_run
    assert summary["counts"] == {"done": len(GOOD), "quarantined": 2, "failed": 0}
    assert summary["quarantined"] == {"broken": "truncated", "notes": "not_an_image"}
    for image_id in GOOD:
        for artifact, (_, name) in ARTIFACTS.items():
            assert (out / image_id / name).is_file(), (image_id, name)
        compare = Image.open(out / image_id / "compare.png")
        assert compare.height >= 3 * 32 and compare.width >= 3 * compare.height // 2
        grid = Image.open(out / image_id / "edits.png")
        n_rows = len(settings.edit.interfacegan)
        assert grid.height > n_rows * 128 and grid.width == 128 * len(settings.edit.factors)
        assert Image.open(out / image_id / "loss.png").size == (480, 300)
        effects = json.loads((out / image_id / "edits.json").read_text())
        assert set(effects["edits"]) == {e.name for e in settings.edit.interfacegan}


def test_tuning_beats_the_start_latent_on_every_procedural_face(demo_run):
    out, _, _ = demo_run
    for image_id in FACES:
        tuned = json.loads((out / image_id / "metrics.json").read_text())["l2"]
        start = json.loads((out / image_id / "e4e_metrics.json").read_text())["l2"]
        assert tuned < start, (image_id, start, tuned)
    # and the encoder start itself is a face, not noise: far below the photo's error
    photo = json.loads((out / "astronaut" / "e4e_metrics.json").read_text())["l2"]
    assert max(json.loads((out / i / "e4e_metrics.json").read_text())["l2"]
               for i in FACES) < photo


def test_a_smile_edit_raises_the_regressors_smile_on_the_inverted_face(demo_run):
    """Rendered here with the tuned generator (not read from edits.json): +2 σ_d along the
    smile direction raises the predicted smile on every procedural face, by an amount of
    the order of the same edit on generated samples."""
    from gani.stages.run import plan
    from gani.stages.runtime import get_runtime
    from gani.stages.tune import load_result, weight_deltas

    out, settings, _ = demo_run
    rt = get_runtime(settings)
    reg = rt.regressor
    j = reg.attributes.index("smile")
    smile = next(e for e in settings.edit.interfacegan if e.name == "smile")
    d = rt.direction(smile).reshape(1, 1, -1)
    step = 2.0 * rt.direction_sigma("smile", d)
    layout = Layout(str(out))
    items = {i.image_id: i for i in plan(str(out.parent / "in"), layout, settings)}
    ref = rt.edit_context.reference["smile"][j] * rt.edit_context.attr_std[j]  # per σ_d
    for image_id in FACES:
        res = load_result(layout, items[image_id], rt)
        w = res.latent.reshape(1, rt.G.n_latent, -1).float()
        kw = {"weight_deltas": weight_deltas(res, rt)}
        with torch.no_grad():
            imgs = torch.cat([rt.G.synthesis(w + s * step * d.to(w), noise_mode="const", **kw)
                              for s in (-1.0, 1.0)]).clamp(-1, 1)
        lo, hi = reg.predict(imgs)[:, j].tolist()
        per_sigma = (hi - lo) / 4.0
        assert per_sigma > 0, (image_id, lo, hi)
        assert 0.25 * ref < per_sigma < 2.5 * ref, (image_id, per_sigma, float(ref))
        effects = json.loads((out / image_id / "edits.json").read_text())
        assert effects["edits"]["smile"]["delta"] > 0
        assert 0.25 < effects["edits"]["smile"]["ratio"] < 2.5
