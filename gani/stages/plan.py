"""Plan a run: list the dataset, give each image a safe id and its cache keys, skip finished work.

An image's keys chain through the stages, so a changed parameter or a changed source file
invalidates exactly its stage and those after it (code[s]: the hash of the source files
stage s runs, `gani.stages.sources.code_version`):

    align    = H(image digest, domain, align, code[align])
    encode   = H(align, generator + encoder specs and files, encode, code[encode])
    tune     = H(encode, tune (without batch_size), models and files, code[tune])
    edit     = H(tune, edit, code[edit])
    evaluate = H(tune, evaluate, models and files, code[evaluate])
    key      = content key: image digest + settings hash + checkpoint hashes + the code of
               every stage (io.content_key)

The image digest is the sha256 of its bytes (locally), or the object store's ETag plus size
for remote objects (so planning 10,000 images does not download them all).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from pydantic import BaseModel

from gani import io
from gani.config import ConfigError, Settings, settings_hash
from gani.redact import redact_uri

from .layout import STAGES, Layout
from .sources import code_version

RESULT_SECTIONS = ("domain", "models", "align", "encode", "tune", "edit", "evaluate")
NO_CHECKPOINT = (None, "", "demo", "none")


class ImageItem(BaseModel):
    """The small manifest of one image that tasks pass around (never tensors)."""

    image_id: str
    source: str
    rel: str
    digest: str
    stage_keys: dict[str, str]   # per stage (see module doc); not `keys`: dict(model) would call it
    key: str
    state: str = "pending"          # pending | done | quarantined | failed
    reason: Optional[str] = None
    skipped: bool = False           # finished by an earlier run with the same key


def _h(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- fingerprints

_FP_CACHE: dict[tuple, str] = {}
_FP_LOCK = threading.Lock()


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _FP_LOCK:
        if key in _FP_CACHE:
            return _FP_CACHE[key]
    from gani.checkpoints import sha256_file

    digest = sha256_file(path)
    with _FP_LOCK:
        _FP_CACHE[key] = digest
    return digest


def checkpoint_fingerprints(settings: Settings, data_dir: str | os.PathLike = "data"
                            ) -> dict[str, str]:
    """{role: sha256 of the checkpoint file | 'demo:<seed>' | 'missing:<name>'}.

    Files are hashed once per (path, size, mtime) in this process.
    """
    m = settings.models
    names = {"generator": m.generator.checkpoint, "encoder": m.encoder.checkpoint,
             "id_net": m.id_net, "parser": m.parser, "lpips": m.lpips_backbone}
    out: dict[str, str] = {}
    for role, name in names.items():
        if name in NO_CHECKPOINT:
            out[role] = f"{name or 'none'}"
            continue
        from gani.checkpoints import locate

        try:
            path = locate(name, data_dir)
        except KeyError:
            path = None
        out[role] = _file_fingerprint(path) if path is not None else f"missing:{name}"
    return out


# --------------------------------------------------------------------------- keys

def code_versions() -> dict[str, str]:
    """{stage: hash of its source files}, computed once per process."""
    return {stage: code_version(stage) for stage in STAGES}


def stage_keys(digest: str, settings: Settings, fingerprints: Mapping[str, str],
               code: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    s = settings.model_dump(mode="json")
    fp = dict(fingerprints)
    code = code_versions() if code is None else code
    tune = dict(s["tune"])
    tune.pop("batch_size", None)  # batched == sequential: batching never changes results
    k_align = _h("align", digest, s["domain"], s["align"], code["align"])
    k_encode = _h("encode", k_align, s["models"]["generator"], s["models"]["encoder"],
                  s["encode"], fp.get("generator"), fp.get("encoder"), code["encode"])
    k_tune = _h("tune", k_encode, tune, s["models"], fp, code["tune"])
    k_edit = _h("edit", k_tune, s["edit"], code["edit"])
    k_eval = _h("evaluate", k_tune, s["evaluate"], s["models"], fp, code["evaluate"])
    return {"align": k_align, "encode": k_encode, "tune": k_tune, "edit": k_edit,
            "evaluate": k_eval}


def result_hash(settings: Settings) -> str:
    """The settings hash that matters for results (not tracking / orchestration)."""
    return settings_hash(settings, RESULT_SECTIONS)


def image_digest(uri: str, storage_options: Optional[Mapping[str, Any]] = None) -> str:
    if io.is_remote(uri):
        fs, path = io.filesystem(uri, storage_options)
        try:
            info = fs.info(path)
            etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
            if etag:
                return f"etag:{etag}:{info.get('size')}"
        except (OSError, KeyError):
            pass
    return io.file_hash(uri, storage_options)  # streamed: any file size in constant memory


# --------------------------------------------------------------------------- roots

def _norm_prefix(uri: str) -> str:
    """A remote URI as 'protocol://bucket/prefix' without trailing '/' (for containment)."""
    head, _, path = str(uri).partition("://")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return f"{head.lower()}://" + "/".join(parts)


def _inside(inner: str, outer: str, sep: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(sep) + sep)


def check_output_root(input_uri: str, output_uri: str,
                      storage_options: Optional[Mapping[str, Any]] = None) -> None:
    """Refuse an output root the run must not write to, before any work (ConfigError, one
    line, exit 2 from the CLI): empty (`--out ""` would be the filesystem root or the
    current folder), equal to the input, inside it (the next run would list the outputs as
    photos) or holding it, a file, or (locally) not writable. Remote roots are compared as
    prefixes (`s3://b/in` and `s3://b/in/out` overlap, `s3://b/in` and `s3://b/input` do
    not); their writability shows at the first write."""
    out = str(output_uri or "").strip()
    shown = redact_uri(out)
    if not out or out in ("file://", "/") or (io.is_remote(out) and not out.split("://", 1)[1]
                                                .strip("/")):
        raise ConfigError(f"output root {shown!r} is empty or the root of a filesystem/store; "
                          f"give a folder or s3://bucket/prefix of its own")
    inp = str(input_uri or "").strip()
    if inp and io.is_remote(inp) == io.is_remote(out):
        if io.is_remote(out):
            a, b, sep = _norm_prefix(inp), _norm_prefix(out), "/"
        else:
            a = os.path.realpath(io._strip_file(inp))
            b, sep = os.path.realpath(io._strip_file(out)), os.sep
        if _inside(b, a, sep) or _inside(a, b, sep):
            how = ("is the input" if a == b else "is inside the input" if _inside(b, a, sep)
                   else "contains the input")
            raise ConfigError(f"output root {shown!r} {how} {redact_uri(inp)!r}: outputs "
                              f"would be read as photos by the next run; choose a folder "
                              f"outside the input")
    if io.is_remote(out):
        try:
            fs, path = io.filesystem(out, storage_options)
            is_file = fs.isfile(path)
        except Exception:  # noqa: BLE001 - unreachable store: the first write says why
            is_file = False
        if is_file:
            raise ConfigError(f"output root {shown!r} is an object, not a prefix")
        return
    path = os.path.abspath(io._strip_file(out))
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        what = "is" if probe == path else f"lies under {probe!r}, which is"
        raise ConfigError(f"output root {shown!r} {what} a file, not a folder")
    if os.path.islink(probe) and not os.path.exists(probe):
        raise ConfigError(f"output root {shown!r}: {probe!r} is a dangling link")
    writable = os.access(probe, os.W_OK | os.X_OK)
    try:
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only = False
    if not writable or read_only:
        why = "a read-only filesystem" if read_only else "no write permission"
        raise ConfigError(f"output root {shown!r} is not writable ({why} on {probe!r})")


def check_layout_roots(input_uri: str, layout: Layout) -> None:
    """`check_output_root` for every root a layout writes (the DVC driver has one per
    stage)."""
    roots = {layout.root, *(layout.stage_root(s) for s in STAGES)}
    for root in sorted(roots):
        check_output_root(input_uri, root, layout.storage_options)


# --------------------------------------------------------------------------- plan

class Plan(BaseModel):
    """A run's plan: its images (`items`) and the account of every other file under the
    input (`io.Listing`): `files` = images listed + `skipped_files` counts
    (docs/output-contract.md#input-accounting)."""

    items: list[ImageItem]
    files: int = 0
    skipped_files: dict[str, int] = {}
    skipped_examples: dict[str, list[str]] = {}

    def accounting(self) -> dict[str, Any]:
        """summary.json's input-accounting keys."""
        return {"files": self.files, "skipped_files": dict(self.skipped_files),
                "skipped_examples": {k: list(v) for k, v in self.skipped_examples.items()}}


def _output_roots(layout: Layout) -> list[str]:
    return sorted({layout.root, *(layout.stage_root(s) for s in STAGES)})


def _recorded_source(layout: Layout, image_id: str) -> tuple[Optional[str], Optional[dict]]:
    """(the source relative path the outputs under `image_id` record, its status.json):
    status.json's `source`, else the align marker's (an image interrupted before its end)."""
    status = layout.read_status(image_id)
    source = (status or {}).get("source")
    if not source:
        source = (layout.read_marker(image_id, "align") or {}).get("source")
    return (source if isinstance(source, str) else None), status


def id_owners(rels: list[str], layout: Layout) -> tuple[dict[str, str], dict[str, dict]]:
    """({existing id: the source it records}, {id: status.json read}) for the ids the files
    `rels` could take (stem or stem + extension), reading only those whose folder exists
    (one listing of the output root): what `io.image_ids` needs to keep ids stable."""
    existing: set[str] = set()
    for root in {layout.stage_root("evaluate"), layout.stage_root("align")}:
        existing |= io.child_folders(root, layout.storage_options)
    if not existing:
        return {}, {}
    owners, statuses = {}, {}
    candidates = {c for r in rels for c in (io.safe_id(r), io.safe_id(r, keep_extension=True))}
    for image_id in sorted(candidates & existing):
        try:
            source, status = _recorded_source(layout, image_id)
        except ValueError:          # not a safe id: never one of ours
            continue
        if source:
            owners[image_id] = source
        if status is not None:
            statuses[image_id] = status
    return owners, statuses


def plan_input(input_uri: str, settings: Settings, layout: Layout,
               fingerprints: Mapping[str, str], only: Optional[Iterable[str]] = None) -> Plan:
    """Every image under `input_uri` as an ImageItem, sorted, and the account of the other
    files (`Plan`); `only` restricts the items to those source URIs (a shard). Ids are
    stable across runs (`id_owners`). Items whose status.json says done/quarantined with
    the same key come back with `skipped=True` and that state."""
    listing = io.list_input(input_uri, layout.storage_options, exclude=_output_roots(layout))
    rels = [rel for _, rel in listing.images]
    owners, statuses = id_owners(rels, layout)
    ids = io.image_ids(rels, owners)
    wanted = set(only) if only is not None else None
    rh = result_hash(settings)
    code = code_versions()
    items = []
    for (uri, rel), image_id in zip(listing.images, ids):
        if wanted is not None and uri not in wanted:
            continue
        try:
            digest = image_digest(uri, layout.storage_options)
        except OSError as exc:
            digest = f"unreadable:{type(exc).__name__}"
        keys = stage_keys(digest, settings, fingerprints, code)
        key = io.content_key(digest, rh, fingerprints, code)
        item = ImageItem(image_id=image_id, source=uri, rel=rel, digest=digest, stage_keys=keys,
                         key=key)
        status = statuses[image_id] if image_id in statuses else layout.read_status(image_id)
        if (status and status.get("key") == key
                and status.get("state") in ("done", "quarantined")):
            item.state, item.reason, item.skipped = status["state"], status.get("reason"), True
        items.append(item)
    return Plan(items=items, files=listing.files, skipped_files=listing.skipped,
                skipped_examples=listing.examples)


def plan_items(input_uri: str, settings: Settings, layout: Layout,
               fingerprints: Mapping[str, str], only: Optional[Iterable[str]] = None
               ) -> list[ImageItem]:
    """`plan_input`'s items (callers that need no account of the other files)."""
    return plan_input(input_uri, settings, layout, fingerprints, only).items


def shards(items: list[ImageItem], shard_size: int) -> list[list[ImageItem]]:
    """Consecutive chunks of at most shard_size items."""
    n = max(1, int(shard_size))
    return [items[i:i + n] for i in range(0, len(items), n)]
