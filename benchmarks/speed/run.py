"""Tuning speed: s/step and images/hour vs batch size, GMM overhead vs PTI, peak memory.

    .venv/bin/python -m benchmarks.speed.run                      # CPU, 64 px demo-size G
    .venv/bin/python -m benchmarks.speed.run --device cuda --size 1024 --dtype bf16
    .venv/bin/python -m benchmarks.speed.run --device cuda --size 256 --dtype fp32

A seeded random StyleGAN2 of the official architecture at --size (channel multiplier 2,
channel_max 512 on CUDA; on CPU the demo shape: multiplier 1, channel_max 64, style_dim 128
unless overridden). Per batch size B and method (gani, pti) the tuner runs k₁ and k₂ steps
and s/step = (t₂ − t₁)/(k₂ − k₁), so the one-time setup (GANI's gradient at θ, module
creation) is excluded and reported separately. GANI is its reparam reading (what results/
measured; every reading's step cost is in benchmarks/gpu). images/hour = B · 3600 / (setup +
steps · s/step) with 300 GANI steps (the profile's tune.steps) and 350 PTI steps (the PTI
paper's count). Both methods run the Eq. 5 regularizer (1 latent per step), L2 only (no
LPIPS weights here; on a GPU box with them, LPIPS at 256 px would add a small constant).
Peak memory: CUDA max_memory_allocated; CPU peak-RSS growth of a k₂-step run in a fresh
process (gani.metrics.ResourceMeter; the process's allocator would otherwise reuse memory
freed by the timing runs). A batch that does not fit is reported as OOM.
Results: <out>/speed_<device>_<size>_<dtype>.json/.md/.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from gani.config import read_params
from gani.config.schema import TuneSection
from gani.losses import SimilarityLoss
from gani.metrics import ResourceMeter
from gani.models.stylegan2 import Generator
from gani.tuning import TuningOOM, tune_images

ROOT = Path(__file__).resolve().parents[2]

FULL_STEPS = {"gani": 300, "pti": 350}


def timed(method, G, x, w, cfg, loss, steps, device):
    cfg = cfg.model_copy(deep=True)
    cfg.steps = steps
    cfg.batch_size = x.shape[0]
    with ResourceMeter(device) as meter:
        tune_images(method, G, x, w, cfg, loss)
    return meter.seconds, meter.peak_mem_bytes


def cpu_peak(argv, method: str, batch: int):
    import subprocess

    args = argv if argv is not None else sys.argv[1:]
    cmd = [sys.executable, "-m", "benchmarks.speed.run", *args, "--peak-only", f"{method},{batch}"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_mem_bytes"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=None, help="default 64 (cpu) / 1024 (cuda)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--steps", default="2,5", help="k1,k2 steps timed")
    ap.add_argument("--channel-max", type=int, default=None)
    ap.add_argument("--channel-multiplier", type=int, default=None)
    ap.add_argument("--style-dim", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="gani,pti")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/speed/results"))
    ap.add_argument("--peak-only", default=None, help=argparse.SUPPRESS)  # "method,B"
    args = ap.parse_args(argv)

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.set_num_threads(args.threads)
    size = args.size or (1024 if cuda else 64)
    cmax = args.channel_max or (512 if cuda else 64)
    cmul = args.channel_multiplier or (2 if cuda else 1)
    sdim = args.style_dim or (512 if cuda else 128)
    torch.manual_seed(0)
    G = Generator(size, style_dim=sdim, n_mlp=8 if cuda else 4, channel_multiplier=cmul,
                  channel_max=cmax).to(dev).eval().requires_grad_(False)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    base = TuneSection(**read_params(ROOT / "params.yaml")["tune"])
    base.precision = args.dtype
    base.gmm.reading = "reparam"  # the reading of results/ (module doc)
    loss = SimilarityLoss(base.loss)
    k1, k2 = (int(s) for s in args.steps.split(","))
    with torch.no_grad():
        w_mean = G.mean_latent(1000)
    n_params = sum(m.weight.numel() for m in G.modulated_convs().values())
    out = {"device": torch.cuda.get_device_name(dev) if cuda else
           (platform.processor() or platform.machine()), "threads": args.threads,
           "size": size, "channel_max": cmax, "channel_multiplier": cmul, "style_dim": sdim,
           "dtype": args.dtype, "modulated_conv_params": n_params,
           "channels": sorted(set(G.channels.values())), "timed_steps": [k1, k2],
           "gmm": base.gmm.model_dump(), "rows": []}
    gen = torch.Generator().manual_seed(0)
    if args.peak_only:  # child process: the peak-RSS growth of one fresh run (CPU)
        method, B = args.peak_only.split(",")
        B = int(B)
        x = (torch.rand(B, 3, size, size, generator=gen) * 2 - 1).to(dev)
        w = w_mean.unsqueeze(1).repeat(B, G.n_latent, 1)
        _, peak = timed(method, G, x, w, base, loss, k2, dev)
        print(json.dumps({"peak_mem_bytes": peak}))
        return
    for method in args.methods.split(","):
        for B in (int(b) for b in args.batch_sizes.split(",")):
            x = (torch.rand(B, 3, size, size, generator=gen) * 2 - 1).to(dev)
            w = w_mean.unsqueeze(1).repeat(B, G.n_latent, 1)
            row = {"method": method, "batch": B}
            try:
                timed(method, G, x, w, base, loss, 1, dev)  # warm-up
                t1, _ = timed(method, G, x, w, base, loss, k1, dev)
                t2, peak = timed(method, G, x, w, base, loss, k2, dev)
                if not cuda:  # RSS growth is only meaningful in a fresh process
                    peak = cpu_peak(argv, method, B)
                s_step = (t2 - t1) / (k2 - k1)
                setup = max(t1 - k1 * s_step, 0.0)
                full = FULL_STEPS[method]
                row.update(s_per_step=s_step, s_per_step_per_image=s_step / B,
                           setup_s=setup, peak_mem_bytes=peak,
                           images_per_hour=B * 3600.0 / (setup + full * s_step),
                           full_steps=full)
            except TuningOOM as exc:
                row.update(error=f"OOM: {exc}")
            print(json.dumps(row), flush=True)
            out["rows"].append(row)
            if cuda:
                torch.cuda.empty_cache()
    for r in out["rows"]:
        if r["method"] == "gani" and "s_per_step" in r:
            p = next((q for q in out["rows"] if q["method"] == "pti" and q["batch"] == r["batch"]
                      and "s_per_step" in q), None)
            if p:
                r["gmm_overhead_vs_pti"] = r["s_per_step"] / p["s_per_step"]
    write(out, Path(args.out) / f"speed_{dev.type}_{size}_{args.dtype}")


def write(out: dict, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
    lines = [f"# Speed: {out['device']} ({out['threads']} thread(s)), {out['size']} px, "
             f"C ∈ {out['channels']}, {out['dtype']}", "",
             "| method | batch | s/step | s/step/image | setup s | images/hour | "
             "GANI/PTI step | peak MiB |", "|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['batch']} | {r['error']} | | | | | |")
            continue
        ov = r.get("gmm_overhead_vs_pti")
        pk = r["peak_mem_bytes"]
        lines.append(f"| {r['method']} | {r['batch']} | {r['s_per_step']:.3f} | "
                     f"{r['s_per_step_per_image']:.3f} | {r['setup_s']:.2f} | "
                     f"{r['images_per_hour']:.0f} | {'' if ov is None else f'{ov:.2f}×'} | "
                     f"{'' if pk is None else f'{pk / 2**20:.0f}'} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for method in sorted({r["method"] for r in out["rows"]}):
        rs = [r for r in out["rows"] if r["method"] == method and "s_per_step" in r]
        axes[0].plot([r["batch"] for r in rs], [r["images_per_hour"] for r in rs], "o-",
                     label=method)
        axes[1].plot([r["batch"] for r in rs], [r["s_per_step_per_image"] for r in rs], "o-",
                     label=method)
    axes[0].set_ylabel("images / hour (full tuning)")
    axes[1].set_ylabel("s / step / image")
    for ax in axes:
        ax.set_xlabel("batch size")
        ax.set_xscale("log", base=2)
        ax.legend()
    fig.suptitle(f"{out['device']}, {out['size']} px, {out['dtype']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(stem.with_name(stem.name + ".png"), dpi=110)
    plt.close(fig)
    print(f"wrote {stem}.json/.md/.png")


if __name__ == "__main__":
    main()
