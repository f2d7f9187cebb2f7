"""Every usage and storage error ends `gani invert` with its documented exit status
(docs/output-contract.md#exit-status) and one short message on stderr, never a traceback:
run as a real subprocess, as a nightly job sees it.

- `--out` a regular file, INPUT a file (refused: give the folder), a bad value: 2
- disk full / quota / read-only store while images are written: the images fail
  `storage_error` at once (not retried as weather), summary.json is written, exit 4
- the store refusing every write, summary.json included: the run stops, exit 1 with one
  `storage error:` line
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .gani_runs import BIN, ROOT, TINY, prefect_env, write_photos

pytestmark = pytest.mark.slow

SETS = [*TINY, "tracking.enabled=false"]


def gani(tmp: Path, args: list[str], fault: str | None = None, timeout: float = 600,
         sets: tuple[str, ...] = ()) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, seconds) of `gani invert ARGS --profile demo --set ...`
    (the tiny settings, then `sets`; under storage_faults.py when `fault` is given)."""
    cmd = [str(BIN / "gani")] if fault is None else [
        sys.executable, str(Path(__file__).with_name("storage_faults.py")), fault]
    cmd += ["invert", *args, "--profile", "demo_random", "--params", str(ROOT / "params.yaml")]
    for s in (*SETS, *sets):
        cmd += ["--set", s]
    env = {**os.environ, **prefect_env(), "PYTHONPATH": str(ROOT),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("GANI_TRACEBACK", None)
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr, time.monotonic() - t0


def short(err: str, most: int = 3) -> bool:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return 0 < len(lines) <= most and "Traceback" not in err


@pytest.fixture
def photos(tmp_path):
    ids = write_photos(tmp_path / "photos", ["astronaut.png", "astronaut_mirrored.jpg"])
    return tmp_path / "photos", sorted(ids)


def test_out_is_a_regular_file(prefect_api, tmp_path, photos, reliability):
    (tmp_path / "out").write_text("not a folder")
    rc, _, err, _ = gani(tmp_path, [str(photos[0]), "--out", str(tmp_path / "out")])
    assert rc == 2 and short(err) and "is a file" in err, (rc, err)
    assert (tmp_path / "out").read_text() == "not a folder"
    reliability.add("usage", "gani invert: --out is a regular file", images=2,
                    note=f"exit {rc}: {err.strip()[:90]}")


def test_input_is_a_file(prefect_api, tmp_path, photos, reliability):
    rc, _, err, _ = gani(tmp_path, [str(photos[0] / "astronaut.png"), "--out",
                                    str(tmp_path / "out")])
    assert rc == 2 and short(err) and "is a file" in err and "folder" in err, (rc, err)
    assert not (tmp_path / "out").exists()
    reliability.add("usage", "gani invert: INPUT is a file", images=1,
                    note=f"exit {rc}: {err.strip()[:90]}")


def test_bad_generator_size(prefect_api, tmp_path, photos, reliability):
    rc, _, err, _ = gani(tmp_path, [str(photos[0]), "--out", str(tmp_path / "out")],
                         sets=("models.generator.size=33",))
    assert rc == 2 and short(err) and "models.generator.size" in err, (rc, err)
    assert not (tmp_path / "out").exists()
    reliability.add("usage", "gani invert: models.generator.size=33", images=2,
                    note=f"exit {rc}: {err.strip()[:90]}")


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EROFS"])
def test_store_full_while_writing_images(prefect_api, tmp_path, photos, reliability, code):
    """Big writes fail (a disk with a few KiB left): every image fails storage_error without
    waiting out retries, status.json and summary.json are written, exit 4, one line."""
    data, ids = photos
    out = tmp_path / "out"
    rc, stdout, err, took = gani(tmp_path, [str(data), "--out", str(out)],
                                 fault=f"big:{code}",
                                 sets=("orchestration.retries=3",
                                       "orchestration.retry_delay_seconds=20"))
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 4, (rc, err, stdout[-3000:])
    assert short(err, 2) and "failed" in err, err
    assert summary["counts"]["failed"] == len(ids), summary
    assert set(summary["failed"].values()) == {"storage_error"}, summary
    assert "Retrying" not in stdout, stdout[-3000:]
    assert took < 300, took                      # 3 retries x 20 s+ would show
    reliability.from_summary("storage", f"{code} on every image write: failed storage_error, "
                             f"summary written", summary, faults_injected=1,
                             faults_survived=1, note=f"exit {rc}, {took:.0f}s, "
                             f"stderr {len(err.splitlines())} line(s)")


def test_store_refuses_every_write_run_stops(prefect_api, tmp_path, photos, reliability):
    data, ids = photos
    out = tmp_path / "out"
    rc, stdout, err, _ = gani(tmp_path, [str(data), "--out", str(out)], fault="after:2:ENOSPC")
    assert rc == 1, (rc, err, stdout[-3000:])
    assert short(err, 1) and err.startswith("storage error:") and "No space left" in err, err
    assert not (out / "summary.json").exists()
    reliability.add("storage", "ENOSPC on every write after 2: the run stops, one line",
                    images=len(ids), failed=len(ids), faults_injected=1, faults_survived=1,
                    note=f"exit {rc}: {err.strip()[:90]}")
