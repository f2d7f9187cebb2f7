"""params.yaml resolves for every profile; bad values fail naming the field and what is allowed."""
from pathlib import Path

import pytest
import yaml

from gani.config import ConfigError, load_settings, read_params, resolve, settings_hash

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"

# Paper Table 1 (docs/method.md#per-domain-defaults): steps and reconstruction loss per domain.
TABLE1 = {"ffhq": (300, "l2"), "afhq_wild": (300, "l2"), "cars": (400, "smooth_l1"),
          "horse": (800, "smooth_l1"), "church": (800, "smooth_l1")}


def test_every_section_is_present_in_params_yaml():
    data = read_params(PARAMS)
    for section in ("align", "encode", "tune", "edit", "evaluate", "tracking", "orchestration"):
        assert section in data, section
    assert set(data["profiles"]) == {"ffhq", "cars", "church", "horse", "afhq_wild", "demo",
                                     "demo_random"}


@pytest.mark.parametrize("profile", sorted(TABLE1))
def test_domain_profiles_follow_table1(profile):
    s = load_settings(PARAMS, profile)
    steps, rec = TABLE1[profile]
    assert s.domain == profile and s.profile == profile
    assert s.tune.steps == steps
    assert s.tune.loss.rec == rec
    assert (s.tune.loss.lambda_rec, s.tune.loss.lambda_lpips, s.tune.loss.lambda_id) == (1.0, 0.8, 0.1)
    assert (s.tune.reg.lambda_r, s.tune.reg.lambda_rec) == (0.2, 1.0)
    # parsing loss only where a face parser exists
    assert s.tune.loss.lambda_parse == (1.0 if profile in ("ffhq", "afhq_wild") else 0.0)


def test_afhq_wild_starts_from_w_projection():
    assert load_settings(PARAMS, "afhq_wild").encode.method == "w_projection"


def test_default_profile_is_demo_on_the_testbed_and_demo_random_is_small():
    s = load_settings(PARAMS)
    assert s.profile == "demo"
    assert s.models.generator.checkpoint == "testbed-generator" and s.models.generator.size == 32
    assert s.models.encoder.checkpoint == "testbed-e4e"
    # the default method follows the Pareto judgement (docs/method.md §9.5): PTI, at its
    # best rate on this generator; GANI stays one flag away
    assert s.tune.method == "pti" and s.tune.pti.lr == pytest.approx(1e-3)
    assert load_settings(PARAMS, "demo", ["tune.method=gani"]).tune.method == "gani"
    assert s.edit.regressor == "testbed-regressor"
    assert {e.name for e in s.edit.interfacegan} >= {"smile", "yaw"}
    r = load_settings(PARAMS, "demo_random")
    assert r.models.generator.checkpoint == "demo" and r.models.generator.size <= 64
    assert r.tune.method == "gani"       # the fast tests cover the experimental method


def test_set_overrides_parse_yaml_values():
    s = load_settings(PARAMS, "ffhq", ["tune.steps=50", "tune.gmm.pre_norm=in",
                                       "edit.factors=[-1, 1]", "tune.method=pti"])
    assert s.tune.steps == 50 and s.tune.gmm.pre_norm == "in"
    assert s.edit.factors == [-1.0, 1.0] and s.tune.method == "pti"


@pytest.mark.parametrize("override, path, hint", [
    ("tune.steps=abc", "tune.steps", "valid integer"),
    ("tune.steps=-1", "tune.steps", "greater than or equal to 0"),
    ("tune.gmm.pre_norm=layer", "tune.gmm.pre_norm", "'none', 'sn' or 'in'"),
    ("tune.optimizer.lr=0", "tune.optimizer.lr", "greater than 0"),
    ("tune.stepz=5", "tune.stepz", "allowed here: batch_size"),
    ("align.detector=mtcnn", "align.detector", "'dlib' or 'sidecar'"),
])
def test_bad_values_name_the_field_and_what_is_allowed(override, path, hint):
    with pytest.raises(ConfigError) as err:
        load_settings(PARAMS, "demo", [override])
    assert path in str(err.value) and hint in str(err.value)


def test_sections_are_named_after_the_stages():
    from gani.config.schema import Settings
    from gani.stages.layout import STAGES

    assert set(STAGES) <= set(Settings.model_fields)
    assert "metrics" not in Settings.model_fields


def test_steps_is_the_step_count_of_every_method():
    for method in ("gani", "pti", "wplus_projection", "w_projection"):
        s = load_settings(PARAMS, "demo", ["tune.steps=50", f"tune.method={method}"])
        assert s.tune.steps == 50
    tune = load_settings(PARAMS, "demo").tune
    assert "steps" not in tune.pti.model_fields and "steps" not in tune.projection.model_fields


@pytest.mark.parametrize("override, hint", [
    ("tune.pti.steps=3", "tune.pti.steps was removed: tune.steps is the step count of every "
                         "method"),
    ("tune.projection.steps=3", "tune.projection.steps was removed: tune.steps is the step count"),
    ("metrics.locality_n=1", "the metrics section was renamed evaluate"),
])
def test_removed_keys_on_the_command_line_say_what_replaced_them(override, hint):
    with pytest.raises(ConfigError) as err:
        load_settings(PARAMS, "demo", [override])
    assert hint in str(err.value)


def test_removed_keys_in_the_file_say_what_replaced_them():
    data = read_params(PARAMS)
    data["tune"]["pti"]["steps"] = 350
    data["profiles"]["demo"]["metrics"] = {"locality_n": 4}
    with pytest.raises(ConfigError) as err:
        resolve(data, "demo")
    assert "tune.pti.steps: tune.pti.steps was removed" in str(err.value)
    assert "metrics: the metrics section was renamed evaluate" in str(err.value)


def test_unknown_key_in_file_is_an_error(tmp_path):
    data = read_params(PARAMS)
    data["tune"]["lerning_rate"] = 1
    with pytest.raises(ConfigError, match=r"tune\.lerning_rate: unknown key; allowed here: .*steps"):
        resolve(data, "demo")


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown profile 'celeba'.*afhq_wild, cars, church, demo, demo_random, ffhq, "
                       "horse"):
        load_settings(PARAMS, "celeba")


def test_malformed_set_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_settings(PARAMS, "demo", ["tune.steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tune: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def test_settings_hash_changes_with_params_only():
    a = load_settings(PARAMS, "demo")
    b = load_settings(PARAMS, "demo")
    c = load_settings(PARAMS, "demo", ["tune.steps=7"])
    assert settings_hash(a) == settings_hash(b) != settings_hash(c)
    assert settings_hash(a, ["align"]) == settings_hash(c, ["align"])


def test_yaml_round_trip_of_resolved_settings_validates_again():
    s = load_settings(PARAMS, "cars")
    dumped = s.model_dump(mode="json")
    again = resolve({**dumped, "profiles": {"cars": {}}}, "cars")
    assert again == s
    assert yaml.safe_dump(dumped)
