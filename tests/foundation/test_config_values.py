"""Every number of the settings is checked by the schema itself, whatever field is added
later: the test walks gani/config/schema.py and tries, on every int field, a boolean, a
float and a string; on every float field, inf, -inf, nan and a boolean. Each must be
refused (ConfigError naming the field), never taken as 1 / 1.0 / inf."""
from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from gani.config import ConfigError, load_settings
from gani.config.schema import Settings

ROOT = Path(__file__).resolve().parents[2]


def _number_kind(annotation) -> str | None:
    """'int' / 'float' for a (possibly Annotated / Optional / list / tuple of) number."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _number_kind(typing.get_args(annotation)[0])
    if origin in (typing.Union, list, tuple):
        kinds = {_number_kind(a) for a in typing.get_args(annotation)} - {None}
        return kinds.pop() if len(kinds) == 1 else None
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return None


def number_fields(model: type[BaseModel] = Settings, prefix: str = ""):
    """(dotted key, 'int' | 'float', annotation) of every number field below `model`."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from number_fields(ann, f"{prefix}{name}.")
            continue
        kind = _number_kind(ann)
        if kind:
            yield f"{prefix}{name}", kind, ann


FIELDS = list(number_fields())


def _container(ann) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _container(typing.get_args(ann)[0])
    if origin in (list, tuple):
        return "list"
    return "scalar"


def test_the_walk_finds_the_known_fields():
    keys = {k for k, _, _ in FIELDS}
    assert {"tune.steps", "tune.optimizer.lr", "edit.factors", "tune.optimizer.betas",
            "models.generator.size", "orchestration.retry_delay_seconds"} <= keys
    assert len(FIELDS) > 50


@pytest.mark.parametrize("key, kind, ann", FIELDS, ids=[k for k, _, _ in FIELDS])
def test_every_number_refuses_non_numbers_and_non_finite(key, kind, ann):
    bad = (["true", "false", "'3'", "2.5"] if kind == "int" else
           ["true", "false", "abc", ".inf", "-.inf", ".nan", "'inf'", "'nan'"])
    default = load_settings(ROOT / "params.yaml", "demo")
    for value in bad:
        if _container(ann) == "list":
            n = len(_get(default, key)) or 1
            value = "[" + ", ".join([value] * n) + "]"
        with pytest.raises(ConfigError) as err:
            load_settings(ROOT / "params.yaml", "demo", [f"{key}={value}"])
        assert key in str(err.value), (key, value, str(err.value))


def _get(settings, key):
    node = settings
    for part in key.split("."):
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("setting", [
    "models.generator.size=33", "models.generator.size=48", "tune.optimizer.lr=0",
    "tune.optimizer.lr=-1e-3", "tune.optimizer.betas=[0.9,1.0]", "edit.factors=[]",
    "edit.ganspace=[{name: x, component: 0, start: 4, end: 4, strength: 1}]",
    "tracking.experiment=gani-{nonesuch}", "orchestration.gpu_limit=gpu:{nonesuch}",
    "tune.seed=-1", "orchestration.retries=1000", "tune.loss.lambda_id=-0.1",
])
def test_out_of_range_values_are_refused(setting):
    with pytest.raises(ConfigError):
        load_settings(ROOT / "params.yaml", "demo", [setting])


def test_every_profile_still_validates():
    for profile in ("demo", "demo_random", "ffhq", "cars", "church", "horse", "afhq_wild"):
        load_settings(ROOT / "params.yaml", profile)
    s = load_settings(ROOT / "params.yaml", "demo",
                      ["tune.optimizer.lr=1e-3", "tune.steps=5", "models.generator.size=128",
                       "edit.factors=[-1, 2.5]", "orchestration.gpu_limit=gpu:{host}"])
    assert s.edit.factors == [-1.0, 2.5] and s.tune.steps == 5
    # a deployment's `settings` parameter (JSON) validates back to the same model
    assert Settings.model_validate(s.model_dump(mode="json")) == s
