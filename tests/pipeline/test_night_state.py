"""The night as Prefect sees it (issue 16, Prefect): a night with failed images ends in
Prefect's Failed state after writing every result and summary.json (so a "flow run failed"
automation fires; the CLI's exit 4 is the same condition), a clean night Completed; runs
are named by dataset, profile and date; the deployment's parameters carry descriptions;
prefect.yaml points to the runbook."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from flows.invert import invert_dataset, invert_shard, night_state

ROOT = Path(__file__).resolve().parents[2]


def test_night_state_is_failed_exactly_when_images_failed_or_are_pending():
    ok = {"counts": {"done": 2, "quarantined": 1, "failed": 0}, "pending": 0}
    assert night_state(ok) is None
    bad = {"counts": {"done": 1, "quarantined": 0, "failed": 1}, "pending": 0,
           "failed": {"astronaut": "tuning_nonfinite"}, "output": "/out"}
    state = night_state(bad)
    assert state.is_failed() and "astronaut (tuning_nonfinite)" in state.message
    assert state.result(raise_on_failure=False) == bad       # the summary rides along
    lost = {"counts": {"done": 1, "quarantined": 0, "failed": 0}, "pending": 3}
    assert night_state(lost).is_failed() and "3 pending" in night_state(lost).message


def test_every_deployment_parameter_has_a_description():
    for fl in (invert_dataset, invert_shard):
        props = fl.parameters.properties
        assert props, fl.name
        missing = [name for name, p in props.items() if not p.get("description")]
        assert missing == [], (fl.name, missing)


def test_prefect_yaml_points_to_the_runbook():
    text = (ROOT / "prefect.yaml").read_text()
    assert "docs/pipeline.md" in text and "details in README.md" not in text
    nightly = next(d for d in yaml.safe_load(text)["deployments"] if d["name"] == "nightly")
    assert nightly["entrypoint"] == "flows/invert.py:invert_dataset"


@pytest.mark.slow
@pytest.mark.service
def test_a_night_with_a_failed_image_ends_failed_after_writing_everything(
        prefect_api, tmp_path, monkeypatch, shrink, tiny_settings):
    import torch
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    import gani.tuning.common as tuning_common
    from flows.invert import run_invert
    from tests.reliability.gani_runs import write_photos

    write_photos(tmp_path / "photos", ["astronaut.png", "broken.jpg"])
    real = tuning_common.synth
    monkeypatch.setattr(tuning_common, "synth", lambda G, w, deltas=None, noise=None:
                        torch.full_like(real(G, w, deltas, noise), float("nan")))
    settings = shrink(tiny_settings, **{"tracking.enabled": False})
    out = tmp_path / "out"
    summary = run_invert(str(tmp_path / "photos"), str(out), settings, dataset_name="night")
    # every result and the summary are written, then the night is Failed
    assert summary["counts"] == {"done": 0, "quarantined": 1, "failed": 1}
    assert json.loads((out / "summary.json").read_text())["failed"] == {
        "astronaut": "tuning_nonfinite"}
    assert json.loads((out / "astronaut" / "status.json").read_text())["state"] == "failed"

    async def read(run_id):
        async with get_client() as client:
            [run] = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[run_id])))
            return run
    import asyncio

    run = asyncio.run(read(summary["prefect_flow_run_id"]))
    assert run.state.type.value == "FAILED", run.state
    assert "1 image(s) failed: astronaut (tuning_nonfinite)" in run.state.message
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert run.name == f"night-demo_random-{today}"

    monkeypatch.setattr(tuning_common, "synth", real)       # the re-run retries and passes
    again = run_invert(str(tmp_path / "photos"), str(out), settings, dataset_name="night")
    assert again["counts"] == {"done": 1, "quarantined": 1, "failed": 0}
    assert asyncio.run(read(again["prefect_flow_run_id"])).state.type.value == "COMPLETED"


def test_one_gpu_limit_per_gpu_with_a_worker_per_gpu(monkeypatch, tiny_settings):
    """`gpu:{host}:{gpu}`: each worker started with CUDA_VISIBLE_DEVICES=k takes slots of
    its own GPU's limit (the runbook's several-GPU machine)."""
    import socket

    from gani.config import resolve
    from tasks.pipeline import gpu_limit_name

    dump = tiny_settings.model_dump(mode="json")
    s = resolve({**dump, "profiles": {tiny_settings.profile: {}}}, tiny_settings.profile,
                ["orchestration.gpu_limit=gpu:{host}:{gpu}"])
    host = socket.gethostname()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpu_limit_name(s) == f"gpu:{host}:1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_limit_name(s) == f"gpu:{host}:2+3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_limit_name(s) == f"gpu:{host}:all"


@pytest.mark.service
def test_the_documented_alert_is_accepted_by_a_prefect_server(prefect_api):
    """docs/pipeline.md's automation (alert on Failed / Crashed nightly runs), as a user
    pastes it: it validates and a real Prefect API stores it as written."""
    import asyncio
    import re

    from prefect.automations import AutomationCore
    from prefect.client.orchestration import get_client

    text = (ROOT / "docs" / "pipeline.md").read_text()
    block = re.search(r"```yaml\n# gani-night-failed.yaml\n(.*?)```", text, re.S).group(1)
    spec = yaml.safe_load(block.replace("<your notification block's id>",
                                        "00000000-0000-0000-0000-000000000000"))
    automation = AutomationCore.model_validate(spec)
    assert automation.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}

    async def roundtrip():
        async with get_client() as client:
            made = await client.create_automation(automation)
            try:
                return await client.read_automation(made)
            finally:
                await client.delete_automation(made)

    stored = asyncio.run(roundtrip())
    assert stored.name == "gani: a night failed"
    assert stored.trigger.match_related == automation.trigger.match_related


def test_a_night_without_a_profile_is_refused_before_any_work():
    """A deployment run with neither `profile` nor `settings` would fall back to the
    parameters file's default (the demo's trial network): refused, as `gani invert`
    without --profile is."""
    from flows.invert import settings_for
    from gani.config import ConfigError

    with pytest.raises(ConfigError, match="needs a `profile` parameter"):
        settings_for(None, None, [], None)
    assert settings_for(None, "demo_random", ["tune.steps=3"], None).tune.steps == 3
