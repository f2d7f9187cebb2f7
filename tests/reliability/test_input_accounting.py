"""Every file under the input is accounted for, and symlinks follow one rule.

- `io.list_input` puts each entry under the input in exactly one place: an image of the
  run, or a skip reason (hidden, unsupported extension, symlink loop / repeat, output
  folder) with a count and examples; the counts add up to the files under the input.
- Symlinks to files and to folders follow the same rule (docs/pipeline.md#symlinks):
  followed wherever they point, except a loop, a repeat of what is listed anyway, or the
  output root.
- summary.json carries the account (`files`, `skipped_files`, `skipped_examples`) from
  both drivers (`run_pipeline`, the Prefect flow), and the flow's console line says it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gani import io
from gani.stages.demo_data import demo_images

from .gani_runs import run_captured


def _touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def _buckets(listing: io.Listing) -> dict[str, str]:
    """{relative path: 'image' | skip reason} from a listing whose examples hold every
    skipped entry (fewer than MAX_SKIP_EXAMPLES per reason); a path in two buckets fails."""
    out: dict[str, str] = {}
    for _, rel in listing.images:
        assert rel not in out, rel
        out[rel] = "image"
    for reason, rels in listing.examples.items():
        assert len(rels) == listing.skipped[reason] < io.MAX_SKIP_EXAMPLES
        for rel in rels:
            assert rel not in out, (rel, out.get(rel), reason)
            out[rel] = reason
    return out


def test_listing_puts_every_entry_in_one_bucket(tmp_path, reliability):
    """Real files, hidden ones, other extensions, and links of both kinds: inside the input
    (repeat), to an ancestor (loop), outside it (followed), into the output root, dangling."""
    data, out, ext = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    for rel in ["a.png", "b.JPG", "c.heic", "notes.txt", ".DS_Store", ".cache/x.png",
                ".cache/deep/y.jpg", "sub/d.png", "sub/.hidden.png"]:
        _touch(data / rel)
    for rel in ["e.png", "f.txt", "inner/g.webp"]:
        _touch(ext / rel)
    _touch(tmp_path / "lone.png")
    (out / "a").mkdir(parents=True)
    _touch(out / "a" / "aligned.png")
    _link(data / "sub" / "loop", "..")                       # folder -> an ancestor
    _link(data / "again", "sub")                             # folder -> inside the input
    _link(data / "a_copy.png", "a.png")                      # file -> inside the input
    _link(data / "ext_dir", str(ext))                        # folder -> outside: followed
    _link(data / "ext_dir2", str(ext / "inner"))             # folder -> already followed
    _link(data / "lone_link.png", str(tmp_path / "lone.png"))  # file -> outside: followed
    _link(data / "lone_zlink.png", str(tmp_path / "lone.png"))  # file -> already followed
    _link(data / "results", str(out))                        # folder -> the output root
    _link(data / "result.png", str(out / "a" / "aligned.png"))  # file -> the output root
    _link(data / "gone.jpg", str(tmp_path / "missing.jpg"))  # dangling, an image name
    _link(ext / "back", str(ext))                            # a loop outside the input

    listing = io.list_input(str(data), exclude=[str(out)])
    expected = {
        "a.png": "image", "b.JPG": "image", "c.heic": "image", "sub/d.png": "image",
        "ext_dir/e.png": "image", "ext_dir/inner/g.webp": "image",
        "lone_link.png": "image", "gone.jpg": "image",
        "notes.txt": "unsupported_extension", "ext_dir/f.txt": "unsupported_extension",
        ".DS_Store": "hidden", ".cache/x.png": "hidden", ".cache/deep/y.jpg": "hidden",
        "sub/.hidden.png": "hidden",
        "sub/loop": "symlink_loop", "ext_dir/back": "symlink_loop",
        "again": "symlink_repeat", "a_copy.png": "symlink_repeat",
        "ext_dir2": "symlink_repeat", "lone_zlink.png": "symlink_repeat",
        "results": "output_folder", "result.png": "output_folder",
    }
    assert _buckets(listing) == expected
    assert listing.files == len(expected) == len(listing.images) + sum(listing.skipped.values())
    assert [rel for _, rel in listing.images] == sorted(
        rel for rel, b in expected.items() if b == "image")
    assert io.list_images(str(data)) == io.list_input(str(data)).images  # same rule
    reliability.add("bad input", "input tree with hidden files and folders, other "
                    "extensions, links of both kinds (loop, repeat, outside, output root, "
                    "dangling): every entry in one bucket (listing only)",
                    faults_injected=len(expected) - len(listing.images),
                    faults_survived=len(expected) - len(listing.images),
                    note=f"{listing.files} entries: {len(listing.images)} images, "
                         f"skipped {dict(sorted(listing.skipped.items()))}")


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_symlink_rule_is_the_same_for_files_and_folders(tmp_path, kind):
    """One rule for both kinds: a link to something outside the input is followed (its
    images are inputs), a link to something listed anyway is a repeat, counted."""
    data, ext = tmp_path / "in", tmp_path / "shared"
    _touch(data / "real" / "p.png")
    _touch(ext / "q.png")
    outside = str(ext) if kind == "folder" else str(ext / "q.png")
    inside = "real" if kind == "folder" else "real/p.png"
    _link(data / ("outside" if kind == "folder" else "outside.png"), outside)
    _link(data / ("inside" if kind == "folder" else "inside.png"), inside)
    listing = io.list_input(str(data))
    followed = "outside/q.png" if kind == "folder" else "outside.png"
    assert [rel for _, rel in listing.images] == [followed, "real/p.png"]
    assert listing.skipped == {"symlink_repeat": 1}
    assert listing.examples["symlink_repeat"] == ["inside" if kind == "folder"
                                                  else "inside.png"]
    assert listing.files == 3


def test_examples_are_bounded_and_counts_are_not(tmp_path):
    data = tmp_path / "in"
    for k in range(3 * io.MAX_SKIP_EXAMPLES):
        _touch(data / ".thumbs" / f"t{k:02d}.png")
        _touch(data / f"readme{k:02d}.md")
    _touch(data / "a.png")
    listing = io.list_input(str(data))
    assert listing.skipped == {"hidden": 30, "unsupported_extension": 30}
    assert all(len(v) == io.MAX_SKIP_EXAMPLES for v in listing.examples.values())
    assert listing.files == 61


def _mixed_input(root: Path) -> dict[str, str]:
    """The tree of the brief: two photos, hidden files, a hidden folder, a .txt, a .heic, a
    symlink loop; returns {relative path: expected bucket} (done/quarantined/skip reason)."""
    files = demo_images()
    _touch(root / "astronaut.png", files["astronaut.png"])
    _touch(root / "sub" / "mirrored.jpg", files["astronaut_mirrored.jpg"])
    _touch(root / "photo.heic", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    _touch(root / "notes.txt", b"not a photo")
    _touch(root / ".DS_Store", b"\x00")
    _touch(root / "sub" / ".thumb.png", files["astronaut.png"])
    _touch(root / ".git" / "config", b"[core]")
    _touch(root / ".git" / "objects" / "ab.png", files["astronaut.png"])
    _link(root / "sub" / "loop", "..")
    return {"astronaut.png": "image", "sub/mirrored.jpg": "image", "photo.heic": "image",
            "notes.txt": "unsupported_extension", ".DS_Store": "hidden",
            "sub/.thumb.png": "hidden", ".git/config": "hidden", ".git/objects/ab.png": "hidden",
            "sub/loop": "symlink_loop"}


def _check_summary(summary: dict, out: Path, expected: dict[str, str]) -> None:
    """Each file of the input in exactly one bucket of summary.json, counts adding up."""
    on_disk = {}
    for status_file in out.glob("*/status.json"):
        status = io.read_json(str(status_file))
        on_disk[status["source"]] = status["state"]
    skipped = {rel: reason for reason, rels in summary["skipped_examples"].items()
               for rel in rels}
    assert not set(on_disk) & set(skipped)
    images = {rel for rel, b in expected.items() if b == "image"}
    assert set(on_disk) == images
    assert skipped == {rel: b for rel, b in expected.items() if b != "image"}
    assert on_disk["photo.heic"] == "quarantined"
    assert summary["skipped_files"] == {
        r: sum(1 for b in expected.values() if b == r) for r in set(expected.values()) - {"image"}}
    c = summary["counts"]
    assert summary["files"] == len(expected) == (c["done"] + c["quarantined"] + c["failed"]
                                                 + summary["pending"]
                                                 + sum(summary["skipped_files"].values()))


def test_summary_accounts_for_every_file(tmp_path, tiny_settings, reliability):
    """run_pipeline (the sequential / DVC driver): summary.json accounts for every file."""
    from gani.stages import Layout, run_pipeline

    data, out = tmp_path / "in", tmp_path / "out"
    expected = _mixed_input(data)
    summary = run_pipeline(str(data), Layout(str(out)), tiny_settings)
    _check_summary(summary, out, expected)
    assert io.read_json(str(out / "summary.json"))["skipped_files"] == summary["skipped_files"]
    reliability.from_summary("bad input", "hidden files, hidden folder, .txt, .heic, symlink "
                             "loop: every file in summary.json (run_pipeline)", summary,
                             note=f"files {summary['files']}, skipped "
                                  f"{dict(sorted(summary['skipped_files'].items()))}")


@pytest.mark.slow
def test_flow_summary_and_console_account_for_every_file(prefect_api, tmp_path, tiny_settings,
                                                         shrink, reliability):
    """The Prefect flow (`gani invert`): the same account in summary.json, and the
    console's summary line (what the CLI prints at the end) names the skipped files."""
    from flows.invert import run_invert
    from flows.report import report

    data, out = tmp_path / "in", tmp_path / "out"
    expected = _mixed_input(data)
    settings = shrink(tiny_settings, **{"tracking.enabled": "false"})
    # run_captured: Prefect's console handler keeps the stream of its first flow run
    summary, _ = run_captured(run_invert, str(data), str(out), settings)
    _check_summary(summary, out, expected)
    line = report(summary, settings, 1.0).strip().splitlines()[0]
    assert line.startswith("Done in 1s") and "2 done, 1 quarantined, 0 failed" in line
    assert "6 other files skipped (hidden 4, symlink_loop 1, unsupported_extension 1)" in line
    reliability.from_summary("bad input", "hidden files, hidden folder, .txt, .heic, symlink "
                             "loop: every file in summary.json and the console line (flow)",
                             summary, note=f"files {summary['files']}")


@pytest.mark.service
def test_s3_listing_accounts_for_hidden_keys_and_other_extensions(s3_bucket):
    root = f"s3://{s3_bucket}/in"
    for key in ["a.png", "b/c.jpg", ".hidden.png", "b/.cache/d.png", "readme.md"]:
        io.write_bytes(f"{root}/{key}", b"x")
    listing = io.list_input(root)
    assert [rel for _, rel in listing.images] == ["a.png", "b/c.jpg"]
    assert listing.skipped == {"hidden": 2, "unsupported_extension": 1}
    assert sorted(listing.examples["hidden"]) == [".hidden.png", "b/.cache/d.png"]
    assert listing.files == 5
