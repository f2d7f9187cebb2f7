"""Values that would spoil a run are refused before any image is processed (exit 2, one
error naming the field, no traceback, nothing under the output root), through the command
line. The schema-wide sweep (every int / float field) is tests/foundation/
test_config_values.py; here the cases a hostile tester used, end to end."""
from __future__ import annotations

import pytest

from cli.main import EXIT_CONFIG

from .test_bad_config import check_refused, invert, work  # noqa: F401 - the fixture

BAD_VALUES = [
    ("tune.optimizer.lr=.inf", ["tune.optimizer.lr", "finite"]),
    ("tune.optimizer.lr=.nan", ["tune.optimizer.lr", "finite"]),
    ("tune.optimizer.lr=0", ["tune.optimizer.lr", "greater than 0"]),
    ("tune.optimizer.lr=-1e-4", ["tune.optimizer.lr"]),
    ("tune.pti.lr=.inf", ["tune.pti.lr"]),
    ("tune.steps=true", ["tune.steps", "integer"]),
    ("tune.batch_size=2.5", ["tune.batch_size", "integer"]),
    ("models.generator.size=33", ["models.generator.size", "power of two"]),
    ("edit.factors=[-2.0,.nan]", ["edit.factors", "finite"]),
    ("edit.factors=[.inf]", ["edit.factors", "finite"]),
    ("edit.factors=[]", ["edit.factors"]),
    ("tune.loss.lambda_lpips=-1", ["tune.loss.lambda_lpips"]),
    ("tune.reg.lambda_r=.inf", ["tune.reg.lambda_r"]),
    ("tune.optimizer.betas=[0.9,1.0]", ["tune.optimizer.betas"]),
    ("tune.projection.noise_regularize=.nan", ["tune.projection.noise_regularize"]),
    ("orchestration.retry_delay_seconds=.inf", ["orchestration.retry_delay_seconds"]),
    ("orchestration.max_concurrency=true", ["orchestration.max_concurrency"]),
    ("tracking.experiment=gani-{nonesuch}", ["tracking.experiment"]),
    ("edit.ganspace=[{name: x, component: 0, start: 3, end: 3, strength: 1}]",
     ["edit.ganspace.0", "greater than start"]),
    ("edit.ganspace=[{name: x, component: 0, start: 0, end: 2, strength: .nan}]",
     ["edit.ganspace.0.strength", "finite"]),
]


@pytest.mark.parametrize("setting, names", BAD_VALUES, ids=[s for s, _ in BAD_VALUES])
def test_bad_value_fails_before_any_image(work, capsys, reliability, setting, names):
    check_refused(work, capsys, reliability, f"bad value --set {setting}",
                  invert(work, setting), EXIT_CONFIG, names)


def test_ganspace_component_out_of_range(work, capsys, reliability):
    """The component count is the PCA's (here computed from the 32-wide tiny generator:
    32 components), known when the runtime loads: still before any image, exit 2."""
    err = check_refused(
        work, capsys, reliability, "GANSpace component past the PCA's count",
        invert(work, "edit.ganspace=[{name: far, component: 40, start: 0, end: 2, "
                     "strength: 2}]"),
        EXIT_CONFIG, ["edit.ganspace.0 (far)", "component 40", "32 components"])
    assert len(err.strip().splitlines()) <= 3, err


def test_ganspace_start_past_the_last_layer(work, capsys, reliability):
    check_refused(
        work, capsys, reliability, "GANSpace edit starting past the last W+ layer",
        invert(work, "edit.ganspace=[{name: late, component: 1, start: 9, end: 12, "
                     "strength: 2}]"),
        EXIT_CONFIG, ["edit.ganspace.0 (late)", "start 9", "8 layers"])
