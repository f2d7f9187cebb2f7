"""The default parameters ship inside the package (issue 16, CLI): an installed `gani` runs
in any folder, a params.yaml in the working directory or `--params` is merged on top, and
the packaged file cannot drift from the repository's params.yaml."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from gani.config import (ConfigError, load_settings, packaged_params_path, params_sources,
                         settings_hash)

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_defaults_are_the_repository_params_yaml():
    """One file, not a copy: gani/config/params.yaml links to the repository's params.yaml
    (a checkout without symlinks would fail here, not drift silently)."""
    packaged = packaged_params_path()
    assert packaged.read_bytes() == (ROOT / "params.yaml").read_bytes()
    assert (ROOT / "gani" / "config" / "params.yaml").is_symlink()
    assert packaged.resolve() == (ROOT / "params.yaml").resolve()


def test_packaging_declares_the_defaults():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "params.yaml" in meta["tool"]["setuptools"]["package-data"]["gani.config"]


def test_settings_resolve_in_a_folder_without_params_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert params_sources() == [packaged_params_path()]
    here = load_settings(None, "demo_random")
    repo = load_settings(ROOT / "params.yaml", "demo_random")
    assert settings_hash(here) == settings_hash(repo)


def test_a_local_params_yaml_or_params_replaces_the_defaults(tmp_path, monkeypatch):
    """One file is read whole (what DVC shows is what runs; a profile can drop a key): a
    ./params.yaml, else --params, else the packaged defaults."""
    monkeypatch.chdir(tmp_path)
    text = packaged_params_path().read_text()
    (tmp_path / "params.yaml").write_text(text.replace("  log_every: 10", "  log_every: 3"))
    assert params_sources() == [Path("params.yaml")]
    assert load_settings(None, "ffhq").tune.log_every == 3
    other = tmp_path / "night.yaml"
    other.write_text("profiles:\n  mine: {tune: {steps: 9}}\n")
    s = load_settings(other, "mine")              # nothing from the defaults' profiles
    assert s.tune.steps == 9
    with pytest.raises(ConfigError, match="unknown profile 'ffhq'"):
        load_settings(other, "ffhq")
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", "demo_random")


@pytest.mark.slow
def test_the_wheel_carries_the_defaults(tmp_path):
    """A built wheel holds gani/config/params.yaml with the repository file's content (the
    symlink is followed), so `pip install` gives a `gani` that needs no checkout."""
    had_build = (ROOT / "build").exists()
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path)],
                           capture_output=True, text=True, timeout=600)
    finally:
        if not had_build:                     # setuptools builds in the source tree
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    [wheel] = list(tmp_path.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        assert z.read("gani/config/params.yaml") == (ROOT / "params.yaml").read_bytes()
