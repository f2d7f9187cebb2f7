"""flows/shards.py without a server: a fake Prefect client whose shard runs end as scripted.
A lost run (Crashed, Failed) is relaunched with the same parameters, at most
orchestration.shard_relaunches times; Cancelled is never relaunched; the lost-run automation
is created once and matches only the shard deployment's runs. (End to end, with a worker
really killed: tests/reliability/test_multi_worker.py.)"""
from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

import flows.shards as shards
from prefect.client.schemas.objects import StateType


class FakeClient:
    def __init__(self, outcomes: dict[str, list[str]]):
        self.outcomes = outcomes          # flow run name -> final state types, one per run
        self.runs: dict[str, SimpleNamespace] = {}
        self.automations: list = []
        self.dep_id = uuid.uuid4()

    # the parts of SyncPrefectClient that flows/shards.py uses
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def read_deployment_by_name(self, name):
        return SimpleNamespace(id=self.dep_id)

    def read_automations_by_name(self, name):
        return [a for a in self.automations if a.name == name]

    def create_automation(self, automation):
        automation = SimpleNamespace(id=uuid.uuid4(), enabled=True,
                                     **{k: getattr(automation, k)
                                        for k in ("name", "trigger", "actions")})
        self.automations.append(automation)

    def update_automation(self, id, automation):
        raise AssertionError("unchanged automation updated")

    def delete_automation(self, id):
        raise AssertionError("deleted")

    def run_deployment(self, name, timeout, flow_run_name, parameters):
        base = flow_run_name.split("-relaunch-")[0]
        kind = self.outcomes[base].pop(0)
        run = SimpleNamespace(id=uuid.uuid4(), name=flow_run_name, parameters=parameters,
                              state=SimpleNamespace(
                                  type=StateType(kind), name=kind.title(), message="lost",
                                  is_final=lambda: True))
        self.runs[str(run.id)] = run
        return run

    def read_flow_run(self, rid):
        return self.runs[str(rid)]


@pytest.fixture
def fake(monkeypatch):
    def make(outcomes):
        client = FakeClient(outcomes)
        monkeypatch.setattr("prefect.client.orchestration.get_client",
                            lambda sync_client=True: client)
        monkeypatch.setattr("prefect.deployments.run_deployment", client.run_deployment)
        return client
    return make


def settings(relaunches: int):
    from gani.config import Settings

    return Settings().model_copy(update={"orchestration": Settings().orchestration.model_copy(
        update={"shard_relaunches": relaunches, "shard_lost_after": 60})})


def test_lost_shard_runs_are_relaunched_within_the_bound(fake, capsys):
    client = fake({"shard-1-of-3": ["COMPLETED"],
                   "shard-2-of-3": ["CRASHED", "FAILED", "COMPLETED"],
                   "shard-3-of-3": ["CRASHED", "CRASHED", "CRASHED", "COMPLETED"]})
    params = [{"items": [f"img{k}"]} for k in range(3)]
    done = shards.run_shards_as_deployments(params, "gani-invert-shard/shard", settings(2),
                                            poll_seconds=0)
    assert [len(s.runs) for s in done] == [1, 3, 3]        # shard 3: 1 run + 2 relaunches
    assert [s.final for s in done] == ["COMPLETED", "COMPLETED", "CRASHED"]
    names = sorted(r.name for r in client.runs.values())
    assert names == ["shard-1-of-3", "shard-2-of-3", "shard-2-of-3-relaunch-1",
                     "shard-2-of-3-relaunch-2", "shard-3-of-3", "shard-3-of-3-relaunch-1",
                     "shard-3-of-3-relaunch-2"]
    for r in client.runs.values():                        # a relaunch: the same image list
        k = int(r.name.split("-")[1]) - 1
        assert r.parameters == params[k]
    out = capsys.readouterr().out
    assert "relaunched as shard-2-of-3-relaunch-1 (relaunch 1/2)" in out
    assert "warning: shard 3/3" in out and "after 2 relaunch(es)" in out
    # the automation: one, on the shard deployment's runs, proactive, marks Crashed
    (auto,) = client.automations
    trig = auto.trigger
    assert trig.match_related["prefect.resource.id"] == [f"prefect.deployment.{client.dep_id}"]
    assert trig.posture.value == "Proactive" and trig.within.total_seconds() == 60
    assert "prefect.flow-run.Completed" in trig.expect
    assert auto.actions[0].state == StateType.CRASHED


def test_cancelled_is_final_and_no_relaunch_when_bound_is_zero(fake):
    fake({"shard-1-of-2": ["CANCELLED"], "shard-2-of-2": ["CRASHED"]})
    done = shards.run_shards_as_deployments([{}, {}], "gani-invert-shard/shard", settings(0),
                                            poll_seconds=0)
    assert [(len(s.runs), s.final) for s in done] == [(1, "CANCELLED"), (1, "CRASHED")]


def test_existing_automation_is_kept(fake):
    client = fake({"shard-1-of-1": ["COMPLETED"]})
    shards.run_shards_as_deployments([{}], "gani-invert-shard/shard", settings(1),
                                     poll_seconds=0)
    client.outcomes["shard-1-of-1"] = ["COMPLETED"]
    shards.run_shards_as_deployments([{}], "gani-invert-shard/shard", settings(1),
                                     poll_seconds=0)     # same trigger: no update, no delete
    assert len(client.automations) == 1
