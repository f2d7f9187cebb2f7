"""benchmarks/gpu/run.py cannot rot: the same script the H200 runs, on CPU at 32 px with
1–2 steps, every section it can run here, and its result files checked for their rows and
keys (no timings are asserted: speed figures live in the result files)."""
from __future__ import annotations

import json

import pytest

from benchmarks.gpu import flops as F
from benchmarks.gpu import run as gpu

TINY = ["--device", "cpu", "--size", "32", "--channel-max", "16", "--style-dim", "32",
        "--n-mlp", "2", "--net-width-div", "16", "--e4e-width-div", "16",
        "--batch-sizes", "1,2", "--steps", "1,2", "--threads", "1", "--budget", "600",
        "--cap", "120"]


def _read(out, stem):
    data = json.loads((out / f"{stem}.json").read_text())
    md = (out / f"{stem}.md").read_text()
    return data, md


@pytest.mark.slow
def test_gpu_script_tiny_cpu(tmp_path, capsys):
    out = tmp_path / "res"
    # every section that runs without a GPU, the tuning loss L2 only (fast)
    assert gpu.main([*TINY, "--loss", "l2", "--skip", "compile,invert", "--out", str(out),
                     "--stem", "tiny"]) == 0
    data, md = _read(out, "tiny")
    assert (out / "tiny.png").is_file()
    assert set(gpu.SECTIONS) - {"compile", "invert"} <= set(data["meta"]["sections"])
    assert data["env"]["device"] == "cpu" and data["env"]["matmul_float32_tflops"] > 0
    fl = data["flops"]["per_image"]
    for key in ("pti_step", "gani_setup", "G_forward", "gmm_fwd_bwd[channels]"):
        assert fl[key] > 0
    # every GANI reading × sharing the schema allows, and PTI, at each batch size
    from gani.config.schema import GMMSection

    names = {gpu.variant_name(v) for v in gpu.variants(["pti", "gani"])}
    readings = max(1, len(F._literal_values(GMMSection, "reading")))
    sharings = F._literal_values(GMMSection, "sharing")
    # + the fused copy of each `layer` variant (GMMBank.fuse)
    assert len(names) == 1 + readings * (max(1, len(sharings)) + ("layer" in sharings))
    assert "layer" not in sharings or {n for n in names if n.endswith(",fused]")}
    rows = {(r["variant"], r["batch"]): r for r in data["tune"]}
    assert set(rows) == {(n, b) for n in names for b in (1, 2)}
    for (name, b), r in rows.items():
        assert "error" not in r, r
        for key in ("s_per_step", "setup_s", "images_per_hour", "s_per_image_amortised",
                    "peak_mem_bytes"):
            assert key in r, (name, key)
        assert r["s_per_step"] > 0 and r["profile_steps"] == 300
    pti1 = rows[("pti", 1)]
    assert pti1["counted_gflop_per_step"] > 0 and pti1["measured_over_floor"] > 0
    assert any("step_over_pti" in r for r in data["tune"] if r["method"] == "gani")
    assert {g["sharing"] for g in data["gmm"]} == set(
        F._literal_values(GMMSection, "sharing") or ["channels"])
    assert all("fwd_bwd_s" in g and "share_of_gani_step" in g for g in data["gmm"])
    assert any(g.get("fused") for g in data["gmm"]) == ("layer" in sharings)
    # the trace: PTI and the default GANI at the smallest and largest batch
    prof = {(r["variant"], r["batch"]): r for r in data["trace"]}
    default = gpu.variant_name(gpu.variants(["pti", "gani"])[1])
    assert set(prof) == {(n, b) for n in ("pti", default) for b in (1, 2)}
    for r in prof.values():
        assert "error" not in r, r
        assert r["wall_s_per_step"] > 0 and r["aten_ops_per_step"] > 0 and r["top"]
        assert all(t["ms_per_step"] >= 0 and t["calls_per_step"] > 0 for t in r["top"])
    assert data["skipped"]["channels_last"].startswith("no loss networks")
    assert data["skipped"]["cudnn"].startswith("cuDNN is CUDA's") and not data["cudnn"]
    assert {r["channels_last"] for r in data["e4e"]} == {False, True}
    steps = [r["step"] for r in data["align"]]
    assert any(s.startswith("e4e_align") for s in steps) and len(steps) == 4
    assert len(data["metrics"]) == 4 and all(r["s_per_image"] > 0 for r in data["metrics"])
    for head in ("## Tuning steps", "## GMMs alone", "## Trace of a step", "## e4e encoder",
                 "## Alignment",
                 "## Metrics per image", "measured/floor"):
        assert head in md
    # the compile table (that section needs a C++ compiler here, so its rows are made up):
    # compile time, compiled vs eager s/step, and a row the child's timeout cut off
    assert "## torch.compile" not in md
    data["compile"] = [
        dict(pti1, s_per_step=pti1["s_per_step"] / 2, compiled="G.synthesis", compile_s=12.25,
             compile_mode="default"),
        {"variant": "pti", "dtype": "fp32", "batch": 2, "compiled": "G.synthesis",
         "compile_mode": "default", "error": "compiling (first step not finished)",
         "partial": "child timed out after 240 s"}]
    table = gpu.markdown(data).split("## torch.compile of G.synthesis (dynamic=False)")[1]
    table = table.split("\n## ")[0]
    first, second = [ln for ln in table.splitlines() if ln.startswith("| pti |")]
    assert "| 12.2 |" in first and "| 0.50× |" in first
    assert "compiling (first step not finished); child timed out after 240 s" in second


@pytest.mark.slow
def test_gpu_script_ffhq_loss_and_child(tmp_path, capsys, monkeypatch):
    out = tmp_path / "res"
    # the ffhq loss (random LPIPS / IR-101 / parser) with channels-last nets; invert skipped
    monkeypatch.setattr(gpu, "_importable", lambda name: False)
    assert gpu.main([*TINY, "--batch-sizes", "1", "--variants", "gani[reparam,channels]",
                     "--only", "tune,channels_last,invert", "--out", str(out),
                     "--stem", "ffhq"]) == 0
    data, _ = _read(out, "ffhq")
    assert [r["variant"] for r in data["tune"]] == ["gani[reparam,channels]"]
    assert all("s_per_step" in r for r in data["tune"] + data["channels_last"])
    assert all(r["channels_last"] for r in data["channels_last"])
    assert "prefect" in data["skipped"]["invert"]
    # a child measurement (what --isolate runs in a fresh process) prints one JSON row
    capsys.readouterr()
    spec = {"kind": "tune", "variant": {"method": "pti"}, "dtype": "fp32", "batch": 1,
            "k1": 1, "k2": 2, "cap": 60}
    assert gpu.main([*TINY, "--loss", "l2", "--child", json.dumps(spec)]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('{"child_row"')]
    row = json.loads(line[-1])["child_row"]
    assert row["s_per_step"] > 0 and row["peak_mem_note"].endswith("fresh process")


def test_budget_sections_share_and_deadline():
    b = gpu.Budget(100.0, ["tune", "gmm"], reserve=0.0)
    b.enter("tune")
    assert 0 < b.left() <= 100 * 45 / 50 + 1e-6
    b.enter("gmm")
    assert b.left() > 100 * 45 / 50 - 1
    assert b.deadline(1.0) <= b.limit


def test_flop_model_counts_the_generator():
    G = F.meta_generator(64, channel_multiplier=1, channel_max=32, style_dim=16, n_mlp=1)
    br = F.generator_breakdown(G, 1)
    # the 3×3 convs of the last resolution: up conv (transposed, on the 32² input) + conv
    c = G.channels
    conv64 = c[32] * c[64] * 9 * 32 * 32 + c[64] * c[64] * 9 * 64 * 64
    assert br[64] >= conv64 and br[64] < conv64 * 1.1
    assert br["total"] == sum(v for k, v in br.items() if k != "total")
    # a step's count is linear in the batch (grouped per-sample convs counted per group)
    from gani.config.schema import TuneSection

    f = {B: F.step_flops(G, TuneSection(), B, None, ["channels"]) for B in (1, 2, 4)}
    for key in ("pti_step", "gani_step[channels]", "gani_setup"):
        assert f[4][key] == f[1][key] + 3 * (f[2][key] - f[1][key]), key
    rows = F.gmm_rows(G)
    assert sum(r * C for C, r in rows.items()) == sum(
        m.weight.numel() for m in G.modulated_convs().values())


def test_op_counter_counts_kernels_not_views():
    import torch

    x = torch.zeros(4, 6, device=F.META, requires_grad=True)
    # mul and sum run kernels; view, unsqueeze, transpose and detach only alias
    assert F.count_ops(lambda: (x * 2).view(24).sum()) == 2
    assert F.count_ops(lambda: x.detach().view(24).unsqueeze(0).t()) == 0
    oc = F.OpCounter()
    with oc:
        (x * 3).sum().backward()
    assert oc.total >= 3 and oc.by_op["aten.mul"] >= 1
    # a step's op count hardly depends on B; GANI's step has PTI's ops and the GMMs'
    G = F.meta_generator(64, channel_multiplier=1, channel_max=32, style_dim=16, n_mlp=1)
    from gani.config.schema import TuneSection

    ops = {B: F.step_flops(G, TuneSection(), B, None, ["channels"], count_flops=F.count_ops)
           for B in (1, 4)}
    assert 0 < ops[1]["pti_step"] <= ops[4]["pti_step"] <= 1.05 * ops[1]["pti_step"]
    assert ops[1]["gani_step[channels]"] > ops[1]["pti_step"] + ops[1]["gmm_fwd_bwd[channels]"] / 2
    md = F.ops_markdown({"size": 64, "profile": "x", "loss_nets": False, "ops": ops})
    assert f"| pti_step | {ops[1]['pti_step']} | {ops[4]['pti_step']} |" in md


def _fake_run(stdout, exc=None, rc=0):
    import subprocess

    def run(cmd, **kw):
        if exc == "timeout":
            raise subprocess.TimeoutExpired(cmd, kw["timeout"], output=stdout.encode())
        return subprocess.CompletedProcess(cmd, rc, stdout=stdout, stderr="boom\n")
    return run


def test_child_cut_off_by_its_timeout_keeps_what_it_finished(monkeypatch):
    done = {"variant": "pti", "batch": 1, "s_per_step": 0.1}
    compiling = {"variant": "pti", "batch": 8, "error": "compiling (first step not finished)"}
    out = "\n".join([json.dumps({"child_row": [done]}), "progress text",
                     json.dumps({"child_row": [done, compiling]})]) + "\n"
    monkeypatch.setattr(gpu.subprocess, "run", _fake_run(out, "timeout"))
    rows = gpu.run_child({"kind": "compile"}, [], 240)
    assert [r["batch"] for r in rows] == [1, 8]  # the last report, both rows
    assert all(r["partial"] == "child timed out after 240 s" for r in rows)
    assert rows[0]["s_per_step"] == 0.1 and rows[1]["error"].startswith("compiling")
    # nothing reported before the timeout: an error row, as before
    monkeypatch.setattr(gpu.subprocess, "run", _fake_run("", "timeout"))
    assert gpu.run_child({"kind": "compile"}, [], 30) == {"error": "child timed out after 30 s"}
    # a child that exits without a row: its exit code and the tail of its stderr
    monkeypatch.setattr(gpu.subprocess, "run", _fake_run("", rc=3))
    assert gpu.run_child({"kind": "tune"}, [], 30) == {"error": "child exit 3: boom"}
    # a finished child: its row, unmarked
    monkeypatch.setattr(gpu.subprocess, "run", _fake_run(json.dumps({"child_row": done})))
    assert gpu.run_child({"kind": "tune"}, [], 30) == done
