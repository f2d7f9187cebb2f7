"""Load params.yaml, apply a named profile and `--set key=value` overrides, validate.

Resolution order: the base sections of params.yaml, then `profiles.<name>` merged on top,
then each `--set dotted.key=value` (the value parsed as YAML). Every error names the field
path and what is allowed.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from gani.redact import redact_uri, uri_credentials

from .schema import REMOVED_KEYS, Settings


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


def read_params(path: str | Path = "params.yaml") -> dict:
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


def resolve(data: Mapping, profile: str | None = None, overrides: Iterable[str] = ()) -> Settings:
    """Validate a params mapping (as read from params.yaml) into Settings."""
    data = dict(data)
    profiles = data.pop("profiles", {}) or {}
    name = profile or data.get("profile") or "demo"
    if name not in profiles:
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(sorted(profiles))}")
    merged = _deep_merge(data, profiles[name] or {})
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


def load_settings(path: str | Path = "params.yaml", profile: str | None = None,
                  overrides: Iterable[str] = ()) -> Settings:
    """Read params.yaml and resolve it for `profile` with `--set` overrides."""
    return resolve(read_params(path), profile, overrides)


def settings_hash(settings: Settings, sections: Iterable[str] | None = None) -> str:
    """A stable short hash of the settings (or some sections), for cache keys and tags."""
    dump = settings.model_dump(mode="json")
    if sections is not None:
        dump = {k: dump[k] for k in sections}
    blob = json.dumps(dump, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
