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
