"""A night's shards as deployment runs: launch one `gani-invert-shard` run per shard, wait
for them, and launch again a shard whose run was lost.

A worker that dies (machine lost, OOM-killed, SIGKILL) cannot report anything: its flow
run stays Running for ever, a zombie. Prefect's own mechanism finds it: every flow run
emits a `prefect.flow-run.heartbeat` event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds
(default 180, at least 30), and an automation (`lost_run_automation`, created by the night
when it is missing) marks Crashed a shard run that has sent no heartbeat and no final
state for `orchestration.shard_lost_after` seconds. The night, waiting for its shards,
sees the Crashed (or Failed) run and launches a new run of the shard deployment with the
same image list, at most `orchestration.shard_relaunches` times per shard. The stages are
idempotent: the new run skips the images the lost one finished (status.json, same content
key) and redoes only the rest on whichever worker takes it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from gani.config import Settings

POLL_SECONDS = 5.0
LOST = ("CRASHED", "FAILED")          # relaunched; CANCELLED is a person's decision: not


def automation_name(shard_deployment: str) -> str:
    return f"gani: crash lost runs of {shard_deployment}"


def lost_run_automation(shard_deployment: str, deployment_id: Any, within: int):
    """The automation that marks Crashed a run of the shard deployment whose heartbeats
    stopped: after a heartbeat, no heartbeat and no final state for `within` seconds."""
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType

    return AutomationCore(
        name=automation_name(shard_deployment),
        description="A gani shard run whose worker died stops heartbeating; mark it Crashed "
                    "so the night that launched it relaunches the shard (flows/shards.py).",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "deployment",
                           "prefect.resource.id": f"prefect.deployment.{deployment_id}"},
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive, threshold=1, within=int(within)),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat for {int(within)} s: its worker is gone")])


def ensure_lost_run_automation(client, shard_deployment: str, within: int) -> None:
    """Create (or bring up to date) the lost-run automation of `shard_deployment`."""
    dep = client.read_deployment_by_name(shard_deployment)
    want = lost_run_automation(shard_deployment, dep.id, within)
    found = client.read_automations_by_name(want.name)
    for auto in found[1:]:
        client.delete_automation(auto.id)
    if not found:
        client.create_automation(want)
        print(f"created the Prefect automation {want.name!r} (no heartbeat for {within} s "
              f"-> Crashed)")
        return
    have = found[0]
    if (have.trigger.model_dump(mode="json") != want.trigger.model_dump(mode="json")
            or not have.enabled
            or [a.model_dump(mode="json") for a in have.actions]
            != [a.model_dump(mode="json") for a in want.actions]):
        client.update_automation(have.id, want)


@dataclass
class Shard:
    """One shard of the night and the deployment runs launched for it, oldest first."""

    index: int
    total: int
    parameters: dict
    runs: list[str] = field(default_factory=list)
    final: Optional[str] = None          # the last run's final state type, once final

    @property
    def label(self) -> str:
        return f"shard {self.index + 1}/{self.total}"

    def run_name(self) -> str:
        name = f"shard-{self.index + 1}-of-{self.total}"
        return name if not self.runs else f"{name}-relaunch-{len(self.runs)}"


def _launch(shard: Shard, shard_deployment: str, run_deployment: Callable) -> str:
    run = run_deployment(shard_deployment, timeout=0, flow_run_name=shard.run_name(),
                         parameters=shard.parameters)
    shard.runs.append(str(run.id))
    return run.name


def run_shards_as_deployments(parameters: list[dict], shard_deployment: str, s: Settings,
                              poll_seconds: float = POLL_SECONDS) -> list[Shard]:
    """Launch one run of `shard_deployment` per entry of `parameters` and wait until every
    shard has a final run; a lost run (Crashed, Failed) is launched again, at most
    `s.orchestration.shard_relaunches` times per shard. Returns the shards (their runs)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    relaunches = s.orchestration.shard_relaunches
    shards = [Shard(k, len(parameters), p) for k, p in enumerate(parameters)]
    with get_client(sync_client=True) as client:
        try:
            ensure_lost_run_automation(client, shard_deployment,
                                       s.orchestration.shard_lost_after)
        except Exception as exc:  # noqa: BLE001 - the night goes on; lost runs then hang
            print(f"warning: could not set up the lost-run automation of "
                  f"{shard_deployment} ({type(exc).__name__}: {exc}); a shard whose worker "
                  f"dies will not be noticed")
        for shard in shards:
            _launch(shard, shard_deployment, run_deployment)
        print(f"launched {len(shards)} shard runs of {shard_deployment}; waiting for them")
        pending = list(shards)
        while pending:
            time.sleep(poll_seconds)
            for shard in list(pending):
                fr = client.read_flow_run(shard.runs[-1])
                state = fr.state
                if state is None or not state.is_final():
                    continue
                kind = state.type.value
                if kind in LOST and len(shard.runs) <= relaunches:
                    name = _launch(shard, shard_deployment, run_deployment)
                    print(f"{shard.label}: run {fr.name} {state.name} "
                          f"({(state.message or '').strip()[:160]}); relaunched as {name} "
                          f"(relaunch {len(shard.runs) - 1}/{relaunches})")
                    continue
                shard.final = kind
                pending.remove(shard)
                if kind in LOST:
                    print(f"warning: {shard.label}: run {fr.name} {state.name} after "
                          f"{relaunches} relaunch(es); its unfinished images stay pending "
                          f"(the next night redoes them)")
                else:
                    print(f"shard run {fr.name}: {state.name}")
    return shards
