"""Image ids are stable across runs: a file whose outputs exist keeps their id, whatever
files are added or removed beside it (`io.image_ids` with the owners `plan.id_owners` reads
from status.json / the align marker). Before, ids came from the stems alone: adding `a.png`
beside a processed `a.jpg` renamed `a.jpg` to `a.jpg` and redid it under that new id."""
from __future__ import annotations

from pathlib import Path

from gani import io
from gani.stages import Layout, plan_input, run_pipeline, run_stage
from gani.stages.demo_data import demo_images


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """{file name: (bytes, mtime_ns)} of every file in an image's output folder."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_adding_a_png_beside_a_processed_jpg_keeps_its_id(tmp_path, tiny_settings,
                                                          reliability):
    files = demo_images()
    data, out = tmp_path / "in", tmp_path / "out"
    data.mkdir()
    (data / "a.jpg").write_bytes(files["astronaut_mirrored.jpg"])
    first = run_pipeline(str(data), Layout(str(out)), tiny_settings)
    assert first["counts"]["done"] == 1 and (out / "a" / "status.json").is_file()
    before = _snapshot(out / "a")

    (data / "a.png").write_bytes(files["astronaut.png"])
    second = run_pipeline(str(data), Layout(str(out)), tiny_settings)
    assert second["processed"] == 1 and second["skipped"] == 1      # only a.png ran
    assert _snapshot(out / "a") == before                            # a.jpg untouched
    assert not (out / "a.jpg").exists()
    assert io.read_json(str(out / "a.png" / "status.json"))["source"] == "a.png"
    assert io.read_json(str(out / "a" / "status.json"))["source"] == "a.jpg"
    assert second["counts"]["done"] == 2

    (data / "a.png").unlink()                # and removing the newcomer moves nothing
    planned = plan_input(str(data), tiny_settings, Layout(str(out)), {})
    assert [(i.image_id, i.rel) for i in planned.items] == [("a", "a.jpg")]
    reliability.from_summary("bad input", "a.png added beside a processed a.jpg: a.jpg keeps "
                             "its id and outputs, a.png gets a new one", second,
                             note=f"ids a (a.jpg, untouched), a.png; processed "
                                  f"{second['processed']}")


def test_ids_of_files_sharing_a_stem_stay_when_one_goes(tmp_path, tiny_settings):
    """Planned together, a.jpg and a.png take their extension ids; once outputs exist,
    removing one leaves the other its id (it does not fall back to the stem)."""
    data, out = tmp_path / "in", tmp_path / "out"
    data.mkdir()
    for name in ("a.jpg", "a.png"):
        (data / name).write_bytes(demo_images()["astronaut.png"])
    layout = Layout(str(out))
    items = plan_input(str(data), tiny_settings, layout, {}).items
    assert [i.image_id for i in items] == ["a.jpg", "a.png"]
    run_stage("align", items, layout, tiny_settings)     # outputs begun: markers only
    (data / "a.png").unlink()
    assert [i.image_id for i in plan_input(str(data), tiny_settings, layout, {}).items] \
        == ["a.jpg"]


def test_an_interrupted_image_keeps_its_id(tmp_path, tiny_settings):
    """No status.json yet (the run stopped after align): the align marker's source keeps
    the id, so the next run resumes it instead of starting over under another id."""
    data, out = tmp_path / "in", tmp_path / "out"
    data.mkdir()
    (data / "a.jpg").write_bytes(demo_images()["astronaut_mirrored.jpg"])
    layout = Layout(str(out))
    run_stage("align", plan_input(str(data), tiny_settings, layout, {}).items, layout,
              tiny_settings)
    assert not (out / "a" / "status.json").exists()
    (data / "a.png").write_bytes(demo_images()["astronaut.png"])
    ids = {i.rel: i.image_id for i in plan_input(str(data), tiny_settings, layout, {}).items}
    assert ids == {"a.jpg": "a", "a.png": "a.png"}


def test_image_ids_with_owners():
    assert io.image_ids(["a.jpg", "a.png"]) == ["a.jpg", "a.png"]           # no outputs yet
    assert io.image_ids(["a.jpg", "a.png"], {"a": "a.jpg"}) == ["a", "a.png"]
    assert io.image_ids(["a.jpg", "a.png"], {"a": "a.png"}) == ["a.jpg", "a"]
    assert io.image_ids(["a.jpg"], {"a.jpg": "a.jpg"}) == ["a.jpg"]
    assert io.image_ids(["a.png"], {"a": "gone.jpg"}) == ["a.png"]     # never takes another's
    ids = io.image_ids(["A.jpg", "b.jpg"], {"a": "a.jpg"})   # case-insensitive stores
    assert ids[0].lower() != "a" and ids[1] == "b"
