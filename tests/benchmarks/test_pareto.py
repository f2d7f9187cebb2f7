"""The Pareto judgement's planning and reporting (benchmarks.testbed.pareto), on made-up
results: the tuning itself is the tuners' (tested in tests/tuning)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.quality.run import make_cfg
from benchmarks.testbed import pareto as P
from gani.config import read_params
from gani.config.schema import TuneSection

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base() -> TuneSection:
    return TuneSection(**read_params(ROOT / "params.yaml")["tune"])


def test_grid_covers_the_issue_and_every_configuration_validates(base):
    table = P.grid(base.optimizer.lr)
    fams = [P.family(n) for n in table]
    assert fams.count("pti") == 3 and fams.count("gani reparam") == 9
    assert fams.count("gani optimizer") == 9 and {"start", "projection"} <= set(fams)
    for name, (method, over) in table.items():
        cfg = make_cfg(base, over, 5, 2)
        TuneSection.model_validate(cfg.model_dump())      # the schema accepts it
        if method == "gani":
            reading, sharing = name.split(" ")[1].split("/")
            assert (cfg.gmm.reading, cfg.gmm.sharing) == (reading, sharing)
    lrs = sorted(table[f"gani reparam/layer lr{lab}"][1]["optimizer.lr"]
                 for _, lab in P.REPARAM_LR_FACTORS)
    assert lrs == pytest.approx([base.optimizer.lr / 3, base.optimizer.lr,
                                 3 * base.optimizer.lr])


def test_plan_jobs_runs_every_job_once_and_gives_every_worker_the_start(base):
    table = P.grid(base.optimizer.lr)
    lists = P.plan_jobs(list(table), [100, 300], table, 4)
    assert len(lists) == 4 and all(l[0] == ["start", 100] for l in lists)
    jobs = [tuple(j) for l in lists for j in l[1:]]
    assert len(jobs) == len(set(jobs)) == (len(table) - 1) * 2
    loads = [sum(P._job_cost(c, s, table[c][0]) for c, s in l[1:]) for l in lists]
    assert max(loads) < 1.5 * min(loads)                  # balanced, roughly


def _spread(v):
    return {"mean": v, "std": 0.0, "ci95": None, "n": 1}


def test_pareto_front_keeps_exactly_the_undominated_points():
    pts = {"a": (0.010, 0.000), "b": (0.002, 0.004), "c": (0.003, 0.005),   # c: b dominates
           "d": (0.001, 0.010), "e": (0.002, 0.004)}                      # e ties b
    cells = {n: {"procedural": {"l2": _spread(l2), "drift": _spread(dr)}}
             for n, (l2, dr) in pts.items()}
    assert P.pareto_front(cells) == {"a", "b", "d", "e"}


def test_the_tuning_front_leaves_out_what_does_not_tune_the_generator():
    pts = {"start": (0.030, 0.0), "projection": (0.004, 0.0),         # dominates every tuner
           "pti lr 0.001": (0.005, 0.002), "gani optimizer/layer lr 0.001": (0.005, 0.003),
           "gani reparam/layer lr×3": (0.004, 0.004), "pti lr 0.0001": (0.010, 0.001)}
    cells = {n: {"procedural": {"l2": _spread(l2), "drift": _spread(dr)}}
             for n, (l2, dr) in pts.items()}
    assert P.pareto_front(cells) == {"projection"}
    assert P.tuning_front(cells) == {"pti lr 0.001", "gani reparam/layer lr×3", "pti lr 0.0001"}
    assert P.dominated_by_pti(cells) == {"gani optimizer/layer lr 0.001": ["pti lr 0.001"]}


def test_equal_drift_reads_pti_off_its_learning_rate_curve():
    pts = {"pti lr 0.0001": (0.020, 0.001), "pti lr 0.0003": (0.010, 0.002),
           "pti lr 0.001": (0.005, 0.004),
           "gani optimizer/layer lr 0.001": (0.0095, 0.002 * 2 ** 0.5),    # half-way, log
           "gani reparam/layer lr×3": (0.004, 0.008), "projection": (0.003, 0.0)}
    cells = {n: {"procedural": {"l2": _spread(l2), "drift": _spread(dr)}}
             for n, (l2, dr) in pts.items()}
    # half-way between 0.020 and 0.010 in log space: 0.01 * 2 ** 0.5
    assert P.pti_l2_at_drift(cells, 0.001 * 2 ** 0.5) == pytest.approx(0.01 * 2 ** 0.5)
    assert P.pti_l2_at_drift(cells, 0.004) == pytest.approx(0.005)
    assert P.pti_l2_at_drift(cells, 0.0005) is None and P.pti_l2_at_drift(cells, 0.005) is None
    ref = 0.010 * (0.5 ** 0.5)                            # PTI at drift 0.002·√2
    assert P.vs_pti_at_equal_drift(cells, "gani optimizer/layer lr 0.001") == \
        pytest.approx(0.0095 / ref - 1)
    assert P.vs_pti_at_equal_drift(cells, "gani reparam/layer lr×3") is None    # beyond PTI's
    assert P.vs_pti_at_equal_drift(cells, "pti lr 0.001") is None
    assert P.vs_pti_at_equal_drift(cells, "projection") is None
    cells["pti lr 0.0003"]["procedural"]["drift"] = _spread(0.005)  # drift no longer rises
    assert P.pti_l2_at_drift(cells, 0.0045) is None


def test_a_regenerated_report_keeps_its_hand_written_preface():
    old = "# T\n\n> **Run.** where\n>\n> **Reading.** what\n\nWritten by x.\n\n## a\n"
    new = "# T\n\nWritten by y.\n\n## b\n"
    assert P.keep_preface(old, new) == \
        "# T\n\n> **Run.** where\n>\n> **Reading.** what\n\nWritten by y.\n\n## b\n"
    assert P.keep_preface("# T\n\nWritten by x.\n", new) == new


def test_equal_time_ratios_come_from_the_gpu_results(tmp_path):
    rows = [{"variant": "pti", "dtype": "fp32", "batch": 1, "s_per_step": 0.1},
            {"variant": "gani[reparam,channels]", "dtype": "fp32", "batch": 1,
             "s_per_step": 0.15},
            {"variant": "gani[reparam,channels]", "dtype": "bf16", "batch": 1,
             "s_per_step": 9.0}]
    f = tmp_path / "gpu.json"
    f.write_text(json.dumps({"tune": rows}))
    r = P.step_cost_ratios(f)
    assert r == {"pti": 1.0, "gani[reparam,channels]": pytest.approx(1.5)}
    assert P.step_cost_ratios(tmp_path / "missing.json") == {}
    assert P.gpu_variant("gani optimizer/layer lr 0.001") == "gani[optimizer,layer]"
    assert P.gpu_variant("pti lr 0.0001") == "pti" and P.gpu_variant("projection") is None


def _data():
    def rows(l2, drift):
        return [{"split": s, "l2": l2 + 0.001 * i, "drift": drift, "mse": l2, "ms_ssim": 0.9}
                for i, s in enumerate(["test", "test", "shifted", "real"])]

    curve = [0.02 - 0.0001 * t for t in range(101)]
    jobs = [{"config": "start", "steps": 0, "budget": 100, "rows": rows(0.02, 0.0),
             "curves": [[]] * 4, "errors": []},
            {"config": "pti lr 0.0003", "steps": 100, "budget": 100, "rows": rows(0.005, 0.003),
             "curves": [curve] * 4, "errors": [], "seconds": 1.0},
            {"config": "gani reparam/channels lr×1", "steps": 100, "budget": 100,
             "rows": rows(0.008, 0.004), "curves": [curve] * 4, "errors": [], "seconds": 2.0},
            {"config": "projection", "steps": 100, "budget": 100, "skipped": "deadline"}]
    return {"testbed": "cpu32", "budgets": [100], "jobs": jobs, "device": "cpu", "gpu": None,
            "torch": "x", "generator": {"sha256": "ab" * 32, "step": 1},
            "init": {"method": "e4e", "mse_start": [0.02]},
            "targets": [{"split": s} for s in ["test", "test", "shifted", "real"]]}


def test_report_marks_the_front_reads_equal_time_off_the_curve_and_lists_skips(tmp_path):
    ratios = {"pti": 1.0, "gani[reparam,channels]": 2.0}
    cells = P.summarise(_data(), ratios)[100]
    # GANI costs 2 PTI steps at 1024 px: its equal-time MSE is its curve at step 50
    assert cells["gani reparam/channels lr×1"]["procedural"]["mse_equal_time"]["mean"] == \
        pytest.approx(0.02 - 0.0001 * 50)
    assert cells["pti lr 0.0003"]["procedural"]["mse_equal_time"]["mean"] == \
        pytest.approx(0.02 - 0.0001 * 100)
    assert P.pareto_front(cells) == {"start", "pti lr 0.0003"}       # GANI is dominated
    md = P.markdown([_data()], ratios)
    assert "| ★ pti lr 0.0003 |" in md and "| gani reparam/channels lr×1 |" in md
    assert "Not run (deadline): projection (100)" in md
    assert "left out): pti lr 0.0003." in md
    assert ("dominates: 1 of 1 (gani reparam/channels lr×1: by pti lr 0.0003)." in md)
    md = P.markdown([_data()], ratios, expected=["start", "pti lr 0.0003", "pti lr 0.001"])
    assert "**Not in this run (1 of 3 configurations):** pti lr 0.001." in md
    P.plot([_data()], ratios, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_merge_joins_the_workers_parts(tmp_path):
    d = _data()
    a = {**d, "setup_s": 1.0, "total_s": 2.0, "jobs": d["jobs"][:2]}
    b = {**d, "setup_s": 1.0, "total_s": 2.0, "jobs": [d["jobs"][0]] + d["jobs"][2:]}
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "cpu32_0.json").write_text(json.dumps(a))
    (tmp_path / "parts" / "cpu32_1.json").write_text(json.dumps(b))
    [path] = P.merge(tmp_path / "parts", tmp_path)
    m = json.loads(path.read_text())
    assert [j["config"] for j in m["jobs"]] == [j["config"] for j in d["jobs"]]
    assert m["budgets"] == [100] and m["workers"] == 2


def test_merge_takes_a_job_that_ran_over_the_same_job_skipped_elsewhere(tmp_path):
    d = _data()
    ran = d["jobs"][2]                                  # GANI: skipped by one run, run by the next
    skipped = {k: v for k, v in ran.items() if k not in ("rows", "curves", "seconds")}
    skipped["skipped"] = "past this worker's deadline (10 s)"
    first = {**d, "setup_s": 1.0, "total_s": 2.0, "jobs": d["jobs"][:2] + [skipped]}
    later = {**d, "setup_s": 1.0, "total_s": 2.0, "jobs": [d["jobs"][0], ran]}
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "cpu32_0.json").write_text(json.dumps(first))
    (tmp_path / "parts" / "cpu32_9.json").write_text(json.dumps(later))
    [path] = P.merge(tmp_path / "parts", tmp_path)
    m = json.loads(path.read_text())
    assert [j["config"] for j in m["jobs"]] == [j["config"] for j in d["jobs"][:3]]
    assert m["jobs"][2] == ran and not any("skipped" in j for j in m["jobs"])
    # and the other way round (the skipped copy read last) keeps the one that ran
    (tmp_path / "parts" / "cpu32_0.json").write_text(json.dumps(later))
    (tmp_path / "parts" / "cpu32_9.json").write_text(json.dumps(first))
    [path] = P.merge(tmp_path / "parts", tmp_path)
    assert json.loads(path.read_text())["jobs"][1] == ran


def test_a_worker_runs_baselines_then_middle_rates_first(base):
    table = P.grid(base.optimizer.lr)
    [jobs] = P.plan_jobs(list(table), [100], table, 1)
    names = [c for c, _ in jobs]
    assert names[:5] == ["start", "pti lr 0.0003", "pti lr 0.0001", "pti lr 0.001",
                         "projection"]
    middle = [n for n in names if n.endswith(("lr×1", "lr 0.0003")) and "gani" in n]
    assert names[5:5 + len(middle)] == middle and len(middle) == 6
