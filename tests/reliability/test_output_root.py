"""The output root is validated before any work: never empty (`--out ""` was the filesystem
root), never the input, inside it or holding it (outputs would be read as photos by the next
run), never a file, always writable; locally and for s3:// prefixes. Every entry point
refuses it the same way: the CLI (exit 2, one line), `run_invert`, the flow itself, the
sequential driver and the DVC stage driver.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gani.config import ConfigError
from gani.stages.demo_data import demo_images
from gani.stages.plan import check_output_root

ROOT = Path(__file__).resolve().parents[2]


def tree(top: Path) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs} | {
        os.path.join(d, x) for d, xs, _ in os.walk(top) for x in xs}


@pytest.fixture
def photos(tmp_path):
    data = tmp_path / "D"
    data.mkdir()
    (data / "astronaut.png").write_bytes(demo_images()["astronaut.png"])
    (tmp_path / "afile").write_text("not a folder\n")
    return data


def bad_outputs(tmp_path: Path, data: Path) -> dict[str, tuple[str, str, str]]:
    """{case: (input, output, words the error must say)}"""
    return {
        "--out ''": (str(data), "", "empty"),
        "--out '   '": (str(data), "   ", "empty"),
        "--out /": (str(data), "/", "empty"),
        "output = input": (str(data), str(data), "is the input"),
        "output = input (trailing slash, file://)": (str(data), f"file://{data}/",
                                                      "is the input"),
        "output inside the input": (str(data), str(data / "results"), "inside the input"),
        "output inside the input via ..": (str(data), str(data / "x" / ".." / "results"),
                                           "inside the input"),
        "input inside the output": (str(data), str(tmp_path), "contains the input"),
        "output is a file": (str(data), str(tmp_path / "afile"), "a file"),
        "output under a file": (str(data), str(tmp_path / "afile" / "out"), "a file"),
        "s3 output = input": ("s3://b/in", "s3://b/in/", "is the input"),
        "s3 output inside the input": ("s3://b/in", "s3://b/in/out", "inside the input"),
        "s3 input inside the output": ("s3://b/in/photos", "s3://b//in", "contains the input"),
        "s3 bucket holding the input": ("s3://b/in", "s3://b/", "contains the input"),
        "s3:// without a bucket": ("s3://b/in", "s3://", "empty"),
    }


def test_check_output_root_refuses_each_bad_root(tmp_path, photos, reliability):
    cases = bad_outputs(tmp_path, photos)
    before = tree(tmp_path)
    for case, (inp, out, words) in cases.items():
        with pytest.raises(ConfigError, match=words) as err:
            check_output_root(inp, out)
        assert "\n" not in str(err.value), case
    assert tree(tmp_path) == before
    # what is fine: a sibling folder, a new nested folder, a prefix that only shares a start
    for inp, out in ((str(photos), str(tmp_path / "out")), (str(photos), str(tmp_path / "D2")),
                     (str(photos), str(tmp_path / "new" / "deep" / "out")),
                     ("s3://b/in", "s3://b/input"), ("s3://b/in", "s3://b/out"),
                     ("s3://b/in", str(tmp_path / "out")), (str(photos), "s3://b/in")):
        check_output_root(inp, out, {"anon": True, "endpoint_url": "http://127.0.0.1:9"})
    reliability.add("bad output root", f"{len(cases)} bad roots (local + s3 prefixes)",
                    faults_injected=len(cases), faults_survived=len(cases),
                    note="ConfigError in one line before any work; nothing written")


def test_read_only_output_root_is_refused(tmp_path, photos, monkeypatch, reliability):
    """Root ignores file modes, so the refusal of the filesystem is injected at os.access."""
    target = tmp_path / "ro"
    target.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if str(p).startswith(
        str(target)) else real(p, m, *a, **k))
    for out in (target, target / "new" / "deeper"):
        with pytest.raises(ConfigError, match="not writable"):
            check_output_root(str(photos), str(out))
    reliability.add("bad output root", "read-only output root", faults_injected=1,
                    faults_survived=1, note="ConfigError: not writable")


def _cli(argv: list[str]) -> tuple[int, str]:
    from cli.main import main

    from .gani_runs import run_captured

    return run_captured(main, argv)


@pytest.mark.parametrize("case", ["--out ''", "output = input", "output inside the input",
                                  "input inside the output", "output is a file"])
def test_cli_refuses_a_bad_output_root_with_exit_2(tmp_path, photos, monkeypatch, case,
                                                   reliability):
    from cli.main import EXIT_CONFIG

    monkeypatch.chdir(tmp_path)
    inp, out, words = bad_outputs(tmp_path, photos)[case]
    before = tree(tmp_path)
    root_before = set(os.listdir("/"))
    rc, printed = _cli(["invert", inp, "--out", out, "--profile", "demo_random", "--params",
                        str(ROOT / "params.yaml"), "--set", "tracking.enabled=false"])
    assert rc == EXIT_CONFIG, printed
    errors = [ln for ln in printed.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and words in errors[0], printed
    assert "Traceback" not in printed
    assert tree(tmp_path) == before                 # no summary.json, no <id>/ anywhere
    assert set(os.listdir("/")) == root_before
    reliability.add("bad output root", f"gani invert: {case}", images=1,
                    data_lost=len(tree(tmp_path) - before), note=f"exit {rc}, one line")


def test_every_entry_point_checks_the_root(tmp_path, photos, tiny_settings):
    """Python (`run_invert`), the sequential driver (`run_pipeline`) and the DVC stage
    driver (`python -m gani.stages align`) refuse an output inside the input before any
    work; the DVC layout's own shape (input under the root, beside the stage folders) is
    fine."""
    from flows.invert import run_invert
    from gani.stages import Layout, run_pipeline
    from gani.stages.__main__ import main as stages_main

    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="inside the input"):
        run_invert(str(photos), str(photos / "out"), tiny_settings)
    with pytest.raises(ConfigError, match="inside the input"):
        run_pipeline(str(photos), Layout(str(photos / "out")), tiny_settings)
    with pytest.raises(ConfigError, match="is the input"):
        run_pipeline(str(photos), Layout(str(photos)), tiny_settings)
    with pytest.raises(ConfigError, match="empty"):
        run_pipeline(str(photos), Layout(""), tiny_settings)
    with pytest.raises(ConfigError, match="inside the input"):
        stages_main(["align", "--input", str(photos), "--root", str(photos / "dvc"),
                     "--profile", "demo_random", "--params", str(ROOT / "params.yaml")])
    assert tree(tmp_path) == before
    from gani.stages.__main__ import _stage_layout
    from gani.stages.plan import check_layout_roots

    check_layout_roots(str(tmp_path / "dvc" / "input"), _stage_layout(str(tmp_path / "dvc")))
