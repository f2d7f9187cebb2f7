"""Where checkpoint files live (`data/checkpoints/`), and list / verify / import them.

A file is *verified* when its sha256 equals the published one, or, where none is
published, the one recorded in `data/checkpoints/SHA256SUMS` when the user imported it
(so later corruption is still caught).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .registry import REGISTRY, CheckpointSpec, find_by_file, get_spec

SUMS_FILE = "SHA256SUMS.json"


class CheckpointMissingError(FileNotFoundError):
    """A checkpoint the configuration needs is not where it should be."""


class CheckpointCorruptError(RuntimeError):
    """A checkpoint exists but its hash differs from the published or recorded one."""


def checkpoint_dir(data_dir: str | Path = "data") -> Path:
    return Path(data_dir) / "checkpoints"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_sums(data_dir: str | Path) -> dict[str, str]:
    p = checkpoint_dir(data_dir) / SUMS_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def _write_sums(data_dir: str | Path, sums: dict[str, str]) -> None:
    p = checkpoint_dir(data_dir) / SUMS_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(sums, indent=2, sort_keys=True))
    os.replace(tmp, p)


def _packaged_path(spec: CheckpointSpec) -> Optional[Path]:
    """Files that ship inside installed packages (no download needed): dlib's predictor in
    face-recognition-models, the testbed inside gani itself (`spec.packaged`)."""
    if spec.packaged:
        return Path(__file__).resolve().parents[1] / spec.packaged
    if spec.name == "dlib_68":
        # Located without importing the package: its __init__ needs pkg_resources, which
        # recent setuptools no longer ships.
        found = importlib.util.find_spec("face_recognition_models")
        if found is None or not found.submodule_search_locations:
            return None
        return Path(list(found.submodule_search_locations)[0]) / "models" / spec.file
    return None


def locate(name: str, data_dir: str | Path = "data") -> Optional[Path]:
    """The path of a checkpoint if present (data/checkpoints first, then packaged copies)."""
    spec = get_spec(name)
    p = checkpoint_dir(data_dir) / spec.file
    if p.is_file():
        return p
    packaged = _packaged_path(spec)
    return packaged if packaged is not None and packaged.is_file() else None


def how_to_get(spec: CheckpointSpec) -> str:
    return (f"Source: {spec.source}. Then run `gani checkpoints import PATH` "
            f"(or `dvc pull` if your team's DVC remote has it).")


def require(name: str, data_dir: str | Path = "data", profile: str | None = None) -> Path:
    """The path of a needed checkpoint, or an error naming the file, profile and source."""
    spec = get_spec(name)
    path = locate(name, data_dir)
    if path is None:
        who = f" (needed by profile {profile!r})" if profile else ""
        raise CheckpointMissingError(
            f"checkpoint {name!r}{who} is missing: expected "
            f"{checkpoint_dir(data_dir) / spec.file}. {how_to_get(spec)}")
    return path


def require_verified(name: str, data_dir: str | Path = "data",
                     profile: str | None = None) -> Path:
    """`require`, then the file's size and sha256 checked against the published (or
    import-recorded) ones: CheckpointCorruptError when they differ. Used for the files the
    demo loads at every run (small: hashing the testbed's ~16 MB takes a few ms)."""
    path = require(name, data_dir, profile)
    st = check(name, data_dir)
    if st.state == "corrupt":
        raise CheckpointCorruptError(f"checkpoint {name!r} at {path} is corrupt: {st.detail}. "
                                     f"{how_to_get(st.spec)}")
    return path


@dataclass
class Status:
    spec: CheckpointSpec
    path: Optional[Path]
    state: str  # missing | present | verified | corrupt
    detail: str = ""


def check(name: str, data_dir: str | Path = "data", hash_files: bool = True) -> Status:
    spec = get_spec(name)
    path = locate(name, data_dir)
    if path is None:
        return Status(spec, None, "missing", spec.source)
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        return Status(spec, path, "corrupt", f"size {size} B, expected {spec.size} B")
    if not hash_files:
        return Status(spec, path, "present", f"{size} B (hash not checked)")
    digest = sha256_file(path)
    expected = spec.sha256 or _read_sums(data_dir).get(spec.file)
    if expected is None:
        return Status(spec, path, "present", f"no published hash; sha256 {digest[:16]}…")
    if digest != expected:
        return Status(spec, path, "corrupt", f"sha256 {digest[:16]}… expected {expected[:16]}…")
    origin = "published" if spec.sha256 else "recorded at import"
    return Status(spec, path, "verified", f"sha256 matches the {origin} hash")


def check_all(data_dir: str | Path = "data", hash_files: bool = True) -> list[Status]:
    return [check(n, data_dir, hash_files) for n in REGISTRY]


def import_files(paths: Iterable[str | Path], data_dir: str | Path = "data",
                 name: str | None = None) -> list[Status]:
    """Copy user files into data/checkpoints/, verify them, record their sha256.

    The file is matched to a registry entry by its file name (or `name`). A file whose hash
    differs from a published one is refused and nothing is copied.
    """
    from gani.safeload import load_checkpoint

    out = []
    dest_dir = checkpoint_dir(data_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for raw in paths:
        src = Path(raw)
        if not src.is_file():
            raise FileNotFoundError(f"no such file: {src}")
        spec = get_spec(name) if name else find_by_file(src.name)
        if spec is None:
            known = ", ".join(sorted(s.file for s in REGISTRY.values()))
            raise KeyError(f"{src.name}: not a known checkpoint file name (known: {known}); "
                           f"pass --name to say which it is")
        digest = sha256_file(src)
        if spec.sha256 and digest != spec.sha256:
            raise CheckpointCorruptError(
                f"{src}: sha256 {digest} does not match the published {spec.sha256} for "
                f"{spec.name}; not imported")
        if spec.kind != "landmarks":
            load_checkpoint(src)  # refuses unsafe pickles and unreadable files before copying
        dest = dest_dir / spec.file
        with tempfile.NamedTemporaryFile(dir=dest_dir, delete=False) as tmp:
            tmp_path = Path(tmp.name)
        shutil.copyfile(src, tmp_path)
        os.replace(tmp_path, dest)
        sums = _read_sums(data_dir)
        sums[spec.file] = digest
        _write_sums(data_dir, sums)
        out.append(check(spec.name, data_dir))
    return out
