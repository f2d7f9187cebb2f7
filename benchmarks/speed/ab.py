"""Paired A/B of the step changes of issue 17 that a CPU can rank.

    .venv/bin/python -m benchmarks.speed.ab --size 1024 --batch 1 --reps 9
    .venv/bin/python -m benchmarks.speed.ab --arm compile_dynamic --size 64 --batch 2
    .venv/bin/python -m benchmarks.speed.ab --arm tracker_record --size 1024 --batch 4
    .venv/bin/python -m benchmarks.speed.ab --arm blur_pad --size 256 --batch 1 --reps 7

`gmm_affine`: sharing `channels_affine` applies its per-layer gain a_l and offset o_l
(gani/gmm.py, `GMM._affine`). *Before*: a_l and o_l gathered for every row (two
`index_select`s writing [B, R, C] each, whose backward is an `index_add` over 43.8 K rows
into a handful of slots at C = 512: atomics on a GPU, so not deterministic there). *After*
(the code): each layer's consecutive block of rows times its [C] gain, broadcast. `channels`
(no gains) runs in the same loop as the floor. GMM forward + backward on the modulated-conv
row layout of the 1024-px generator (random gradients; the cost does not depend on values),
arms interleaved, one warm-up round, median of `--reps`. Also checked in the same run: the
deltas of both arms are bit-identical (tests/tuning/test_gmm.py checks the φ-gradients).

`compile_dynamic` (`--arm compile_dynamic`, needs a C++ compiler on CPU): how
benchmarks/gpu/run.py compiles G.synthesis. *Before*: `torch.compile` with its default
(automatic dynamic shapes: the second batch size recompiles with a symbolic batch).
*After*: `dynamic=False` (one static graph per batch size). Each arm in a fresh process
with an empty inductor cache runs one tuning-like call (fwd + bwd w.r.t. per-sample weight
deltas, then a no-grad render of one image, as the regularizer does) at B = 1, 1, `--batch`,
`--batch`; the first call of each batch size is its compile time, the second its speed.

`tracker_record` (`--arm tracker_record`): the per-step bookkeeping of every tuner
(gani/tuning/common.py, `Tracker.record`) on the 1024-px generator's weight deltas at
batch B and five loss parts. *Before*: the losses copied to the host, then every part of
every image on its own (`float(p[i])`: 1 + 5·B device-to-host copies, each a
synchronisation on a GPU), the keep-mask moved to the device and the good state updated
with `torch.where` (a temporary of the deltas' size). *After* (the code): one stacked copy
to the host, and a plain `copy_` when every image is kept. Median of `--reps` calls per
arm, interleaved; the curves, parts and good states of both arms are checked equal.

`blur_pad` (`--arm blur_pad`): the FIR filter after each up-sampling conv
(gani/models/upfirdn2d.py) pads (1, 1) on both axes. *Before*: an explicitly padded copy
of the activation (`F.pad`), then the depthwise conv. *After* (the code): the same zeros as
the conv's own padding. A render G.synthesis at --size, forward + backward w.r.t. the
per-sample weight deltas (a PTI step's generator work), arms interleaved; the images and
the deltas' gradients are checked bit-identical.

Results: benchmarks/speed/results/ab_<arm>_<device>_<size>_b<B>.{json,md}.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gani.config.schema import GMMSection
from gani.gmm import GMM, GMMBank, GradientRows
from gani.models.stylegan2 import Generator
from gani.tuning.common import Tracker

OUT = Path(__file__).resolve().parent / "results"
# the module (gani.models re-exports its function under the same name)
fir = importlib.import_module("gani.models.upfirdn2d")
after_upfirdn2d = fir.upfirdn2d


def gathered_affine(self: GMM, h: torch.Tensor, k: int, segments) -> torch.Tensor:
    """The *before* arm: a_l ⊙ h + o_l with a_l, o_l gathered per row."""
    if self.a is None:
        return h
    idx = torch.cat([torch.full((n,), slot, dtype=torch.long) for slot, n in segments])
    idx = idx.to(h.device)
    return h * self.a[:, :, k].index_select(1, idx) + self.o[:, :, k].index_select(1, idx)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def interleaved(run, arms, reps: int, dev: torch.device) -> tuple[dict, dict]:
    """Time `run(arm, r)` for every arm, round r = 0 (warm-up, untimed) .. reps, arms
    interleaved within each round; returns (times {arm: [s]}, medians {arm: s})."""
    times: dict[str, list[float]] = {a: [] for a in arms}
    for r in range(reps + 1):
        for arm in arms:
            sync(dev)
            t = time.perf_counter()
            run(arm, r)
            sync(dev)
            if r:
                times[arm].append(time.perf_counter() - t)
    return times, {a: sorted(v)[len(v) // 2] for a, v in times.items()}


def gmm_affine(size: int, batch: int, reps: int, dev: torch.device,
               channel_max: int = 512) -> dict:
    G = Generator(size, 512, 8, channel_multiplier=2, channel_max=channel_max)
    shapes = {n: tuple(m.weight.shape[1:]) for n, m in G.modulated_convs().items()}
    chans = {n: s[1] for n, s in shapes.items()}
    gen = torch.Generator().manual_seed(0)
    rows = GradientRows({n: (torch.randn(batch, *s, generator=gen) * 1e-3).to(dev)
                         for n, s in shapes.items()})
    banks = {sh: GMMBank(chans, GMMSection(sharing=sh, zero_init_last=False), batch,
                         seed=1).to(dev) for sh in ("channels", "channels_affine")}
    after = GMM._affine
    arms = {"channels": ("channels", after), "before": ("channels_affine", gathered_affine),
            "after": ("channels_affine", after)}

    def run(arm: str) -> dict:
        sharing, impl = arms[arm]
        GMM._affine = impl
        try:
            bank = banks[sharing]
            bank.zero_grad(set_to_none=True)
            d = bank(rows)
            sum((v * v).sum() for v in d.values()).backward()
            return {k: v.detach() for k, v in d.items()}
        finally:
            GMM._affine = after

    times, med = interleaved(lambda arm, r: run(arm), arms, reps, dev)
    d0, d1 = run("before"), run("after")
    return {"arm": "gmm_affine", "size": size, "channel_max": channel_max, "batch": batch,
            "reps": reps,
            "device": str(dev), "threads": torch.get_num_threads(),
            "median_s": med, "times_s": times,
            "before_over_channels": med["before"] / med["channels"],
            "after_over_channels": med["after"] / med["channels"],
            "after_over_before": med["after"] / med["before"],
            "deltas_bit_identical": all(torch.equal(d0[k], d1[k]) for k in d0),
            "torch": torch.__version__, "machine": platform.processor() or platform.machine()}


def compile_calls(size: int, batch: int, dynamic, channel_max: int) -> list[dict]:
    """Child side of `compile_dynamic`: the four timed calls of one arm."""
    G = Generator(size, 512, 8, channel_multiplier=2, channel_max=channel_max)
    G.requires_grad_(False)
    G.synthesis = torch.compile(G.synthesis, dynamic=dynamic)
    out = []
    for B in (1, 1, batch, batch):
        w = torch.randn(B, G.n_latent, G.style_dim)
        deltas = {n: torch.zeros(B, *m.weight.shape[1:], requires_grad=True)
                  for n, m in G.modulated_convs().items()}
        t = time.perf_counter()
        G.synthesis(w, weight_deltas=deltas).square().mean().backward()
        with torch.no_grad():
            G.synthesis(w[:1])
        out.append({"batch": B, "s": time.perf_counter() - t})
    return out


def compile_dynamic(size: int, batch: int, channel_max: int, threads: int) -> dict:
    arms = {}
    for arm, dyn in (("before", "none"), ("after", "false")):
        with tempfile.TemporaryDirectory(prefix="ab_inductor_") as cache:
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
            cmd = [sys.executable, "-m", "benchmarks.speed.ab", "--arm", "compile_dynamic",
                   "--size", str(size), "--batch", str(batch), "--channel-max",
                   str(channel_max), "--threads", str(threads), "--child", dyn]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                               cwd=Path(__file__).resolve().parents[2])
            if p.returncode != 0:
                raise RuntimeError(f"compile_dynamic child ({arm}) failed: "
                                   f"{p.stderr.strip().splitlines()[-1:]}")
            arms[arm] = json.loads(p.stdout.strip().splitlines()[-1])
    b, a = arms["before"], arms["after"]
    return {"arm": "compile_dynamic", "size": size, "channel_max": channel_max, "batch": batch,
            "device": "cpu", "threads": threads, "calls": arms,
            "compile_s_second_batch": {k: v[2]["s"] for k, v in arms.items()},
            "s_second_batch": {k: v[3]["s"] for k, v in arms.items()},
            "after_over_before_compile": a[2]["s"] / b[2]["s"],
            "after_over_before_speed": a[3]["s"] / b[3]["s"],
            "torch": torch.__version__}


@torch.no_grad()
def record_before(self: Tracker, t: int, losses: torch.Tensor, parts: dict) -> None:
    """The *before* arm of `tracker_record`: Tracker.record as it was (progress and bar
    left out: neither arm has them here): a host copy for the losses and one per part and
    image, then the mask moved to the device and a `torch.where` update of every state."""
    vals = losses.detach().float().cpu()
    part_vals = {k: [float(p[i]) for i in range(self.batch)] for k, p in parts.items()}
    keep = self.log_values(t, vals, part_vals)
    mask = keep.to(self.state[0].device) if self.state else None
    for s, g in zip(self.state, self.good):
        m = mask.view(-1, *([1] * (s.dim() - 1)))
        g.copy_(torch.where(m, s.detach(), g))


def tracker_record(size: int, batch: int, reps: int, dev: torch.device,
                   channel_max: int = 512) -> dict:
    G = Generator(size, 512, 8, channel_multiplier=2, channel_max=channel_max)
    gen = torch.Generator().manual_seed(0)
    state = [torch.randn(batch, *m.weight.shape[1:], generator=gen).to(dev)
             for m in G.modulated_convs().values()]
    losses = torch.rand(batch, generator=gen).to(dev)
    parts = {k: torch.rand(batch, generator=gen).to(dev)
             for k in ("rec", "lpips", "id", "parsing", "reg")}
    tracks = {arm: Tracker(state, batch, reps + 1, "pti") for arm in ("before", "after")}
    impl = {"before": record_before, "after": Tracker.record}
    times, med = interleaved(lambda arm, r: impl[arm](tracks[arm], r, losses, parts), tracks,
                             reps, dev)
    b, a = tracks["before"], tracks["after"]
    equal = (b.curves == a.curves and b.parts == a.parts
             and all(torch.equal(x, y) for x, y in zip(b.good, a.good)))
    return {"arm": "tracker_record", "size": size, "channel_max": channel_max, "batch": batch,
            "reps": reps, "device": str(dev), "threads": torch.get_num_threads(),
            "state_mib": sum(x.numel() * x.element_size() for x in state) / 2 ** 20,
            "median_s": med, "times_s": times, "after_over_before": med["after"] / med["before"],
            "results_equal": equal, "torch": torch.__version__}


def markdown_two_arms(r: dict, title: str, unit: str, before: str, after: str,
                      equal: str) -> str:
    """The result page of a before/after arm."""
    m = r["median_s"]
    return "\n".join([
        f"# A/B `{r['arm']}`: {title}, B = {r['batch']}, {r['device']}, {r['threads']} "
        f"thread(s), median of {r['reps']}", "",
        f"| arm | {unit} |", "|---|---|",
        f"| before ({before}) | {m['before']:.4f} |", f"| after ({after}) | {m['after']:.4f} |",
        "", f"after / before: **{r['after_over_before']:.3f}**; {equal}: {r['results_equal']}; "
        f"torch {r['torch']}.", ""])


def markdown_tracker(r: dict) -> str:
    return markdown_two_arms(
        r, f"{r['size']}-px weight deltas ({r['state_mib']:.0f} MiB), 5 parts", "s per record()",
        "1 + 5·B host copies, `torch.where` update", "one host copy, plain `copy_`",
        "curves, parts and good states equal")


def upfirdn2d_padded(x, kernel, up=1, down=1, pad=(0, 0)):
    """The *before* arm of `blur_pad`: the pad as an explicit copy, then the code's
    upfirdn2d with none left to do (zero insertion first where up > 1, as it does)."""
    if up > 1:  # the skip path's 2× up-sampling: its pad (2, 1) the code pads explicitly too
        if pad[0] == pad[1] >= 0:
            raise ValueError(f"no before-arm for up={up} with the symmetric pad {pad}")
        return after_upfirdn2d(x, kernel, up, down, pad)
    p0, p1 = pad
    return after_upfirdn2d(torch.nn.functional.pad(x, [p0, p1, p0, p1]), kernel, 1, down)


def blur_pad(size: int, batch: int, reps: int, dev: torch.device,
             channel_max: int = 512) -> dict:
    torch.manual_seed(0)
    G = Generator(size, 512, 8, channel_multiplier=2, channel_max=channel_max).to(dev)
    G.requires_grad_(False)
    w = torch.randn(batch, G.n_latent, G.style_dim, device=dev)
    deltas = {n: torch.zeros(batch, *m.weight.shape[1:], device=dev, requires_grad=True)
              for n, m in G.modulated_convs().items()}
    after = after_upfirdn2d
    impl = {"before": upfirdn2d_padded, "after": after}

    def run(arm: str):
        fir.upfirdn2d = impl[arm]
        try:
            img = G.synthesis(w, weight_deltas=deltas)
            grads = torch.autograd.grad(img.square().sum(), list(deltas.values()))
            return img.detach(), grads
        finally:
            fir.upfirdn2d = after

    times, med = interleaved(lambda arm, r: run(arm), impl, reps, dev)
    (ib, gb), (ia, ga) = run("before"), run("after")
    return {"arm": "blur_pad", "size": size, "channel_max": channel_max, "batch": batch,
            "reps": reps, "device": str(dev), "threads": torch.get_num_threads(),
            "median_s": med, "times_s": times, "after_over_before": med["after"] / med["before"],
            "results_equal": torch.equal(ib, ia) and all(torch.equal(x, y)
                                                         for x, y in zip(gb, ga)),
            "torch": torch.__version__}


def markdown_blur(r: dict) -> str:
    return markdown_two_arms(
        r, f"G.synthesis fwd + bwd (w.r.t. the weight deltas), {r['size']} px",
        "s per render fwd + bwd", "explicitly padded copy before each blur",
        "the conv's own zero padding", "images and delta gradients bit-identical")


def markdown_compile(r: dict) -> str:
    rows = [f"| {arm} | " + " | ".join(f"{c['s']:.2f}" for c in calls) + " |"
            for arm, calls in r["calls"].items()]
    B = r["batch"]
    return "\n".join([
        f"# A/B `compile_dynamic`: torch.compile of G.synthesis, {r['size']} px "
        f"(channel_max {r['channel_max']}), {r['device']}, {r['threads']} thread(s)", "",
        f"Seconds per call (fwd + bwd at B, then a no-grad render of one image); each arm in "
        f"a fresh process with an empty inductor cache.", "",
        f"| arm | B=1 (compile) | B=1 | B={B} (compile) | B={B} |", "|---|---|---|---|---|",
        *rows, "",
        "before: `torch.compile(G.synthesis)` (automatic dynamic shapes); after: "
        "`dynamic=False`.", "",
        f"after / before at B = {B}: compile **{r['after_over_before_compile']:.2f}×**, "
        f"steady call **{r['after_over_before_speed']:.2f}×**; torch {r['torch']}.", ""])


def markdown(r: dict) -> str:
    if r["arm"] == "compile_dynamic":
        return markdown_compile(r)
    if r["arm"] == "tracker_record":
        return markdown_tracker(r)
    if r["arm"] == "blur_pad":
        return markdown_blur(r)
    m = r["median_s"]
    return "\n".join([
        f"# A/B `{r['arm']}`: {r['size']}-px row layout, B = {r['batch']}, {r['device']}, "
        f"{r['threads']} thread(s), median of {r['reps']}", "",
        "| arm | GMM fwd + bwd s | × channels |", "|---|---|---|",
        f"| channels (no gains) | {m['channels']:.3f} | 1 |",
        f"| channels_affine, before (per-row gather) | {m['before']:.3f} | "
        f"{r['before_over_channels']:.3f} |",
        f"| channels_affine, after (per-block broadcast) | {m['after']:.3f} | "
        f"{r['after_over_channels']:.3f} |", "",
        f"after / before: **{r['after_over_before']:.3f}**; deltas bit-identical: "
        f"{r['deltas_bit_identical']}; torch {r['torch']}.", ""])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--channel-max", type=int, default=512, help="smaller: a test's tiny run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--arm", choices=("gmm_affine", "compile_dynamic", "tracker_record",
                                      "blur_pad"), default="gmm_affine")
    ap.add_argument("--child", choices=("none", "false"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.child:
        calls = compile_calls(a.size, a.batch, None if a.child == "none" else False,
                              a.channel_max)
        print(json.dumps(calls))
        return
    if a.arm == "compile_dynamic":
        if a.device != "cpu":
            raise SystemExit("--arm compile_dynamic runs on CPU (the GPU's compile rows are "
                             "in benchmarks/gpu)")
        r = compile_dynamic(a.size, a.batch, a.channel_max, a.threads)
    elif a.arm == "blur_pad":
        r = blur_pad(a.size, a.batch, a.reps, torch.device(a.device), a.channel_max)
    elif a.arm == "tracker_record":
        r = tracker_record(a.size, a.batch, a.reps, torch.device(a.device), a.channel_max)
    else:
        r = gmm_affine(a.size, a.batch, a.reps, torch.device(a.device), a.channel_max)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = f"ab_{r['arm']}_{torch.device(a.device).type}_{a.size}_b{a.batch}"
    (a.out / f"{stem}.json").write_text(json.dumps(r, indent=1) + "\n")
    (a.out / f"{stem}.md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
