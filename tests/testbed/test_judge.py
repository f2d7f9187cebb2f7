"""The judgement benchmark (benchmarks.testbed.judge) end to end on a tiny random run, and
the edit-preservation pieces of benchmarks.testbed.core.directions."""
from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks.testbed import judge as J
from gani.testbed import directions as Dn

torch.set_num_threads(1)


# ---------------------------------------------------------------- pieces
class _MeanReader:
    """A stand-in regressor: attribute 0 = 2·mean pixel, attribute 1 = constant."""
    attributes = ("a", "b")

    def predict(self, x):
        m = x.float().mean((1, 2, 3))
        return torch.stack([2 * m, torch.zeros_like(m)], 1)


def test_edit_deltas_exact_on_a_linear_toy():
    def render_fn(w):                       # image = w[:, 0, 0] everywhere
        return w[:, 0, 0].view(-1, 1, 1, 1).expand(-1, 3, 4, 4)

    w = torch.zeros(3, 2, 5)
    w[:, :, 0] = torch.tensor([0.1, -0.1, 0.0]).view(3, 1)
    d = torch.zeros(5)
    d[0] = 3.0                              # normalised inside
    out = Dn.edit_deltas(_MeanReader(), render_fn, w, {"d": d}, {"d": 0.2}, strength=1.5,
                         attr_std=torch.tensor([0.5, 1.0]))
    # pred(±) = 2·(w0 ± 1.5·0.2) → Δ per σ = 2·0.2 = 0.4, / std 0.5 = 0.8
    assert torch.allclose(out["d"], torch.tensor([[0.8, 0.0]] * 3), atol=1e-6)
    p = Dn.edit_preservation(out["d"][0], torch.tensor([0.4, 0.1]), target=0)
    assert p["ratio"] == pytest.approx(2.0) and p["leakage"] == pytest.approx(0.0)
    assert p["ref_leakage"] == pytest.approx(0.1) and p["deviation"] == pytest.approx(0.1)
    same = Dn.edit_preservation(torch.tensor([0.3, -0.2, 0.1]), torch.tensor([0.3, -0.2, 0.1]), 0)
    assert same["ratio"] == pytest.approx(1.0) and same["deviation"] == 0.0
    assert same["leakage"] == pytest.approx(same["ref_leakage"])
    assert Dn.direction_sigma(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([2.0, 0.0])) \
        == pytest.approx(math.sqrt(2.0))


def test_spread_ci():
    s = J.spread([1.0, 2.0, 3.0, None, float("nan")])
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0)
    assert s["ci95"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert J.spread([]) == {"mean": None, "std": None, "ci95": None, "n": 0}
    assert J.spread([5.0])["ci95"] is None


# ---------------------------------------------------------------- a tiny run folder
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from safetensors.torch import save_file

    from gani.testbed import faces as Fc
    from gani.testbed.attributes import save_regressor, train_regressor
    from gani.models.stylegan2 import Generator

    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    G = Generator(32, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16).eval()
    save_file({k: v.contiguous() for k, v in G.state_dict().items()},
              str(run / "g_ema.safetensors"))
    cfg = dict(G.config(), blur_kernel=list(G.config()["blur_kernel"]))
    (run / "generator.json").write_text(json.dumps(cfg))
    imgs, labels = Fc.render_split(0, "train", 96, 32)
    reg = train_regressor(Fc.to_tensor(imgs), torch.from_numpy(labels), steps=15, batch=16,
                          width=8)
    save_regressor(reg, run / "regressor.pt")
    w = Dn.sample_w(G, 200, seed=2)
    preds = reg.predict(Dn.render_w(G, w, batch=16))
    fit = Dn.fit_interfacegan(w, preds, reg.attributes)
    torch.save({k: v["direction"] for k, v in fit.items()}, run / "directions.pt")
    torch.save(Dn.ganspace_directions(G, n_samples=200, n_components=4, seed=4)["pca"],
               run / "ganspace_pca.pt")
    (run / "log.jsonl").write_text(json.dumps({"step": 7, "kimg": 0.1}) + "\n")
    return run


def test_untuned_generator_edit_ratio_is_one_on_its_own_samples(tiny_run):
    """The per-image path (TunedImage + render, as for tuned results) on the reference samples
    reproduces the reference: mean Δ over them / Δ_ref = 1 for every direction."""
    from gani.tuning import render
    from gani.tuning.result import TunedImage

    G, reg, ifg, pca, _ = J.load_run(tiny_run)
    ctx = J.EditContext(G, reg, ifg, pca, n_ganspace=2, strength=1.5, n_pop=200, n_ref=6,
                        min_ref_effect=0.0)
    w_ref = Dn.sample_w(G, 6, seed=3).unsqueeze(1).repeat(1, G.n_latent, 1)
    per = []
    for i in range(6):
        r = TunedImage(method="e4e", latent=w_ref[i])
        per.append(ctx.deltas(lambda w, r=r: render(G, r, latent=w), w_ref[i:i + 1]))
    for name, ref in ctx.reference.items():
        mean = torch.cat([p[name] for p in per]).mean(0)
        assert torch.allclose(mean, ref, atol=1e-4), name
        t = ctx.target[name]
        if abs(float(ref[t])) > 1e-3:
            assert Dn.edit_preservation(mean, ref, t)["ratio"] == pytest.approx(1.0, abs=1e-3)


def test_judge_end_to_end(tiny_run, tmp_path):
    out = tmp_path / "out"
    rc = J.main(["--run", str(tiny_run), "--out", str(out), "--targets", "1,1",
                 "--real", "astronaut", "--steps", "3", "--proj-steps", "3",
                 "--methods", "start,projection,pti,gani", "--n-pop", "200", "--n-ref", "8",
                 "--n-control", "3", "--ganspace", "2", "--min-ref-effect", "0"])
    assert rc == 0
    for f in ("judgement.json", "judgement.md", "judgement_fit_vs_drift.png",
              "judgement_edits.png", "judgement_grid.png", "judgement_grid.txt"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    rep = json.loads((out / "judgement.json").read_text())
    assert rep["generator"]["sha256"] and rep["generator"]["step"] == 7
    assert rep["hardware"]["torch_threads"] == 1 and rep["hardware"]["torch"]
    assert [t["split"] for t in rep["targets"]] == ["test", "shifted", "real"]
    assert rep["loss_terms"] == ["rec"] and "lpips" in rep["skipped_terms"]
    methods = rep["budgets"]["3"]["methods"]
    assert list(methods) == ["start", "pti", "projection", "gani"]
    for name, e in methods.items():
        assert len(e["per_target"]) == 3
        for row in e["per_target"]:
            for k in ("l2", "drift", "mse", "attr_consistency", "edit_ratio", "edit_leakage"):
                assert row[k] is not None and math.isfinite(row[k]), (name, k)
            assert row["lpips"] is None                          # no AlexNet weights
            assert 0 <= row["l2"] < 4 and row["edit_leakage"] >= 0
            if row["split"] != "real":
                assert math.isfinite(row["attr_err"]) and row["attr_err"] >= 0
            else:
                assert "attr_err" not in row
        vs_start = [r["edit_vs_start"] for r in e["per_target"]]
        if name == "start":
            assert all(v == 0.0 for v in vs_start)
        else:
            assert all(math.isfinite(v) and v >= 0 for v in vs_start), name
        drift = [r["drift"] for r in e["per_target"]]
        if name in ("start", "projection"):
            assert all(d == 0.0 for d in drift), name                # θ' = θ exactly
        else:
            assert all(d > 0 for d in drift), name
        assert set(e["summary"]) == {"test", "shifted", "real", "all"}
    # every method starts from the same projected latent: the step-0 MSE is shared
    starts = {n: [c[0] for c in e["curves"]] for n, e in methods.items()}
    for n in ("pti", "gani", "projection"):
        assert starts[n] == pytest.approx(starts["start"], rel=1e-5), n
    # tuning the weights fits better than its start after 3 steps
    for n in ("pti", "gani"):
        assert methods[n]["summary"]["all"]["mse"]["mean"] < \
            methods["start"]["summary"]["all"]["mse"]["mean"]
    # equal wall time: PTI is its own budget, the others ran a step count of their own
    assert methods["pti"]["equal_time"]["steps"] == 3
    for n in ("projection", "gani"):
        et = methods[n]["equal_time"]
        assert et["steps"] >= 1 and et["seconds"] > 0 and len(et["per_target"]) == 3
        drift = [r["drift"] for r in et["per_target"]]
        assert all(d == 0.0 for d in drift) if n == "projection" else all(d > 0 for d in drift)
        assert all(math.isfinite(r["edit_ratio"]) for r in et["per_target"]), n
    assert methods["start"]["equal_time"] is None
    ctl = rep["control"]["summary"]["edit_ratio"]
    assert ctl["n"] == 3 and math.isfinite(ctl["mean"])
    md = (out / "judgement.md").read_text()
    assert "held-out faces" in md and "| gani |" in md and "LPIPS metric: null" in md


def test_judge_from_the_testbed_encoder(tiny_run, tmp_path):
    """--init e4e: every method starts from the encoder's codes, recorded with its hash."""
    from benchmarks.testbed.core.encoder import EncoderConfig, EncoderTrainer
    from gani.models.stylegan2 import Generator

    run = tmp_path / "run"
    run.mkdir()
    for f in tiny_run.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    args = ["--run", str(run), "--out", str(out), "--targets", "1,1", "--real", "astronaut",
            "--steps", "2", "--methods", "start,pti", "--n-pop", "200", "--n-ref", "8",
            "--n-control", "2", "--ganspace", "1", "--min-ref-effect", "0", "--no-plots",
            "--init", "e4e", "--equal-time-run", "none"]
    with pytest.raises(SystemExit, match="no encoder"):
        J.main(args)
    G = Generator(**json.loads((run / "generator.json").read_text())).eval()
    tr = EncoderTrainer(G, EncoderConfig(width_div=16, batch=4, n_train=8))
    tr.train_step()
    tr.E.eval()
    tr.save_encoder(run / "e4e_encoder.safetensors")
    assert J.main(args) == 0
    rep = json.loads((out / "judgement.json").read_text())
    assert rep["init"]["method"] == "e4e (testbed encoder)" and rep["init"]["steps"] == 0
    assert rep["init"]["encoder_step"] == 1 and len(rep["init"]["sha256"]) == 64
    methods = rep["budgets"]["2"]["methods"]
    start = [c[0] for c in methods["start"]["curves"]]
    assert start == pytest.approx(rep["init"]["mse_start"], rel=1e-4)
    assert [c[0] for c in methods["pti"]["curves"]] == pytest.approx(start, rel=1e-5)
    assert "e4e (testbed encoder), 0 steps from encoder" in (out / "judgement.md").read_text()
