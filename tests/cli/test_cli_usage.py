"""`gani` as a new user meets it (issue 16, CLI): an explicit profile for real photos, every
missing checkpoint named with its source, the checkpoint list whole, help with examples and
exit codes, and "did you mean" for a mistyped flag. All before any Prefect or image work,
so these run in a second or two each."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from cli.main import EXIT_CHECKPOINT, EXIT_CONFIG, EXIT_OK, chosen_profile, main
from gani.checkpoints import REGISTRY
from gani.checkpoints.needs import needed, source_text
from gani.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory outside the repository, with one photo folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    return tmp_path


def test_invert_without_profile_is_refused_before_any_work(elsewhere, capsys):
    rc = main(["invert", "photos", "--out", "results"])
    err = capsys.readouterr().err
    assert rc == EXIT_CONFIG
    assert "needs --profile" in err
    for name in ("ffhq", "cars", "church", "horse", "afhq_wild", "demo_random"):
        assert name in err
    assert not (elsewhere / "results").exists()


def test_profile_from_the_users_own_params_file_counts_as_chosen(elsewhere):
    """A `profile:` the user wrote in ./params.yaml is a choice; the packaged default
    (the repository's `profile: demo`) is not."""
    args = argparse.Namespace(command="invert", profile=None, params=None, input="photos",
                              out="results")
    (elsewhere / "params.yaml").write_text("profile: cars\n")
    assert chosen_profile(args) == ("cars", "params.yaml")
    args.params = str(ROOT / "params.yaml")
    with pytest.raises(Exception, match="needs --profile"):
        chosen_profile(args)


def test_missing_checkpoints_are_all_listed_with_their_source(elsewhere, capsys):
    rc = main(["invert", "photos", "--out", "results", "--profile", "ffhq"])
    err = capsys.readouterr().err
    assert rc == EXIT_CHECKPOINT
    wanted = needed(load_settings(None, "ffhq"))
    assert len(wanted) >= 5
    for need in wanted:
        if need.name:
            spec = REGISTRY[need.name]
            assert spec.file in err and source_text(spec.source) in err, need
            assert spec.licence in err
        else:
            assert need.path in err and "encoder4editing" in err, need
    assert f"needs {len(wanted)} file(s)" in err
    assert not (elsewhere / "results").exists()


def test_checkpoints_list_shows_whole_sources_and_licences(elsewhere, capsys):
    assert main(["checkpoints", "list"]) == EXIT_OK
    out = capsys.readouterr().out
    for spec in REGISTRY.values():
        assert source_text(spec.source) in out, spec.name     # never cut
        assert spec.licence in out, spec.name
    assert "…" not in out
    assert main(["checkpoints", "list", "--json"]) == EXIT_OK
    records = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in records} == set(REGISTRY)
    assert all(r["source"] and r["licence"] and r["state"] for r in records)
    assert "drive.google.com/file/d/" in records[0]["source"]


def test_help_has_examples_and_every_exit_code(capsys):
    for argv in (["--help"], ["invert", "--help"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and "gani invert photos/ --out results/ --profile" in text
        assert "exit status:" in text
        for code in range(5):
            assert f"\n  {code}  " in text, (argv, code)


@pytest.mark.parametrize("argv, hint", [
    (["invert", "photos", "--ouput", "r", "--profile", "ffhq"], "did you mean --out?"),
    (["invert", "photos", "--out", "r", "--profle=ffhq"], "did you mean --profile?"),
    (["invert", "photos", "--out", "r", "--prof", "ffhq"], "did you mean --profile?"),
    (["invrt", "photos"], "did you mean 'invert'?"),
    (["checkpoints", "lst"], "did you mean 'list'?"),
])
def test_a_typo_gets_the_right_flag_suggested(argv, hint, capsys):
    """Abbreviations are refused too (`--prof` is a typo, not `--profile`)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == EXIT_CONFIG
    assert hint in capsys.readouterr().err


def test_the_demo_runs_its_own_profile_unless_told(elsewhere):
    from cli.parser import build_parser

    args = build_parser().parse_args(["demo"])
    assert chosen_profile(args) == ("demo", "gani demo's default")
    args = build_parser().parse_args(["demo", "--profile", "demo_random"])
    assert chosen_profile(args) == ("demo_random", "--profile")
