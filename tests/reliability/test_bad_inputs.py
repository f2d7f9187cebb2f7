"""Bad inputs through the whole pipeline: one dataset mixing good face photos with every
kind of file a night may find in a folder, run once (demo profile shrunk, dlib alignment).

Every good image and every convertible variant (grayscale, palette, RGBA, 16-bit, CMYK,
EXIF-rotated, odd file names, duplicates) must end done; every bad file (empty, truncated,
text, 1x1, decompression bomb, no face, a FIFO / a device / a dangling link named .png)
quarantined with a specific reason in its status.json and in summary.json; nothing else is
affected.

Duplicate rule (docs/pipeline.md, "Bad input"): the same bytes under two names are two
images; both are processed and done, with the same image digest and content key.
"""
from __future__ import annotations

import io as _io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gani import io
from gani.alignment import BadImageError, load_image
from gani.stages import Layout, run_pipeline
from gani.stages.demo_data import demo_images

from .gani_runs import run_captured
from .test_numeric_faults import unreadable_artifacts

ROOT = Path(__file__).resolve().parents[2]
LONG_STEM = "portrait_" + "x" * 230           # 243 bytes with ".jpg": under NAME_MAX (255)
NON_UTF8 = b"caf\xe9_\xff.png"                 # latin-1 bytes: not valid UTF-8


# --------------------------------------------------------------------------- the dataset

def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = _io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def bomb_png(side: int = 20000) -> bytes:
    """A valid 1-bit one-colour PNG of side x side pixels (400 M pixels), compressed
    row by row so building it never holds the pixels: a few tens of KB."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)   # filter byte + packed bits
    parts = [comp.compress(row * 1000) for _ in range(side // 1000)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def png16_rgb(img: Image.Image) -> bytes:
    """`img` as a 16-bit-per-channel RGB PNG (colour type 2, depth 16), written by hand:
    Pillow reads these but cannot save them."""
    arr = np.asarray(img.convert("RGB"), dtype=">u2") * 257
    raw = b"".join(b"\x00" + row.tobytes() for row in arr)
    ihdr = struct.pack(">IIBBBBB", img.width, img.height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b""))


def exif_rotated_jpeg(upright: Image.Image) -> bytes:
    """The pixels stored turned 90° counter-clockwise, with EXIF Orientation 6 ("rotate 90°
    clockwise to display"): a viewer that honours the tag shows `upright`."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _enc(stored, "JPEG", quality=92, exif=exif.tobytes())


def build_dataset() -> dict[str, dict]:
    """{file name (str, or bytes for a non-UTF-8 name): {data, expect, reason}}.

    expect: "done" or "quarantined" (reason = the specific quarantine code)."""
    demo = demo_images()
    astronaut = demo["astronaut.png"]
    img = Image.open(_io.BytesIO(astronaut)).convert("RGB")
    gray = img.convert("L")
    rgba = img.copy()
    alpha = Image.new("L", img.size, 255)
    alpha.paste(0, (0, 0, 40, 40))                      # a transparent corner
    rgba.putalpha(alpha)
    sixteen = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)   # mode I;16
    jpeg = demo["astronaut_mirrored.jpg"]
    cases = {
        # good images
        "astronaut.png": dict(data=astronaut, expect="done"),
        "astronaut_mirrored.jpg": dict(data=jpeg, expect="done"),
        "astronaut_tilted.png": dict(data=demo["astronaut_tilted.png"], expect="done"),
        # convertible variants
        "gray.png": dict(data=_enc(gray, "PNG"), expect="done"),
        "palette.png": dict(data=_enc(img.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
                            expect="done"),
        "rgba.png": dict(data=_enc(rgba, "PNG"), expect="done"),
        "sixteen_bit.png": dict(data=_enc(sixteen, "PNG"), expect="done"),
        "sixteen_bit_rgb.png": dict(data=png16_rgb(img), expect="done"),
        "cmyk.jpg": dict(data=_enc(img.convert("CMYK"), "JPEG", quality=92), expect="done"),
        "exif_rotated.jpg": dict(data=exif_rotated_jpeg(img), expect="done"),
        # odd names and duplicates (same bytes as astronaut.png)
        "copy of astronaut.png": dict(data=astronaut, expect="done"),
        NON_UTF8: dict(data=astronaut, expect="done"),
        LONG_STEM + ".jpg": dict(data=jpeg, expect="done"),
        # bad files
        "empty.jpg": dict(data=b"", expect="quarantined", reason="empty"),
        "truncated.jpg": dict(data=jpeg[: len(jpeg) // 3], expect="quarantined",
                              reason="truncated"),
        "truncated.png": dict(data=astronaut[: len(astronaut) // 2], expect="quarantined",
                              reason="truncated"),
        "notes.jpg": dict(data=b"this is a text file, not a photo\n" * 20,
                          expect="quarantined", reason="not_an_image"),
        "one_pixel.png": dict(data=_enc(Image.new("RGB", (1, 1), (200, 100, 50)), "PNG"),
                              expect="quarantined", reason="too_small"),
        "bomb.png": dict(data=bomb_png(), expect="quarantined", reason="too_large"),
        "chelsea.png": dict(data=demo["chelsea.png"], expect="quarantined", reason="no_face"),
        # not regular files: reading must neither block (FIFO) nor never end (/dev/zero)
        "fifo.png": dict(make="fifo", expect="quarantined", reason="unreadable"),
        "zero.jpg": dict(make="link", target="/dev/zero", expect="quarantined",
                         reason="unreadable"),
        "dangling.png": dict(make="link", target="/nonexistent/gani/photo.png",
                             expect="quarantined", reason="unreadable"),
    }
    return cases


def id_of(name) -> str:
    """The id the pipeline gives a file at the top of the input folder."""
    return name if isinstance(name, str) else os.fsdecode(name)


def write_dataset(folder: Path, cases: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, case in cases.items():
        path = os.path.join(os.fsencode(folder), name if isinstance(name, bytes)
                            else os.fsencode(name))
        if case.get("make") == "fifo":
            os.mkfifo(path)
        elif case.get("make") == "link":
            os.symlink(case["target"], path)
        else:
            with open(path, "wb") as f:
                f.write(case["data"])


def files_outside(root: Path, before: set[str], top: Path) -> list[str]:
    """Files under `top` (the test's tmp folder) that appeared outside `root`."""
    now = {os.fsdecode(os.path.join(d, f)) for d, _, fs in os.walk(os.fsencode(top))
           for f in fs}
    return sorted(p for p in now - before if not io.within(str(root), p))


# --------------------------------------------------------------------------- fixture

@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, shrink):
    """The whole mix through run_pipeline once; (cases, ids, root, summary, outside)."""
    from gani.config import load_settings

    tmp = tmp_path_factory.mktemp("bad_inputs")
    data = tmp / "photos"
    cases = build_dataset()
    write_dataset(data, cases)
    listing = io.list_images(str(data))
    rels = [rel for _, rel in listing]
    ids = dict(zip(rels, io.image_ids(rels)))
    assert len(listing) == len(cases), sorted(rels)   # every file is seen, none twice
    settings = shrink(load_settings(ROOT / "params.yaml", "demo_random"),
                      **{"tracking.enabled": "false"})
    root = tmp / "out"
    before = {os.fsdecode(os.path.join(d, f)) for d, _, fs in os.walk(os.fsencode(tmp))
              for f in fs}
    summary = run_pipeline(str(data), Layout(str(root)), settings)
    outside = files_outside(root, before, tmp)
    return {"cases": cases, "ids": {name: ids[id_of(name)] for name in cases}, "root": root,
            "summary": summary, "outside": outside}


def status_of(root: Path, image_id: str) -> dict:
    p = root / image_id / "status.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def lost_for(run, names) -> int:
    """Good images (of `names`) not done, plus unusable artifacts of those done."""
    lost = 0
    for name in names:
        if run["cases"][name]["expect"] != "done":
            continue
        image_id = run["ids"][name]
        if status_of(run["root"], image_id).get("state") != "done":
            lost += 1
        else:
            lost += len(unreadable_artifacts(run["root"], image_id))
    return lost


def case_summary(run, names) -> dict:
    """summary.json restricted to some files, for one report row per case."""
    states = [status_of(run["root"], run["ids"][n]).get("state") for n in names]
    return {"counts": {k: states.count(k) for k in ("done", "quarantined", "failed")},
            "pending": sum(s not in ("done", "quarantined", "failed") for s in states)}


LABELS = {
    "astronaut.png": "good PNG face", "astronaut_mirrored.jpg": "good JPEG face",
    "astronaut_tilted.png": "good tilted face", "gray.png": "grayscale PNG",
    "palette.png": "palette PNG", "rgba.png": "RGBA PNG (transparent corner)",
    "sixteen_bit.png": "16-bit grayscale PNG", "sixteen_bit_rgb.png": "16-bit RGB PNG",
    "cmyk.jpg": "CMYK JPEG",
    "exif_rotated.jpg": "EXIF-rotated JPEG (orientation 6)",
    "copy of astronaut.png": "file name with spaces",
    NON_UTF8: "non-UTF-8 file name", LONG_STEM + ".jpg": "243-byte file name",
    "empty.jpg": "empty file", "truncated.jpg": "truncated JPEG",
    "truncated.png": "truncated PNG", "notes.jpg": "text file named .jpg",
    "one_pixel.png": "1x1 image", "bomb.png": "20000x20000 decompression bomb",
    "chelsea.png": "no face (cat)", "fifo.png": "FIFO named .png (would block a read)",
    "zero.jpg": "symlink to /dev/zero named .jpg", "dangling.png": "dangling symlink",
}


# --------------------------------------------------------------------------- tests

@pytest.mark.slow
def test_each_file_done_or_quarantined_with_its_reason(mixed_run, reliability):
    run, root, summary = mixed_run, mixed_run["root"], mixed_run["summary"]
    cases = run["cases"]
    want_done = {run["ids"][n] for n, c in cases.items() if c["expect"] == "done"}
    want_q = {run["ids"][n]: c["reason"] for n, c in cases.items() if c["expect"] != "done"}
    # summary.json (on disk and returned) says exactly this
    on_disk = json.loads((root / "summary.json").read_text())
    assert on_disk["counts"] == summary["counts"]
    assert summary["counts"] == {"done": len(want_done), "quarantined": len(want_q),
                                 "failed": 0}, summary
    assert summary["quarantined"] == want_q
    assert summary["failed"] == {} and summary["pending"] == 0
    assert run["outside"] == []
    for name, case in cases.items():
        image_id = run["ids"][name]
        status = status_of(root, image_id)
        assert status.get("state") == case["expect"], (name, status)
        if case["expect"] == "done":
            assert status["reason"] is None
            bad = unreadable_artifacts(root, image_id)
            assert bad == [], (name, bad)
        else:
            assert status["reason"] == case["reason"], (name, status)
            assert status.get("detail"), name          # a human-readable why
            assert summary["details"][image_id] == status["detail"]
            # nothing of a result is left for a quarantined file
            assert not (root / image_id / "aligned.png").exists()
            assert not (root / image_id / "metrics.json").exists()
        lost = lost_for(run, [name])
        note = (f"done ({image_id})" if case["expect"] == "done"
                else f"quarantined: {status['reason']}")
        reliability.from_summary("bad input", LABELS[name], case_summary(run, [name]),
                                 data_lost=lost + (len(run["outside"]) if name == NON_UTF8
                                                   else 0),
                                 note=note)
    assert lost_for(run, list(cases)) == 0


@pytest.mark.slow
def test_odd_names_get_safe_ids_inside_the_root(mixed_run):
    run, root = mixed_run, mixed_run["root"]
    for name in (NON_UTF8, LONG_STEM + ".jpg", "copy of astronaut.png"):
        image_id = run["ids"][name]
        assert len(image_id) <= io.MAX_ID_LENGTH and image_id.isascii()
        assert io.within(str(root), str(root / image_id))
        assert (root / image_id / "status.json").is_file()
    assert len(set(run["ids"].values())) == len(run["cases"])   # no two files share an id


@pytest.mark.slow
def test_duplicates_both_done_with_the_same_content_key(mixed_run, reliability):
    """Duplicate rule: same bytes under several names -> each is its own image, all done,
    with the same digest-derived content key (and the same aligned input)."""
    run, root = mixed_run, mixed_run["root"]
    names = ["astronaut.png", "copy of astronaut.png", NON_UTF8]
    statuses = [status_of(root, run["ids"][n]) for n in names]
    assert [s["state"] for s in statuses] == ["done"] * 3
    assert len({s["key"] for s in statuses}) == 1
    aligned = {(root / run["ids"][n] / "aligned.png").read_bytes() for n in names}
    assert len(aligned) == 1
    # a different file has a different key
    assert status_of(root, run["ids"]["gray.png"])["key"] != statuses[0]["key"]
    reliability.from_summary("bad input", "same image under 3 names",
                             case_summary(run, names), data_lost=lost_for(run, names),
                             note="each done, one content key")


@pytest.mark.slow
def test_exif_rotation_is_applied_before_alignment(mixed_run):
    """The EXIF-rotated file aligns like the upright original (not sideways)."""
    run, root = mixed_run, mixed_run["root"]
    upright = np.asarray(Image.open(root / run["ids"]["astronaut.png"] / "aligned.png"),
                         dtype=np.float32)
    rotated = np.asarray(Image.open(root / run["ids"]["exif_rotated.jpg"] / "aligned.png"),
                         dtype=np.float32)
    sideways = np.rot90(upright)
    assert np.abs(rotated - upright).mean() < np.abs(rotated - sideways).mean() / 2
    assert np.abs(rotated - upright).mean() < 20      # JPEG + landmark jitter only


def test_bomb_rejected_from_header_without_decoding(monkeypatch):
    """400 M pixels would need 400 MB as 8-bit (1.2 GB as RGB): the size is read from the
    header and the file refused before any pixel is decoded (a spy on Pillow's decoder
    entry point fails the test if it runs); the same with a lower align.max_pixels."""
    from PIL import ImageFile

    decoded = []

    def spy(self, *args, **kwargs):
        decoded.append(self.size)
        raise AssertionError(f"decoded {self.size}")

    data = bomb_png()
    assert len(data) < 200_000
    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(BadImageError) as err:
        load_image(data)
    assert err.value.reason == "too_large" and decoded == []
    # under Pillow's own bomb limit but over ours: still refused from the header
    with pytest.raises(BadImageError) as err:
        load_image(bomb_png(4000), max_pixels=1_000_000)
    assert err.value.reason == "too_large" and "limit 1000000" in str(err.value)
    assert decoded == []
    # control: the spy does catch a decode (a small image is decoded)
    with pytest.raises(AssertionError, match="decoded"):
        load_image(bomb_png(64))
    assert decoded == [(64, 64)]


def test_exif_variant_decodes_upright():
    img = Image.open(_io.BytesIO(demo_images()["astronaut.png"])).convert("RGB")
    out = load_image(exif_rotated_jpeg(img))
    assert out.size == img.size
    diff = np.abs(np.asarray(out, np.float32) - np.asarray(img, np.float32)).mean()
    assert diff < 6, diff


def test_permission_denied_local_is_quarantined_remote_is_a_store_fault(tmp_path,
                                                                       tiny_settings,
                                                                       monkeypatch, reliability):
    """A local file the run may not read is a bad input (quarantined `unreadable`); S3's
    AccessDenied (PermissionError after s3fs) is a store fault left to the orchestrator
    (failed `storage_error`, retried by the next run). Tests run as root, which ignores file
    modes, so the refusal is injected at the read."""
    from gani.stages import Layout
    from gani.stages.align import align_image
    from gani.stages.plan import plan_items

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "locked.png").write_bytes(demo_images()["astronaut.png"])
    layout = Layout(str(tmp_path / "out"))
    item = plan_items(str(photos), tiny_settings, layout, {})[0]
    real = io.read_bytes
    sources = {item.source, "s3://bucket/locked.png"}

    def refuse(uri, storage_options=None):
        if uri in sources:
            raise PermissionError(13, "Permission denied", uri)
        return real(uri, storage_options)

    real_size = io.size

    def refuse_size(uri, storage_options=None):  # S3 HEAD answers AccessDenied as well
        if uri in sources:
            raise PermissionError(13, "Permission denied", uri)
        return real_size(uri, storage_options)

    monkeypatch.setattr(io, "read_bytes", refuse)
    monkeypatch.setattr(io, "size", refuse_size)
    out = align_image(item, layout, tiny_settings)
    assert (out.state, out.reason) == ("quarantined", "unreadable")
    marker = layout.read_marker(item.image_id, "align")
    assert marker["reason"] == "unreadable" and "Permission denied" in marker["detail"]
    remote = item.model_copy(update={"source": "s3://bucket/locked.png",
                                     "image_id": "remote"})
    with pytest.raises(PermissionError):
        align_image(remote, layout, tiny_settings)
    reliability.add("bad input", "local file without read permission", images=1,
                    quarantined=1, note="quarantined: unreadable (S3 AccessDenied: raised)")


def test_oversized_file_is_quarantined_without_being_read(tmp_path, tiny_settings,
                                                         monkeypatch, reliability):
    """A file over `align.max_bytes` is quarantined `too_large` from its size alone: never
    read into memory (the plan hashes it in chunks), the other image is done as usual."""
    from gani.stages import Layout
    from gani.stages.align import align_image
    from gani.stages.plan import plan_items

    photos = tmp_path / "photos"
    photos.mkdir()
    good = demo_images()["astronaut.png"]
    (photos / "good.png").write_bytes(good)
    (photos / "huge.png").write_bytes(good + b"\0" * (len(good) + 4096))
    settings = tiny_settings.model_copy(deep=True)
    settings.align.max_bytes = len(good) + 2048
    layout = Layout(str(tmp_path / "out"))
    items = {i.rel: i for i in plan_items(str(photos), settings, layout, {})}
    assert items["huge.png"].digest == io.bytes_hash((photos / "huge.png").read_bytes())
    real = io.read_bytes
    read = []
    monkeypatch.setattr(io, "read_bytes",
                        lambda uri, so=None: (read.append(uri), real(uri, so))[1])
    huge = align_image(items["huge.png"], layout, settings)
    assert (huge.state, huge.reason) == ("quarantined", "too_large")
    assert "max_bytes" in layout.read_marker(huge.image_id, "align")["detail"]
    assert items["huge.png"].source not in read
    done = align_image(items["good.png"], layout, settings)
    assert done.state not in ("quarantined", "failed"), done
    reliability.add("bad input", "file over align.max_bytes", images=2, done=1, quarantined=1,
                    note="quarantined: too_large from its size, never read")


@pytest.mark.parametrize("name, colour", [
    ("gray.png", False), ("sixteen_bit.png", False), ("palette.png", True),
    ("rgba.png", True), ("sixteen_bit_rgb.png", True), ("cmyk.jpg", True),
    ("exif_rotated.jpg", True)])
def test_converted_variants_keep_the_picture(name, colour):
    """A converted variant is the same picture, not just any RGB image: luminance (and, for
    colour variants, each channel) within a few levels of the original on average (palette
    quantisation, JPEG, the white-composited transparent corner)."""
    img = Image.open(_io.BytesIO(demo_images()["astronaut.png"])).convert("RGB")
    out = load_image(build_dataset()[name]["data"])
    assert out.mode == "RGB" and out.size == img.size
    luma = np.abs(np.asarray(out.convert("L"), np.float32)
                  - np.asarray(img.convert("L"), np.float32)).mean()
    assert luma < 5, luma
    if colour:
        rgb = np.abs(np.asarray(out, np.float32) - np.asarray(img, np.float32)).mean()
        assert rgb < 5, rgb


# --------------------------------------------------------------------------- exit status

CLI_TINY = ["models.generator.size=32", "models.generator.style_dim=32",
            "models.generator.n_mlp=2", "models.generator.channel_max=32",
            "models.encoder.width_div=16", "tune.steps=2", "encode.projection_steps=2",
            "edit.pca_samples=64", "evaluate.locality_n=1", "evaluate.size=64",
            "orchestration.retries=1", "orchestration.retry_delay_seconds=0",
            "tracking.enabled=false"]


@pytest.mark.slow
@pytest.mark.service
def test_cli_exit_status_quarantined_is_0_failed_is_4(prefect_api, tmp_path, monkeypatch,
                                                       reliability):
    """`gani invert`: 0 when every image is done or quarantined (bad files are not a failed
    run); 4 when the run finished but an image failed (here: tuning turns non-finite)."""
    import torch

    import gani.tuning.common as tuning_common
    from cli.main import EXIT_FAILED, EXIT_OK, main

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "photos"
    data.mkdir()
    demo = demo_images()
    for name in ("astronaut.png", "broken.jpg", "chelsea.png"):
        (data / name).write_bytes(demo[name])

    def argv(out):
        args = ["invert", str(data), "--out", str(tmp_path / out), "--profile", "demo_random",
                "--params", str(ROOT / "params.yaml")]
        for s in CLI_TINY:
            args += ["--set", s]
        return args

    rc, printed = run_captured(main, argv("ok"))
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "quarantined": 2, "failed": 0}, printed
    assert rc == EXIT_OK, printed
    assert "image(s) failed" not in printed
    reliability.from_summary("bad input", "gani invert exit status: done + quarantined",
                             summary, data_lost=int(summary["counts"]["done"] != 1),
                             note=f"exit {rc}")

    real = tuning_common.synth

    def nan_synth(G, w, deltas=None, noise=None):
        return torch.full_like(real(G, w, deltas, noise), float("nan"))

    monkeypatch.setattr(tuning_common, "synth", nan_synth)
    rc, printed = run_captured(main, argv("nan"))
    summary = json.loads((tmp_path / "nan" / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "quarantined": 2, "failed": 1}, printed
    assert summary["failed"] == {"astronaut": "tuning_nonfinite"}
    assert rc == EXIT_FAILED, printed
    assert "1 image(s) failed" in printed and "astronaut (tuning_nonfinite)" in printed
    reliability.from_summary("bad input", "gani invert exit status: an image failed", summary,
                             faults_injected=1, faults_survived=1, data_lost=0,
                             note=f"exit {rc}; quarantined ones unaffected")
