"""An explicit base value of params.yaml wins over the profile's, like `--set` does: what
`dvc exp run --set-param tune.steps=10` writes must change the run (issue 16, DVC)."""
from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from gani.config import load_settings
from gani.config.loader import _leaves, explicit_base_values, read_params, resolve
from gani.config.schema import Settings

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _base(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in ("profile", "profiles")}


def test_params_yaml_base_sections_are_the_built_in_defaults():
    """The rule needs it: an unchanged params.yaml has no explicit value, so every profile
    resolves as its own section says."""
    data = read_params(PARAMS)
    assert explicit_base_values(data) == {}
    defaults = _leaves(Settings().model_dump(mode="json"))
    for path in _leaves(_base(data)):
        assert path in defaults, f"params.yaml sets {'.'.join(path)}, unknown to the schema"


@pytest.mark.parametrize("profile, steps", [("demo", 30), ("cars", 400), ("church", 800)])
def test_unchanged_base_leaves_the_profile_value(profile, steps):
    assert load_settings(PARAMS, profile).tune.steps == steps


@pytest.mark.parametrize("profile", ["demo", "ffhq", "cars", "demo_random"])
def test_changed_base_key_wins_over_the_profile_and_warns(profile, caplog):
    data = copy.deepcopy(read_params(PARAMS))
    data["tune"]["steps"] = 10
    with caplog.at_level(logging.WARNING, logger="gani.config"):
        s = resolve(data, profile)
    assert s.tune.steps == 10
    assert f"tune.steps=10 wins over profiles.{profile}.tune.steps" in caplog.text
    # the rest of the profile is untouched
    assert s.models == load_settings(PARAMS, profile).models


def test_set_still_wins_over_an_explicit_base_value():
    data = copy.deepcopy(read_params(PARAMS))
    data["tune"]["steps"] = 10
    assert resolve(data, "demo", ["tune.steps=7"]).tune.steps == 7


def test_nested_and_text_values_compare_as_the_schema_reads_them():
    """`4.0e-6` written as text is the default, not an explicit value; a changed nested
    key (the generator's seed) is explicit and the profile's others stay."""
    data = copy.deepcopy(read_params(PARAMS))
    data["tune"]["optimizer"]["lr"] = "4.0e-6"
    assert explicit_base_values(data) == {}
    data["models"]["generator"]["seed"] = 5
    s = resolve(data, "demo")
    assert s.models.generator.seed == 5
    assert s.models.generator.checkpoint == "testbed-generator"


def test_dvc_set_param_rewrites_params_yaml_so_that_it_takes_effect(tmp_path):
    """DVC's own override code (what `dvc exp run --set-param` calls on params.yaml)."""
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    shutil.copy(PARAMS, params)
    assert load_settings(params, "demo").tune.steps == 30
    apply_overrides(params, ["tune.steps=10"])
    assert yaml.safe_load(params.read_text())["tune"]["steps"] == 10
    assert load_settings(params, "demo").tune.steps == 10
    apply_overrides(params, ["profiles.demo.tune.steps=12", "tune.steps=300"])
    assert load_settings(params, "demo").tune.steps == 12   # back to the default: profile's
