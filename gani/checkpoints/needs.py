"""Every file a run's settings need, checked at once: one error that lists all that are missing.

Loading the networks (`gani.checkpoints.build`) stops at the first missing file, so a user
with nothing imported would learn the profile's five files one run at a time. `require_all`
is called first (by the CLI and the flows, before any image): it names each missing file,
where it is expected, where to get it (the registry's source, docs/checkpoints.md) and its
licence, then how to import them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gani.config import Settings

from .registry import get_spec
from .store import CheckpointMissingError, checkpoint_dir, locate

NO_FILE = (None, "", "demo", "none", "null")
# the testbed's networks need their config file next to them (gani/checkpoints/build.py)
TESTBED_CONFIGS = {"testbed-generator": "testbed-generator-config",
                   "testbed-e4e": "testbed-e4e-config"}
E4E_EDITINGS = "https://github.com/omertov/encoder4editing/tree/main/editings/"
DRIVE_ID = re.compile(r"Google Drive id ([A-Za-z0-9_-]{20,})")


@dataclass(frozen=True)
class Need:
    """One file a run needs: a registry checkpoint (`name`) or an editing asset (`path`)."""

    role: str
    name: Optional[str] = None
    path: Optional[str] = None


def needed(settings: Settings) -> list[Need]:
    """The checkpoints and editing files `settings` load, in the order the runtime loads
    them (generator, encoder, similarity nets, edits)."""
    m, e = settings.models, settings.edit
    out = [Need(role, name) for role, name in (
        ("generator", m.generator.checkpoint), ("encoder", m.encoder.checkpoint),
        ("identity net", m.id_net), ("face parser", m.parser), ("LPIPS backbone",
                                                                 m.lpips_backbone))
        if name not in NO_FILE]
    out += [Need(f"{n.role} config", TESTBED_CONFIGS[n.name]) for n in list(out)
            if n.name in TESTBED_CONFIGS]
    for d in e.interfacegan:
        out.append(Need(f"edit {d.name}", d.checkpoint) if d.checkpoint
                   else Need(f"edit {d.name}", path=d.file))
    if e.ganspace_file:
        out.append(Need("GANSpace PCA", path=e.ganspace_file))
    out += [Need(role, name) for role, name in (("edit regressor", e.regressor),
                                                ("edit reference", e.reference)) if name]
    unique: dict[tuple, Need] = {}
    for n in out:
        unique.setdefault((n.name, n.path), n)
    return list(unique.values())


def source_text(source: str) -> str:
    """A registry source with its Google Drive id written as a download URL."""
    return DRIVE_ID.sub(lambda m: f"https://drive.google.com/file/d/{m.group(1)}/view", source)


def editing_source(role: str) -> str:
    """Where a published editing file comes from (docs/protocols.md#editing-assets)."""
    folder = "ganspace_pca" if role == "GANSpace PCA" else "interfacegan_directions"
    return f"{E4E_EDITINGS}{folder} (sha256 in docs/protocols.md#editing-assets)"


def _missing_line(need: Need, data_dir: str | Path) -> Optional[str]:
    """How to get `need` when it is absent, else None (an unknown registry name is a
    missing file too: its line says so)."""
    if need.path is not None:
        if Path(need.path).is_file():
            return None
        return f"  - {need.path} ({need.role}): from {editing_source(need.role)}"
    try:
        spec = get_spec(need.name)
    except KeyError as exc:
        return f"  - {need.name} ({need.role}): {exc.args[0]}"
    if locate(need.name, data_dir) is not None:
        return None
    return (f"  - {checkpoint_dir(data_dir) / spec.file} ({need.role}, {spec.name}): "
            f"from {source_text(spec.source)}; licence: {spec.licence}")


def missing_files(settings: Settings, data_dir: str | Path = "data") -> list[str]:
    """One line per file of `needed(settings)` that is absent: path, role, source, licence."""
    return [line for n in needed(settings) if (line := _missing_line(n, data_dir))]


def require_all(settings: Settings, data_dir: str | Path = "data") -> None:
    """CheckpointMissingError listing every missing file of the profile, or nothing."""
    lines = missing_files(settings, data_dir)
    if not lines:
        return
    raise CheckpointMissingError(
        f"profile {settings.profile!r} needs {len(lines)} file(s) that are missing:\n"
        + "\n".join(lines)
        + f"\nDownload them, then `gani checkpoints import FILE...` (copies them into "
          f"{checkpoint_dir(data_dir)}/ and verifies them; editing files go under "
          f"data/editings/), or `dvc pull` if your team's DVC remote has them. "
          f"`gani checkpoints list` shows every known file; docs/checkpoints.md has details.")
