"""Crashes: `gani invert` SIGKILLed at seeded random moments, during tuning, between a
temporary file and its rename, and in the middle of an MLflow child run; then run again
without faults until it finishes. Afterwards every good image is done exactly once, every
file under the output root parses, no temporary file is left, summary.json agrees with
the status files, and MLflow holds one FINISHED parent for the logical run with exactly
one complete child per image and no RUNNING run (tracking/logical_run.py: logical runs)."""
from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from tests.reliability.gani_runs import (BAD, GOOD, TINY, GaniProcess, audit_files,
                                         audit_mlflow, audit_outputs, lost_in_mlflow,
                                         lost_on_disk, mlflow_runs, run_to_end, temp_files,
                                         write_photos)


EXPERIMENT = "gani-photos-demo_random"   # tracking.experiment of the demo profile for input photos/


@pytest.fixture
def workdir(tmp_path, prefect_api):
    data = tmp_path / "photos"
    ids = write_photos(data, GOOD + BAD)
    good = [i for i, name in ids.items() if name in GOOD]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return {"tmp": tmp_path, "data": data, "out": tmp_path / "out", "ids": sorted(ids),
            "good": sorted(good), "uri": uri, "sets": TINY + [f"tracking.uri={uri}"]}


def finish_and_audit(w: dict, note: str = "") -> tuple[dict, dict, str]:
    """Run without faults until it finishes; audit disk and MLflow."""
    rc, output = run_to_end(w["data"], w["out"], w["sets"], w["tmp"])
    assert rc == 0, output[-4000:]
    disk = audit_outputs(w["out"], w["ids"], w["good"])
    ml = audit_mlflow(w["uri"], EXPERIMENT, w["out"], w["ids"])
    return disk, ml, output


def assert_clean(disk: dict, ml: dict) -> None:
    assert disk["not_done"] == [] and disk["unfinished"] == []
    assert disk["missing"] == [] and disk["corrupt"] == {}
    assert disk["temp_files"] == []
    assert disk["summary_ok"], disk["summary"]
    assert disk["summary"]["tracking"] == "ok" and disk["summary"]["tracking_failed"] == []
    assert disk["extra_folders"] == []
    assert ml["problems"] == [] and ml["parent"].info.status == "FINISHED"
    assert ml["missing"] == [] and ml["duplicated"] == [] and ml["stray"] == []
    assert ml["wrong"] == [] and ml["running"] == [] and ml["bad_artifacts"] == []
    assert ml["state"]["finished"] is True
    assert disk["summary"]["mlflow_run_id"] == ml["parent"].info.run_id


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_random_times(workdir, reliability):
    """Seed 7: each run is killed after a random number (1-20) of its task-run log lines
    plus a random 0-0.4 s, until 4 kills landed while the run was still going."""
    w, seed, wanted = workdir, 7, 4
    rng = random.Random(seed)
    landed, where = 0, []
    for _attempt in range(10):
        if landed == wanted:
            break
        k, extra = rng.randint(1, 20), rng.uniform(0.0, 0.4)
        p = GaniProcess(w["data"], w["out"], w["sets"], w["tmp"])
        line = p.wait_for(r"Task run '", count=k, timeout=300)
        if line is None:           # the run ended before its k-th task line: nothing to kill
            assert p.wait() == 0, p.output[-3000:]
            continue
        time.sleep(extra)
        if p.kill():
            landed += 1
            last = p.lines[-1].split("|")[-1].strip() if p.lines else "start"
            where.append(last.replace(" - Finished in state Completed()", " done")[:50])
            # before any re-run: whatever the kill left visible parses (atomic writes)
            if w["out"].exists():
                assert audit_files(w["out"]) == {}
    assert landed >= 1, "no kill landed while a run was going"
    disk, ml, _ = finish_and_audit(w)
    reliability.add("crash", f"SIGKILL at random times (seed {seed}, {landed} kills)",
                    images=len(w["ids"]), done=disk["tally"]["done"],
                    quarantined=disk["tally"]["quarantined"], failed=disk["tally"]["failed"],
                    faults_injected=landed, faults_survived=landed,
                    data_lost=lost_on_disk(disk) + lost_in_mlflow(ml),
                    note="last output before each kill: " + " / ".join(where))
    assert_clean(disk, ml)
    # one logical run: the parent names every flow run that opened it, the last one too
    flow_runs = ml["parent"].data.tags["prefect_flow_run_ids"].split(",")
    assert len(flow_runs) == len(set(flow_runs))
    assert set(flow_runs) <= set(ml["state"]["flow_runs"])
    assert flow_runs[-1] == disk["summary"]["prefect_flow_run_id"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_during_tuning(workdir, reliability):
    """Killed twice in the middle of tuning (30 steps; at step 1, then at step 10)."""
    w = workdir
    w["sets"] = w["sets"] + ["tune.steps=30"]
    kills = 0
    for step in (1, 10):
        p = GaniProcess(w["data"], w["out"], w["sets"], w["tmp"])
        line = p.wait_for(rf"gani step {step}/30:", timeout=300)
        assert line is not None, p.output[-3000:]
        assert p.kill(), "the run ended before the kill"
        kills += 1
        losses = re.search(rf"gani step {step}/30: (.*)$", line).group(1).split()
        tuning = [part.split("=")[0] for part in losses]
        assert tuning and set(tuning) <= set(w["good"])
        # the kill landed inside tuning: no image of that batch got past its tune stage
        for image_id in tuning:
            assert (w["out"] / image_id / ".stage-encode.json").exists(), image_id
            assert not (w["out"] / image_id / ".stage-tune.json").exists(), image_id
            assert not (w["out"] / image_id / "status.json").exists(), image_id
        assert audit_files(w["out"]) == {}
    disk, ml, _ = finish_and_audit(w)
    reliability.add("crash", "SIGKILL during tuning (step 1, then step 10 of 30)",
                    images=len(w["ids"]), done=disk["tally"]["done"],
                    quarantined=disk["tally"]["quarantined"], failed=disk["tally"]["failed"],
                    faults_injected=kills, faults_survived=kills,
                    data_lost=lost_on_disk(disk) + lost_in_mlflow(ml))
    assert_clean(disk, ml)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_between_temp_write_and_rename(workdir, reliability):
    """GANI_FAULT=kill_after_tmp_write:<n> (n drawn with seed 11): the process dies with a
    complete temporary file beside an absent or older target. Nothing partial is visible,
    and the next run removes the temporary file."""
    w, seed = workdir, 11
    rng = random.Random(seed)
    counts = rng.sample(range(2, 30), 3)
    kills, left_behind, landed_in = 0, 0, []
    for n in counts:
        p = GaniProcess(w["data"], w["out"], w["sets"], w["tmp"],
                        env={"GANI_FAULT": f"kill_after_tmp_write:{n}"})
        rc = p.wait()
        if rc == 0:            # fewer than n writes were left to do
            continue
        assert rc == -9, p.output[-3000:]
        kills += 1
        tmp = temp_files(w["out"])
        assert tmp, "no temporary file: the kill was not between a write and its rename"
        left_behind += len(tmp)
        landed_in += [t.rsplit("/", 1)[-1].split(".")[1] for t in tmp]
        assert audit_files(w["out"]) == {}
    assert kills >= 1
    before = temp_files(w["out"])
    disk, ml, output = finish_and_audit(w)
    if before:
        assert f"removed {len(before)} temporary file(s) left by a killed run" in output
    reliability.add("crash", f"SIGKILL between temp write and rename (seed {seed}, "
                    f"writes {counts})", images=len(w["ids"]), done=disk["tally"]["done"],
                    quarantined=disk["tally"]["quarantined"], failed=disk["tally"]["failed"],
                    faults_injected=kills, faults_survived=kills,
                    data_lost=lost_on_disk(disk) + lost_in_mlflow(ml),
                    note=f"{left_behind} temporary files left ({', '.join(landed_in)}), "
                         f"removed by the next run")
    assert_clean(disk, ml)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_inside_mlflow_child_run_then_nightly_rerun(workdir, reliability):
    """GANI_FAULT=kill_after_child_run:2: the second child run is created and the process
    dies before anything is logged into it. The re-run resumes the same parent, replaces
    the RUNNING child, logs the images the killed run had finished, and finishes the
    parent. A further run (everything skipped) is a new night: a new parent, no children."""
    w = workdir
    p = GaniProcess(w["data"], w["out"], w["sets"], w["tmp"],
                    env={"GANI_FAULT": "kill_after_child_run:2"})
    assert p.wait() == -9, p.output[-3000:]
    _, runs = mlflow_runs(w["uri"], EXPERIMENT)
    running = [r for r in runs if r.info.status == "RUNNING"]
    assert {r.data.tags.get("gani.kind") for r in running} == {"dataset-run", "image"}
    killed_child = [r.info.run_id for r in running if r.data.tags.get("gani.kind") == "image"]
    first_parent = [r.info.run_id for r in running
                    if r.data.tags.get("gani.kind") == "dataset-run"]

    disk, ml, _ = finish_and_audit(w)
    lost = lost_on_disk(disk) + lost_in_mlflow(ml)
    reliability.add("crash", "SIGKILL inside an MLflow child run (kill_after_child_run:2)",
                    images=len(w["ids"]), done=disk["tally"]["done"],
                    quarantined=disk["tally"]["quarantined"], failed=disk["tally"]["failed"],
                    faults_injected=1, faults_survived=1, data_lost=lost,
                    note="re-run resumed the parent and replaced the RUNNING child")
    assert_clean(disk, ml)
    assert [ml["parent"].info.run_id] == first_parent          # resumed, not a new parent
    assert len(ml["parent"].data.tags["prefect_flow_run_ids"].split(",")) == 2
    _, runs = mlflow_runs(w["uri"], EXPERIMENT)
    gone = {r.info.run_id: r for r in runs if r.info.run_id in killed_child}
    assert all(r.info.lifecycle_stage == "deleted" and r.info.status == "KILLED"
               for r in gone.values()) and len(gone) == 1

    # the next night: same inputs and parameters, nothing to do -> no new (empty) parent
    rc, output = run_to_end(w["data"], w["out"], w["sets"], w["tmp"])
    assert rc == 0, output[-3000:]
    summary = json.loads((w["out"] / "summary.json").read_text())
    assert summary["processed"] == 0 and summary["tracking"] == "ok"
    assert summary["mlflow_run_id"] is None
    _, runs = mlflow_runs(w["uri"], EXPERIMENT)
    parents = [r for r in runs if r.data.tags.get("gani.kind") == "dataset-run"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_stale_temp_files_rule(tmp_path, reliability):
    """What `io.remove_stale_temp` removes: only files named by `io.write_bytes` (gani's tag,
    host hash, pid): those of dead writers of this host at once, other hosts' only when
    older than max_age; a live writer's file never; a user's hidden `*.tmp` file (however
    old, however much it looks like ours) never."""
    import os
    import subprocess

    from gani import io

    proc = subprocess.Popen(["true"])
    proc.wait()
    host = io._HOST
    folder = tmp_path / "out" / "img"
    (tmp_path / "out" / "notes").mkdir(parents=True)
    folder.mkdir(parents=True)
    ours = {"dead": f".recon.png.gani-tmp-{host}-{proc.pid}-abc123de.tmp",
            "live": f".recon.png.gani-tmp-{host}-{os.getpid()}-def456gh.tmp",
            "foreign_new": ".status.json.gani-tmp-000000-1-ghi789jk.tmp",
            "foreign_old": ".status.json.gani-tmp-000000-2-jkl012mn.tmp"}
    # a user's files, all older than max_age: never gani's, never removed
    lookalikes = [".draft.tmp", "notes/.report.docx.tmp", ".metrics.json.mno345.tmp",
                  f".recon.png.{host}.{proc.pid}.abc123.tmp",          # the old naming
                  f".x.gani-tmp-{host}-{proc.pid}-abc123de.tmp.bak",
                  f"x.gani-tmp-{host}-{proc.pid}-abc123de.tmp",         # not hidden
                  f".x.gani-tmp-{host}-0-abc123de.tmp",                 # pid 0
                  f".x.gani-tmp-{host}x-{proc.pid}-abc123de.tmp",       # bad host field
                  f".x.gani-tmp-{host}-{proc.pid}-abc.tmp",             # bad random field
                  f".x.gani-temp-{host}-{proc.pid}-abc123de.tmp", "recon.png"]
    old = time.time() - 7200
    for rel in [f"img/{n}" for n in ours.values()] + [
            r if "/" in r else f"img/{r}" for r in lookalikes]:
        (tmp_path / "out" / rel).write_bytes(b"x")
        if "foreign_new" not in rel and ours["foreign_new"] not in rel:
            os.utime(tmp_path / "out" / rel, (old, old))
    removed = {Path(p).name for p in io.remove_stale_temp(str(tmp_path / "out"))}
    assert removed == {ours["dead"], ours["foreign_old"]}
    survivors = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")
                 if p.is_file()}
    want = {f"img/{ours['live']}", f"img/{ours['foreign_new']}"} | {
        r if "/" in r else f"img/{r}" for r in lookalikes}
    assert survivors == want
    # what write_bytes really names is what the sweep recognises
    assert io.parse_temp_name(io.temp_prefix("aligned.png") + "a1b2c3d4" + io.TEMP_SUFFIX) \
        == (host, os.getpid())
    assert io.remove_stale_temp(str(tmp_path / "missing")) == []
    assert io.remove_stale_temp("s3://bucket/prefix") == []
    reliability.add("crash", "stale-temp sweep beside a user's hidden *.tmp files",
                    faults_injected=2, faults_survived=2,
                    data_lost=len(set(lookalikes) - {s.split("/", 1)[1] if s.startswith("img/")
                                                    else s for s in survivors}),
                    note=f"{len(lookalikes)} lookalikes older than max_age kept; "
                         f"2 stale temps of gani removed")


def test_fault_spec_is_checked():
    from gani import faults

    assert faults._parse("") == {}
    assert faults._parse("kill_after_tmp_write:3,kill_after_child_run:1") == {
        "tmp_write": 3, "child_run": 1}
    for bad in ("kill_after_nothing:1", "kill_after_tmp_write", "kill_after_tmp_write:0",
                "explode_after_tmp_write:1"):
        with pytest.raises(ValueError):
            faults._parse(bad)
    assert faults.ACTIVE is False      # the test process itself runs without faults
    faults.hit("tmp_write")            # not armed: nothing happens
