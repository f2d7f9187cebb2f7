"""benchmarks/speed/ab.py cannot rot: a tiny CPU run writes its files, with the arms' times
and the bit-identity check (no timing is asserted: speed figures live in the result files)."""
import json

from benchmarks.speed import ab


def test_ab_gmm_affine_tiny_cpu(tmp_path, capsys):
    ab.main(["--size", "32", "--channel-max", "32", "--batch", "2", "--reps", "2",
             "--out", str(tmp_path)])
    r = json.loads((tmp_path / "ab_gmm_affine_cpu_32_b2.json").read_text())
    assert set(r["median_s"]) == {"channels", "before", "after"}
    assert all(len(v) == 2 and min(v) > 0 for v in r["times_s"].values())
    assert r["deltas_bit_identical"] is True
    md = (tmp_path / "ab_gmm_affine_cpu_32_b2.md").read_text()
    assert "per-row gather" in md and "after / before" in md
    assert "after / before" in capsys.readouterr().out


def test_ab_compile_dynamic_parent_reads_each_arms_child(tmp_path, monkeypatch, capsys):
    """The parent side of `--arm compile_dynamic` (each child compiles for minutes, so the
    children's output is given here): one child per arm, each with its own empty inductor
    cache, and the ratios of the second batch size's calls."""
    import subprocess

    seen = []

    def run(cmd, **kw):
        arm = cmd[cmd.index("--child") + 1]
        seen.append((arm, kw["env"]["TORCHINDUCTOR_CACHE_DIR"]))
        secs = {"none": [30.0, 1.0, 40.0, 2.0], "false": [30.0, 1.0, 20.0, 1.5]}[arm]
        calls = [{"batch": b, "s": s} for b, s in zip((1, 1, 2, 2), secs)]
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(calls) + "\n", stderr="")

    monkeypatch.setattr(ab.subprocess, "run", run)
    ab.main(["--arm", "compile_dynamic", "--size", "32", "--batch", "2", "--out",
             str(tmp_path)])
    assert [a for a, _ in seen] == ["none", "false"] and seen[0][1] != seen[1][1]
    r = json.loads((tmp_path / "ab_compile_dynamic_cpu_32_b2.json").read_text())
    assert r["after_over_before_compile"] == 0.5 and r["after_over_before_speed"] == 0.75
    md = (tmp_path / "ab_compile_dynamic_cpu_32_b2.md").read_text()
    assert "| before | 30.00 | 1.00 | 40.00 | 2.00 |" in md and "compile **0.50×**" in md


def test_ab_tracker_record_tiny_cpu(tmp_path):
    ab.main(["--arm", "tracker_record", "--size", "32", "--channel-max", "16", "--batch", "3",
             "--reps", "2", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "ab_tracker_record_cpu_32_b3.json").read_text())
    assert r["results_equal"] is True and r["state_mib"] > 0
    assert all(len(v) == 2 and min(v) > 0 for v in r["times_s"].values())
    assert "one host copy" in (tmp_path / "ab_tracker_record_cpu_32_b3.md").read_text()


def test_ab_blur_pad_tiny_cpu(tmp_path):
    ab.main(["--arm", "blur_pad", "--size", "32", "--channel-max", "16", "--batch", "2",
             "--reps", "2", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "ab_blur_pad_cpu_32_b2.json").read_text())
    assert r["results_equal"] is True
    assert all(len(v) == 2 and min(v) > 0 for v in r["times_s"].values())
    assert "conv's own zero padding" in (tmp_path / "ab_blur_pad_cpu_32_b2.md").read_text()
    # the arm put the code's upfirdn2d back
    from gani.models.upfirdn2d import Blur, upfirdn2d
    assert ab.fir.upfirdn2d is upfirdn2d and Blur.forward.__module__ == ab.fir.__name__
