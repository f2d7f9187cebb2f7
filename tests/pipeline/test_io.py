"""gani.io: listing, atomic writes, safe ids and content keys (local and S3 on moto)."""
import os

import pytest

from gani import io
from gani.stages.layout import Layout


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_list_images_sorted_recursive_filtered(tmp_path):
    for name in ["b.PNG", "a.jpg", "sub/c.webp", "sub/deep/d.tiff", "notes.txt", ".hidden.jpg",
                 ".cache/e.jpg", "f.jpeg", "g.bmp", "h.tif", "a.jpg.landmarks.json"]:
        _touch(tmp_path / name)
    rels = [rel for _, rel in io.list_images(str(tmp_path))]
    assert rels == ["a.jpg", "b.PNG", "f.jpeg", "g.bmp", "h.tif", "sub/c.webp",
                    "sub/deep/d.tiff"]
    uris = [u for u, _ in io.list_images(str(tmp_path))]
    assert all(os.path.isabs(u) and u.startswith(str(tmp_path)) for u in uris)


def test_list_images_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.list_images(str(tmp_path / "nope"))


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out" / "x.json"
    io.write_json(str(target), {"a": 1})
    assert io.read_json(str(target)) == {"a": 1}
    oct_mode = oct(target.stat().st_mode & 0o777)
    assert oct_mode == "0o644"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        io.write_json(str(target), {"a": 2})
    monkeypatch.undo()
    assert io.read_json(str(target)) == {"a": 1}          # old content intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]   # no temp left


@pytest.mark.parametrize("name", [
    "../../etc/passwd", "/abs/path/img.jpg", "..", ".", "a/../../b.png", "con\x00trol.jpg",
    "spaces and ü.jpg", "x" * 400 + ".png", "bad\udcff-bytes.jpg", "....jpg", "\\win\\p.jpg",
    "-dash.png", ".hidden.png"])
def test_safe_id_never_escapes(tmp_path, name):
    image_id = io.safe_id(name)
    assert image_id and len(image_id) <= io.MAX_ID_LENGTH
    assert "/" not in image_id and "\\" not in image_id and not image_id.startswith(".")
    assert set(image_id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    layout = Layout(str(tmp_path / "root"))
    uri = layout.uri(image_id, "status")
    assert io.within(str(tmp_path / "root"), uri)


def test_safe_id_keeps_plain_names_and_distinguishes_changed_ones():
    assert io.safe_id("photo_01.jpg") == "photo_01"
    assert io.safe_id("sub/dir/photo.png") == "sub__dir__photo"
    assert io.safe_id("a b.jpg") != io.safe_id("a_b.jpg")       # changed name gets a hash
    assert io.safe_id("a b.jpg").startswith("a_b-")


def test_image_ids_unique_for_collisions():
    rels = ["a.jpg", "a.png", "A.jpg", "x y.jpg", "x_y.jpg", "b.jpg"]
    ids = io.image_ids(rels)
    assert len(set(i.lower() for i in ids)) == len(ids)
    assert ids[-1] == "b"
    assert io.image_ids(rels) == ids                           # deterministic


def test_layout_refuses_unsafe_ids(tmp_path):
    layout = Layout(str(tmp_path))
    for bad in ["..", "a/b", ".x", ""]:
        with pytest.raises(ValueError):
            layout.uri(bad, "status")


def test_content_key_depends_on_every_part():
    base = io.content_key("img", "settings", {"generator": "g"})
    assert base == io.content_key("img", "settings", {"generator": "g"})
    assert base != io.content_key("img2", "settings", {"generator": "g"})
    assert base != io.content_key("img", "settings2", {"generator": "g"})
    assert base != io.content_key("img", "settings", {"generator": "h"})


@pytest.mark.service
def test_s3_list_read_write(s3_bucket):
    root = f"s3://{s3_bucket}/photos"
    for name in ["b.jpg", "a.png", "sub/c.jpeg", "readme.txt"]:
        io.write_bytes(f"{root}/{name}", name.encode())
    listing = io.list_images(root)
    assert [rel for _, rel in listing] == ["a.png", "b.jpg", "sub/c.jpeg"]
    assert listing[0][0] == f"{root}/a.png"
    assert io.read_bytes(listing[1][0]) == b"b.jpg"
    io.write_json(f"s3://{s3_bucket}/out/x/status.json", {"state": "done"})
    assert io.read_json(f"s3://{s3_bucket}/out/x/status.json") == {"state": "done"}
    assert io.read_json(f"s3://{s3_bucket}/out/missing.json", default=7) == 7
