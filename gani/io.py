"""File I/O for the pipeline through fsspec: local folders and `s3://bucket/prefix` alike.

- `list_input(root)`: every file under a folder or prefix (recursive) accounted for
  (`Listing`): the image files, sorted by their path relative to the root (extensions in
  `IMAGE_EXTENSIONS`, case-insensitive), and every other file counted under one of
  `SKIP_REASONS` (hidden, unsupported extension, symlink loop or repeat, output folder,
  unreadable folder) with a few examples. Symlinks to files and to folders follow one rule
  (`_LocalWalk`; docs/pipeline.md#symlinks). `list_images(root)`: its images only.
- `child_folders(root)`: the folder names directly under an output root (which ids exist).
- `read_bytes` / `size` / `file_hash` (streamed sha256) / `write_bytes` / `read_json` /
  `write_json` / `exists` / `remove`.
  Writes are atomic: locally a temporary file in the same folder, fsync'd, then `os.replace`;
  on S3 a single PUT (an object is never visible half-written). A local read refuses what
  is not a regular file (`NotRegularFileError`: a FIFO, a device), never blocking on it.
- `remove_stale_temp(root)`: the temporary files a killed process left (SIGKILL or power
  loss between the write and the rename; no other way leaves one). Each is named
  `.<target name>.gani-tmp-<host>-<pid>-<random>.tmp` (host: a short hash of the host
  name), so a run removes those of dead processes of its own host at once and those of
  other hosts older than `max_age` seconds; a file without that exact pattern (a user's
  `.draft.tmp`) is never removed. The flow calls it at the start of a run.
- `image_ids(rel_paths, owners)`: safe, unique output folder names for untrusted file names /
  S3 keys (never `..`, never absolute, only `[A-Za-z0-9._-]`, bounded length; a name that
  had to be changed gets a short hash of the original so two different names never
  collide). Stable across runs: a file keeps the id whose existing outputs record it as
  their source (`owners`), so adding `a.png` beside a processed `a.jpg` never moves `a.jpg`.
- `content_key(...)`: the cache key of one image's results: sha256 of the image bytes, the
  settings hash, the checkpoint fingerprints and the code versions of the stages.

S3 credentials and endpoint come from the usual places (AWS_* environment, ~/.aws, or the
`storage_options` argument); nothing here reads the environment itself.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Optional

import fsspec

from gani import faults

# .jfif is a JPEG; a GIF gives its first frame; AVIF/HEIC are listed so that they are
# accounted for: decoded when this Pillow can, else quarantined `unsupported`
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff",
                    ".gif", ".avif", ".heic", ".heif")
MAX_ID_LENGTH = 96
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

StorageOptions = Optional[Mapping[str, Any]]


# --------------------------------------------------------------------------- URIs

def is_remote(uri: str) -> bool:
    """True for a URI with a protocol other than file:// (s3://, memory://, ...)."""
    return "://" in str(uri) and not str(uri).startswith("file://")


def _strip_file(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def filesystem(uri: str, storage_options: StorageOptions = None):
    """(fsspec filesystem, path inside it) for a local path or URI."""
    uri = str(uri)
    if not is_remote(uri):
        return fsspec.filesystem("file"), os.path.abspath(_strip_file(uri))
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    return fs, path


def protocol(uri: str) -> str:
    return str(uri).split("://", 1)[0] if is_remote(uri) else "file"


def join(root: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with '/' (no normalisation of `..`)."""
    out = str(root).rstrip("/")
    for p in parts:
        p = str(p).strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def to_uri(fs, path: str, like: str) -> str:
    """Turn a path returned by `fs` back into a URI of the same kind as `like`."""
    if is_remote(like):
        return f"{protocol(like)}://{path.lstrip('/')}"
    return path


# --------------------------------------------------------------------------- listing

def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# Why a file under the input is not an image of the run (summary.json `skipped_files`,
# docs/output-contract.md#input-accounting). Each counts files (entries), never folders,
# except where a folder cannot or must not be entered: then the link or folder counts once.
SKIP_REASONS = {
    "hidden": "a path part starts with '.' (each file of a hidden folder counts)",
    "unsupported_extension": "not one of IMAGE_EXTENSIONS",
    "symlink_loop": "a link to a folder that holds the link: following it would never end",
    "symlink_repeat": "a link to what is listed anyway: under the input root, or the target "
                      "of an earlier link",
    "output_folder": "a link (or folder) into an output root: results are not photos",
    "unreadable_folder": "a folder that cannot be listed (permissions)",
}
MAX_SKIP_EXAMPLES = 10


@dataclass
class Listing:
    """What `list_input` found under a root: the images ([(uri, relative path)], sorted by
    relative path) and every other entry, counted per reason of `SKIP_REASONS` with up to
    MAX_SKIP_EXAMPLES relative paths per reason. `files` = images + skipped entries: every
    file under the root is in exactly one of them."""

    images: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def files(self) -> int:
        return len(self.images) + sum(self.skipped.values())

    def skip(self, reason: str, rel: str) -> None:
        """Count the entry `rel` (a file; a link or folder not entered) as `reason`."""
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_SKIP_EXAMPLES:
            shown.append(rel)

    def add(self, uri: str, rel: str) -> None:
        """One file of the input: an image, or counted `unsupported_extension`."""
        if is_image_name(rel):
            self.images.append((uri, rel))
        else:
            self.skip("unsupported_extension", rel)


def _hidden_rel(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _inside_path(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _entries_below(folder: str, prefix: str) -> Iterator[str]:
    """Relative paths of the entries under a local folder, links not followed (a hidden
    folder's files, each accounted for); a folder that cannot be read is one entry."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        yield prefix.rstrip("/")
        return
    for entry in entries:
        try:
            real_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            real_dir = False
        if real_dir:
            yield from _entries_below(entry.path, f"{prefix}{entry.name}/")
        else:
            yield prefix + entry.name


class _LocalWalk:
    """The local listing (`list_input`): the real tree first, then symlinks, under one rule
    for links to files and links to folders (docs/pipeline.md#symlinks):

    a link is followed wherever it points, as the file or folder it points to, unless its
    target is in an output root (`output_folder`), holds the link (`symlink_loop`), or is
    listed anyway: under the input root, or already reached through an earlier link
    (`symlink_repeat`). So every real file is listed at most once and the walk ends. Links
    are taken in the order of their relative paths (deterministic). A dangling link is a
    file entry: an image name is listed (then quarantined `unreadable`), any other is
    counted by its extension."""

    def __init__(self, base: str, exclude: Iterable[str]):
        self.base = base
        self.exclude = [os.path.realpath(e) for e in exclude]
        self.listing = Listing()
        self.seen_dirs = {os.path.realpath(base)}   # real folders listed (and all below)
        self.seen_files: set[str] = set()            # real files listed through links
        self.links: list[tuple[str, str]] = []       # (path, rel) not handled yet

    def run(self) -> Listing:
        self._walk(self.base, "", followed=False)
        while self.links:
            self.links.sort(key=lambda link: link[1], reverse=True)
            self._link(*self.links.pop())
        self.listing.images.sort(key=lambda item: item[1])
        return self.listing

    def _excluded(self, real: str) -> bool:
        return any(_inside_path(real, e) for e in self.exclude)

    def _listed(self, real: str) -> bool:
        """True when the real path was listed already (itself, or a folder above it)."""
        if real in self.seen_files:
            return True
        probe = real
        while True:
            if probe in self.seen_dirs:
                return True
            parent = os.path.dirname(probe)
            if parent == probe:
                return False
            probe = parent

    def _walk(self, folder: str, prefix: str, followed: bool) -> None:
        """List one folder: files now, subfolders recursively, links for later. In a folder
        reached through a link (`followed`), what another link listed already is a repeat."""
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            self.listing.skip("unreadable_folder", prefix.rstrip("/") or ".")
            return
        for entry in entries:
            rel = prefix + entry.name
            try:
                link = entry.is_symlink()
                real_dir = not link and entry.is_dir(follow_symlinks=False)
            except OSError:
                link, real_dir = False, False
            real = os.path.realpath(entry.path) if (followed or real_dir) and not link else ""
            if entry.name.startswith("."):
                for hidden in (_entries_below(entry.path, rel + "/") if real_dir else [rel]):
                    self.listing.skip("hidden", hidden)
            elif link:
                self.links.append((entry.path, rel))
            elif real_dir and self._excluded(real):
                self.listing.skip("output_folder", rel)
            elif followed and (real in self.seen_dirs or real in self.seen_files):
                self.listing.skip("symlink_repeat", rel)
            elif real_dir:
                if followed:
                    self.seen_dirs.add(real)
                self._walk(entry.path, rel + "/", followed)
            else:
                self.listing.add(entry.path, rel)

    def _link(self, path: str, rel: str) -> None:
        """Follow one link, or count why not (the class rule)."""
        target = os.path.realpath(path)
        if not os.path.exists(target):
            self.listing.add(path, rel)                  # dangling: a file entry
            return
        is_dir = os.path.isdir(target)
        holder = os.path.realpath(os.path.dirname(path))
        if self._excluded(target):
            self.listing.skip("output_folder", rel)
        elif is_dir and _inside_path(holder, target):
            self.listing.skip("symlink_loop", rel)
        elif self._listed(target):
            self.listing.skip("symlink_repeat", rel)
        elif is_dir:
            self.seen_dirs.add(target)
            self._walk(path, rel + "/", followed=True)
        else:
            self.seen_files.add(target)
            self.listing.add(path, rel)


def _list_remote(fs, base: str, root: str) -> Listing:
    """An object store has no links: every key is a file, hidden when a part starts with
    '.', else an image or counted by extension."""
    listing = Listing()
    for path in sorted(fs.find(base)):
        rel = path[len(base):].lstrip("/") if path.startswith(base) else os.path.basename(path)
        if not rel:
            continue
        if _hidden_rel(rel):
            listing.skip("hidden", rel)
        else:
            listing.add(to_uri(fs, path, root), rel)
    listing.images.sort(key=lambda item: item[1])
    return listing


def list_input(root: str, storage_options: StorageOptions = None,
               exclude: Iterable[str] = ()) -> Listing:
    """Every file under `root` (a folder or prefix, recursive): the images, and why each
    other one is not (`Listing`, `SKIP_REASONS`). `exclude`: output roots, never listed
    (reached through a link). A root that does not exist raises FileNotFoundError, a file
    NotADirectoryError."""
    fs, base = filesystem(root, storage_options)
    if not fs.exists(base):
        raise FileNotFoundError(f"input not found: {root}")
    if fs.isfile(base):
        raise NotADirectoryError(f"input must be a folder or prefix, got a file: {root}")
    base = base.rstrip("/") or "/"
    if is_remote(root):
        return _list_remote(fs, base, root)
    local = [_strip_file(str(e)) for e in exclude if e and not is_remote(str(e))]
    return _LocalWalk(base, local).run()


def list_images(root: str, storage_options: StorageOptions = None) -> list[tuple[str, str]]:
    """[(uri, relative path)] of every image file under `root`, sorted by relative path
    (`list_input`'s images: hidden files and folders skipped, links followed by its rule).
    A root that does not exist raises FileNotFoundError."""
    return list_input(root, storage_options).images


def child_folders(root: str, storage_options: StorageOptions = None) -> set[str]:
    """Names of the folders (prefixes) directly under `root`; empty when it does not exist.
    One listing call (paginated on S3), no cache: what is there now."""
    if not is_remote(root):
        try:
            with os.scandir(_strip_file(str(root))) as it:
                return {e.name for e in it if e.is_dir(follow_symlinks=False)}
        except (FileNotFoundError, NotADirectoryError):
            return set()
    fs, path = filesystem(root, storage_options)
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return set()
    return {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries
            if e.get("type") == "directory"}


# --------------------------------------------------------------------------- read / write

def exists(uri: str, storage_options: StorageOptions = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    return fs.exists(path)


class NotRegularFileError(OSError):
    """A local path that is not a regular file (a FIFO, a device, a socket): reading it could
    block forever (a FIFO without writer) or never end (/dev/zero), so it is not read."""


@contextlib.contextmanager
def _open_regular(path: str) -> Iterator[BinaryIO]:
    """A local regular file opened for binary reading; anything else raises
    (IsADirectoryError, NotRegularFileError) without being read."""
    # O_NONBLOCK: opening a FIFO without a writer returns at once instead of blocking;
    # fstat on the open descriptor then tells what it really is (no check-then-open race).
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode)
                    or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "other")
            raise NotRegularFileError(errno.EINVAL, f"not a regular file ({kind})", path)
        with os.fdopen(fd, "rb", closefd=False) as f:
            yield f
    finally:
        os.close(fd)


def _read_local(path: str) -> bytes:
    with _open_regular(path) as f:
        return f.read()


def read_bytes(uri: str, storage_options: StorageOptions = None) -> bytes:
    """The whole content of a file or object. A local path that is not a regular file
    raises NotRegularFileError (never blocks on a FIFO, never reads a device)."""
    if not is_remote(uri):
        return _read_local(os.path.abspath(_strip_file(str(uri))))
    fs, path = filesystem(uri, storage_options)
    return fs.cat_file(path)


def size(uri: str, storage_options: StorageOptions = None) -> int:
    """Size in bytes of a file or object (without reading it)."""
    if not is_remote(uri):
        return os.stat(_strip_file(str(uri))).st_size
    fs, path = filesystem(uri, storage_options)
    return int(fs.size(path))


def file_hash(uri: str, storage_options: StorageOptions = None,
              chunk: int = 1 << 20) -> str:
    """sha256 of a file or object, read in chunks (constant memory, any size); equal to
    `bytes_hash(read_bytes(uri))`. A local non-regular file raises NotRegularFileError."""
    if is_remote(uri):
        fs, path = filesystem(uri, storage_options)
        opened = fs.open(path, "rb")
    else:
        opened = _open_regular(os.path.abspath(_strip_file(str(uri))))
    h = hashlib.sha256()
    with opened as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_bytes(uri: str, data: bytes, storage_options: StorageOptions = None) -> None:
    """Write `data` so that `uri` is either absent/old or complete, never partial."""
    if not is_remote(uri):
        path = Path(_strip_file(str(uri)))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX,
                                   dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
            if faults.ACTIVE:
                faults.hit("tmp_write")
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return
    fs, path = filesystem(uri, storage_options)
    fs.pipe_file(path, bytes(data))  # one PUT: S3 objects appear whole or not at all


TEMP_SUFFIX = ".tmp"
TEMP_TAG = "gani-tmp"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
# .<target name, at most 40 chars>.gani-tmp-<host: 6 hex>-<pid>-<mkstemp's 8 random chars>.tmp
_TEMP_NAME = re.compile(r"^\.(?P<target>[^/]{1,40})\." + TEMP_TAG
                        + r"-(?P<host>[0-9a-f]{6})-(?P<pid>[1-9][0-9]{0,9})-[a-z0-9_]{8}\.tmp$")


def temp_prefix(target_name: str, host: str = "", pid: int = 0) -> str:
    """The start of the name of a temporary file `write_bytes` writes for `target_name`
    (mkstemp adds 8 random characters and TEMP_SUFFIX)."""
    return f".{target_name[:40]}.{TEMP_TAG}-{host or _HOST}-{pid or os.getpid()}-"


def parse_temp_name(name: str) -> Optional[tuple[str, int]]:
    """(host hash, pid) of a temporary file gani's `write_bytes` named, else None: only a
    name with gani's tag, a 6-hex host and a pid is gani's own."""
    m = _TEMP_NAME.match(name)
    return (m.group("host"), int(m.group("pid"))) if m else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temp(root: str, max_age: float = 3600.0) -> list[str]:
    """Remove the temporary files of killed writers under a local `root`; returns them.

    Only files named by `write_bytes` count (`parse_temp_name`: gani's tag, the writer's
    host hash and pid); anything else (a user's `.draft.tmp`, an editor's swap file) is
    never touched, however old. Such a file is stale when it names this host and a process
    that no longer runs, or (another host) when it is older than `max_age` seconds. A
    temporary file of a live writer is never touched. No-op for remote roots (an S3 PUT
    leaves nothing behind) and for a root that does not exist yet.
    """
    if is_remote(root):
        return []
    base = _strip_file(str(root))
    if not os.path.isdir(base):
        return []
    removed, now = [], time.time()
    for folder, _dirs, files in os.walk(base):
        for name in files:
            writer = parse_temp_name(name)
            if writer is None:
                continue
            path = os.path.join(folder, name)
            host, pid = writer
            if host == _HOST:
                stale = pid != os.getpid() and not _pid_alive(pid)
            else:
                try:
                    stale = now - os.stat(path).st_mtime > max_age
                except FileNotFoundError:
                    continue
            if stale:
                try:
                    os.unlink(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
    return removed


def write_text(uri: str, text: str, storage_options: StorageOptions = None) -> None:
    write_bytes(uri, text.encode("utf-8"), storage_options)


def write_json(uri: str, obj: Any, storage_options: StorageOptions = None) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n",
               storage_options)


def read_json(uri: str, storage_options: StorageOptions = None, default: Any = None) -> Any:
    """Parsed JSON at `uri`, or `default` when it is missing or unreadable."""
    try:
        return json.loads(read_bytes(uri, storage_options))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        return default


def remove(uri: str, storage_options: StorageOptions = None) -> None:
    fs, path = filesystem(uri, storage_options)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def download(uri: str, local_path: str | os.PathLike, storage_options: StorageOptions = None) -> Path:
    """Copy a file from `uri` to a local path (plain copy for local sources)."""
    local = Path(local_path)
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(read_bytes(uri, storage_options))
    return local


# --------------------------------------------------------------------------- ids and keys

def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def safe_id(rel_path: str, keep_extension: bool = False) -> str:
    """A safe folder name for an untrusted relative path / object key.

    'photos/a b.jpg' -> 'photos__a_b-<hash>'; 'a.jpg' -> 'a'. Subfolders join with '__'.
    Anything outside [A-Za-z0-9._-], leading dots, '..', an empty or very long name is
    replaced, and then a short hash of the original name is appended so that different
    inputs never map to the same id.
    """
    original = str(rel_path)
    name = original.replace("\\", "/")
    if not keep_extension:
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS:
            name = stem
    parts = [p for p in name.split("/") if p not in ("", ".")]
    cleaned = "__".join(_SAFE.sub("_", p) for p in parts)
    cleaned = cleaned.lstrip(".-_")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    plain = "__".join(parts)
    changed = cleaned != plain or not cleaned or len(cleaned) > MAX_ID_LENGTH
    if changed:
        cleaned = cleaned[:MAX_ID_LENGTH - 9].rstrip(".-_") or "img"
        cleaned = f"{cleaned}-{_short_hash(original)}"
    return cleaned


def _preferred_id(rel: str, plain: str, full: str, collides: bool,
                  owners: Mapping[str, str], owned: Mapping[str, set]) -> str:
    """The id `rel` asks for: the one its existing outputs already have (`owners`: id ->
    source recorded there), else its plain id (the stem), or the id with its extension when
    the stem is shared with another file of the input or owned by another source."""
    if owners.get(plain) == rel:
        return plain
    if owners.get(full) == rel:
        return full
    if collides or _owned_by_other(plain, rel, owned):
        return full
    return plain


def _owned_by_other(image_id: str, rel: str, owned: Mapping[str, set]) -> bool:
    """True when existing outputs under `image_id` record another source than `rel`
    (`owned`: lower-cased id -> sources; a case-blind store has one folder for 'A' and 'a')."""
    return bool(owned.get(image_id.lower(), set()) - {rel})


def image_ids(rel_paths: Iterable[str], owners: Optional[Mapping[str, str]] = None
              ) -> list[str]:
    """Unique safe ids for a dataset's relative paths (same order).

    Usually the file name without extension; when two files would share an id (a.jpg and
    a.png), each of them keeps its extension, and as a last resort a hash is appended.
    `owners` ({existing id: the source relative path its outputs record}) makes ids stable
    across runs: a file whose outputs exist keeps their id, and a newcomer never takes an
    id another source owns (`a.jpg` processed as `a`, then `a.png` added: `a.jpg` stays
    `a`, `a.png` becomes `a.png`).
    """
    rels = list(rel_paths)
    owners = dict(owners or {})
    owned: dict[str, set] = {}
    for image_id, source in owners.items():
        owned.setdefault(image_id.lower(), set()).add(source)
    plain = [safe_id(r) for r in rels]
    counts: dict[str, int] = {}
    for i in plain:
        counts[i] = counts.get(i, 0) + 1
    wanted = [_preferred_id(r, p, safe_id(r, keep_extension=True), counts[p] > 1, owners, owned)
              for r, p in zip(rels, plain)]
    kept = {i.lower() for r, i in zip(rels, wanted) if owners.get(i) == r}
    seen: set[str] = set()
    out = []
    for rel, i in zip(rels, wanted):
        if owners.get(i) != rel and (i.lower() in seen or i.lower() in kept
                                     or _owned_by_other(i, rel, owned)):
            i = f"{i[:MAX_ID_LENGTH - 9]}-{_short_hash(rel)}"
        seen.add(i.lower())
        out.append(i)
    return out


def bytes_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(image_digest: str, settings_digest: str,
                checkpoint_hashes: Mapping[str, str] | None = None,
                code_versions: Mapping[str, str] | None = None) -> str:
    """Key of one image's results: image bytes' sha256 + settings hash + checkpoint hashes
    + {stage: hash of the source files it runs}."""
    blob = json.dumps({"image": image_digest, "settings": settings_digest,
                       "checkpoints": dict(sorted((checkpoint_hashes or {}).items())),
                       "code": dict(sorted((code_versions or {}).items()))},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def within(root: str, uri: str) -> bool:
    """True if `uri` lies inside `root` (after normalising '..' for local paths)."""
    if is_remote(root) != is_remote(uri):
        return False
    if not is_remote(root):
        r = os.path.realpath(_strip_file(root))
        u = os.path.realpath(_strip_file(uri))
        return u == r or u.startswith(r.rstrip(os.sep) + os.sep)
    r = str(root).rstrip("/") + "/"
    return str(uri).startswith(r) and "/../" not in str(uri)[len(r) - 1:] + "/"


def new_token() -> str:
    return uuid.uuid4().hex[:12]
