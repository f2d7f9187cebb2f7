"""File I/O for the pipeline through fsspec: local folders and `s3://bucket/prefix` alike.

- `list_images(root)`: every image file under a folder or prefix (recursive), sorted by its
  path relative to the root; extensions in `IMAGE_EXTENSIONS`, case-insensitive.
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
- `image_ids(rel_paths)`: safe, unique output folder names for untrusted file names / S3 keys
  (never `..`, never absolute, only `[A-Za-z0-9._-]`, bounded length; a name that had to be
  changed gets a short hash of the original so two different names never collide).
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


def list_images(root: str, storage_options: StorageOptions = None) -> list[tuple[str, str]]:
    """[(uri, relative path)] of every image file under `root`, sorted by relative path.

    Hidden files and folders (a part starting with '.') are skipped. A root that does not
    exist raises FileNotFoundError.
    """
    fs, base = filesystem(root, storage_options)
    if not fs.exists(base):
        raise FileNotFoundError(f"input not found: {root}")
    if fs.isfile(base):
        raise NotADirectoryError(f"input must be a folder or prefix, got a file: {root}")
    base = base.rstrip("/")
    found = []
    for path in fs.find(base):
        rel = path[len(base):].lstrip("/") if path.startswith(base) else os.path.basename(path)
        if not rel or any(part.startswith(".") for part in rel.split("/")):
            continue
        if is_image_name(rel):
            found.append((to_uri(fs, path, root), rel))
    found.sort(key=lambda item: item[1])
    return found


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


def image_ids(rel_paths: Iterable[str]) -> list[str]:
    """Unique safe ids for a dataset's relative paths (same order).

    Usually the file name without extension; when two files would share an id (a.jpg and
    a.png), each of them keeps its extension, and as a last resort a hash is appended.
    """
    rels = list(rel_paths)
    first = [safe_id(r) for r in rels]
    counts: dict[str, int] = {}
    for i in first:
        counts[i] = counts.get(i, 0) + 1
    ids = [safe_id(r, keep_extension=True) if counts[i] > 1 else i for r, i in zip(rels, first)]
    seen: set[str] = set()
    out = []
    for rel, i in zip(rels, ids):
        if i in seen or i.lower() in seen:
            i = f"{i[:MAX_ID_LENGTH - 9]}-{_short_hash(rel)}"
        seen.add(i)
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
