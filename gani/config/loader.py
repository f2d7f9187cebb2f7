"""Load params.yaml, apply a named profile and `--set key=value` overrides, validate.

Where the parameters come from (`params_sources`): the file given as `path` (`--params`),
else a `params.yaml` in the working directory, else the defaults that ship inside the
package (`gani/config/params.yaml`, a symlink to the repository's params.yaml, so the two
are one file and an installed `gani` runs in any folder). One file, read whole: a user's
file replaces the defaults rather than being merged over them, so what runs is exactly
what the file (and `dvc params diff`) shows, and a profile can drop a key the defaults
set. Start one from `gani/config/params.yaml` (or the repository's params.yaml).

Resolution order: the base sections, then `profiles.<name>` merged on top, then each
`--set dotted.key=value` (the value parsed as YAML). Every error names the field path and
what is allowed.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from gani.redact import redact_uri, uri_credentials

from .schema import REMOVED_KEYS, Settings


LOG = logging.getLogger("gani.config")


class ConfigError(ValueError):
    """A configuration problem, with a message meant for the person running the job."""


def check_uris(**uris: str | None) -> None:
    """Refuse credentials in input / output URIs (ConfigError naming which one): they would
    be logged (Prefect parameters, MLflow tags, summary.json); S3 credentials come from the
    AWS environment. `check_uris(INPUT=..., out=...)`."""
    for what, uri in uris.items():
        found = uri_credentials(uri) if uri else None
        if found:
            raise ConfigError(f"{what} {redact_uri(uri)!r} carries credentials ({found}); "
                              f"pass them through the environment (AWS_ACCESS_KEY_ID, "
                              f"AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or ~/.aws), never "
                              f"in a URI")


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _allowed_keys(model: type[BaseModel], path: list[str]) -> list[str] | None:
    """The field names allowed at `path` (a list of keys) inside `model`, if it is a model."""
    cls: Any = model
    for part in path:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return None
        cls = field.annotation
    fields = getattr(cls, "model_fields", None)
    return sorted(fields) if fields else None


def removed_key(path: Iterable[str]) -> str | None:
    """What replaced a removed or renamed key (`path` or a section above it), else None."""
    parts = list(path)
    for n in range(1, len(parts) + 1):
        hint = REMOVED_KEYS.get(".".join(parts[:n]))
        if hint:
            return hint
    return None


def format_validation_error(err: ValidationError, model: type[BaseModel] = Settings) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        path = ".".join(loc)
        if e["type"] == "extra_forbidden" and removed_key(loc):
            lines.append(f"{path}: {removed_key(loc)}")
            continue
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1]) or []
            lines.append(f"{path}: unknown key; allowed here: {', '.join(allowed)}")
            continue
        got = e.get("input")
        if isinstance(got, str) and "://" in got:
            got = redact_uri(got)  # never echo a password or token back (gani/redact.py)
        got_s = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        lines.append(f"{path}: {e['msg']}{got_s}")
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"   # one problem, one line
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'tune.steps=50' -> (['tune', 'steps'], 50). The value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set has an empty key in {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
    return key.split("."), value


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[:i + 1])} is not a section")
        node = child
    node[path[-1]] = value


def packaged_params_path() -> Path:
    """The default parameters shipped inside the package (gani/config/params.yaml)."""
    return Path(__file__).resolve().parent / "params.yaml"


def params_sources(path: str | Path | None = None) -> list[Path]:
    """The parameters file a run reads, as a one-element list: `path` (which must exist;
    read_params says so), else ./params.yaml when present, else the packaged defaults."""
    if path is not None:
        return [Path(path)]
    local = Path("params.yaml")
    return [local] if local.is_file() else [packaged_params_path()]


def read_layered_params(path: str | Path | None = None) -> dict:
    """The parameters of `params_sources(path)` (checked by read_params)."""
    [source] = params_sources(path)
    return read_params(source)


def read_params(path: str | Path = "params.yaml") -> dict:
    """One parameters file as a mapping (ConfigError when missing or not a YAML mapping)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"parameters file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def _leaves(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """{('tune', 'steps'): 300, ...}: the leaf values of a nested mapping (lists are leaves)."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, Mapping) and value:
            out.update(_leaves(value, path))
        else:
            out[path] = value
    return out


def _as_default_types(base: Mapping) -> dict:
    """The base sections as the schema reads them (`1e-3` text -> 0.001, ...), so that they
    compare with the defaults; the raw mapping when the base alone does not validate."""
    try:
        dumped = Settings.model_validate(dict(base)).model_dump(mode="json")
    except ValidationError:
        return dict(base)
    return {k: dumped[k] for k in base if k in dumped}


def explicit_base_values(base: Mapping) -> dict[tuple[str, ...], Any]:
    """The base values that differ from the built-in defaults (`Settings()`): what the user
    changed in params.yaml (by hand or `dvc exp run --set-param`). They win over a profile's
    value, like `--set`: params.yaml's base sections equal the defaults as shipped
    (tests/foundation/test_config.py), so an unchanged file leaves every profile as it is."""
    defaults = _leaves(Settings().model_dump(mode="json"))
    raw = _leaves({k: v for k, v in base.items() if k not in ("profile", "profiles")})
    typed = _leaves(_as_default_types({k: v for k, v in base.items()
                                       if k not in ("profile", "profiles")}))
    return {path: raw[path] for path in raw
            if path in defaults and typed.get(path, raw[path]) != defaults[path]}


def _apply_explicit(merged: dict, base: Mapping, profile_tree: Mapping, name: str) -> None:
    """Put the explicit base values back over the profile's, warning about each one the
    profile set otherwise (docs/pipeline.md#dvc)."""
    shadowed = _leaves(profile_tree or {})
    for path, value in explicit_base_values(base).items():
        if path in shadowed and shadowed[path] != value:
            LOG.warning("params.yaml %s=%r wins over profiles.%s.%s=%r (an explicit base "
                        "value, like --set)", ".".join(path), value, name, ".".join(path),
                        shadowed[path])
        _set_path(merged, list(path), copy.deepcopy(value))


def resolve(data: Mapping, profile: str | None = None, overrides: Iterable[str] = ()) -> Settings:
    """Validate a params mapping (as read from params.yaml) into Settings: base sections,
    the profile, the explicit base values, `overrides` (module doc)."""
    data = dict(data)
    profiles = data.pop("profiles", {}) or {}
    name = profile or data.get("profile") or "demo"
    if name not in profiles:
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(sorted(profiles))}")
    merged = _deep_merge(data, profiles[name] or {})
    _apply_explicit(merged, data, profiles[name] or {}, name)
    merged["profile"] = name
    for item in overrides:
        path, value = parse_override(item)
        if removed_key(path):
            raise ConfigError(f"--set {'.'.join(path)}: {removed_key(path)}")
        allowed = _allowed_keys(Settings, path[:-1])
        if allowed is not None and path[-1] not in allowed:
            raise ConfigError(
                f"--set {'.'.join(path)}: unknown key {path[-1]!r}; allowed here: {', '.join(allowed)}")
        _set_path(merged, path, value)
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def load_settings(path: str | Path | None = None, profile: str | None = None,
                  overrides: Iterable[str] = ()) -> Settings:
    """`path`, else ./params.yaml, else the packaged defaults (`params_sources`), resolved
    for `profile` with `--set` overrides."""
    return resolve(read_layered_params(path), profile, overrides)


def settings_hash(settings: Settings, sections: Iterable[str] | None = None) -> str:
    """A stable short hash of the settings (or some sections), for cache keys and tags."""
    dump = settings.model_dump(mode="json")
    if sections is not None:
        dump = {k: dump[k] for k in sections}
    blob = json.dumps(dump, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
