"""GANI vs PTI vs W+ projection vs e4e-only (the start latent), and GANI ablations.

One command (CPU, 1 thread, a few minutes per suite):

    .venv/bin/python -m benchmarks.quality.run --suite main
    .venv/bin/python -m benchmarks.quality.run --suite ablations
    .venv/bin/python -m benchmarks.quality.run --suite main --generator testbed   # trained G

Generators: `demo` — a seeded random StyleGAN2 (rosinality layout; 64 px, style_dim 128,
n_mlp 4, channel multiplier 1, channel_max 64 by default); `testbed` — the generator trained
on procedural faces (benchmarks/testbed, `g_ema.safetensors` + `generator.json` of --run).
Targets: out of range — scikit-image's astronaut face crop and coffee (Lanczos to the
generator's size; the testbed swaps coffee for a face from the `shifted` split); near range —
the same generator with 5 % weight noise at a latent moved 30 % towards another random one
(the testbed uses held-out faces of its own distribution instead). Start latent: the mean W
latent for out-of-range targets, the unperturbed latent for near ones (e4e's role).

Every method gets the same steps (--steps) and the pixel loss L2 (LPIPS, identity and parsing
need weights that are not here: those terms are skipped, and LPIPS is reported as null).
Metrics (gani.metrics, the paper's protocol): L2 and MS-SSIM at 256 px, drift = locality_l2
(MSE between G(·; θ) and G(·; θ') on 8 fixed random W latents). "Equal time": the raw-MSE of
each run's loss curve at the step where it has used PTI's wall time for --steps steps (capped
at --steps). Results: <out>/<suite>_<generator>.json and .md, plus PNG plots.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gani.config import read_params
from gani.config.schema import TuneSection
from gani.losses import SimilarityLoss
from gani.models.stylegan2 import Generator
from gani.tuning import render, tune_images

ROOT = Path(__file__).resolve().parents[2]


def reparam(over: dict | None = None) -> tuple[str, dict]:
    """A GANI row in the reparam reading (θ' = θ − M_φ(g), paper Eq. 2), the one every "gani"
    row of results/ measured; the optimizer reading (GANI's default since the Pareto
    judgement) is compared in benchmarks/testbed/pareto.py."""
    return "gani", {"gmm.reading": "reparam", **(over or {})}


# name → (method, overrides of the params.yaml tune section). GANI variants are the reparam
# reading with the repo's other defaults: "gani" is `--set tune.method=gani
# --set tune.gmm.reading=reparam`.
MAIN = {
    "e4e-only": ("e4e", {}),
    "pti": ("pti", {}),
    "wplus_projection": ("wplus_projection", {}),
    "gani": reparam(),
}
ABLATIONS = {
    "pti": ("pti", {}),
    "gani": reparam(),
    "gani literal (no identity start: W₂ random + identity path + uniform b)":
        reparam({"gmm.zero_init_last": False, "gmm.identity_path": True,
                 "gmm.bias": "uniform", "gmm.pre_norm": "none"}),
    "gani blocks=1": reparam({"gmm.blocks": 1}),
    "gani blocks=4": reparam({"gmm.blocks": 4}),
    "gani pre_norm=none": reparam({"gmm.pre_norm": "none"}),
    "gani pre_norm=sn": reparam({"gmm.pre_norm": "sn"}),
    "gani pre_norm=in": reparam({"gmm.pre_norm": "in"}),
    "gani post_norm=none": reparam({"gmm.post_norm": "none"}),
    "gani post_norm=in": reparam({"gmm.post_norm": "in"}),
    "gani bias=uniform": reparam({"gmm.bias": "uniform"}),
    "gani gradient=current": reparam({"gmm.gradient_source": "current"}),
    "gani row_scale=grad_norm": reparam({"gmm.row_scale": "grad_norm"}),
    "gani ranger (warm-up 10)": reparam({"optimizer.name": "ranger",
                                         "optimizer.warmup_steps": 10}),
    "gani ranger (reference, no warm-up)": reparam({"optimizer.name": "ranger",
                                                    "optimizer.warmup_steps": 0}),
    "gani lr×0.1": reparam({"optimizer.lr": "×0.1"}),
    "gani lr×10": reparam({"optimizer.lr": "×10"}),
    "gani lr fan_in": reparam({"optimizer.lr_scaling": "fan_in"}),
    "pti lr 1e-3": ("pti", {"pti.lr": 1e-3}),
    "pti no locality": ("pti", {"pti.locality": False}),
}
# combinations found while searching (docs/method.md, "Search"); pareto: fit vs drift
EXPLORE = {
    "pti lr 1e-4": ("pti", {"pti.lr": 1e-4}),
    "gani lr×3": reparam({"optimizer.lr": "×3"}),
    "gani blocks=4 lr×3": reparam({"gmm.blocks": 4, "optimizer.lr": "×3"}),
    "gani ranger lr×10 (warm-up 10)": reparam({"optimizer.name": "ranger",
                                               "optimizer.warmup_steps": 10,
                                               "optimizer.lr": "×10"}),
    "gani feasibility reading (pre_norm none, lr 1e-5, no lr scaling)":
        reparam({"gmm.pre_norm": "none", "optimizer.lr": 1e-5, "optimizer.lr_scaling": "none"}),
    "gani pre_norm=none lr 1e-5 fan_in": reparam({"gmm.pre_norm": "none", "optimizer.lr": 1e-5}),
}
SUITES = {"main": MAIN, "ablations": ABLATIONS, "explore": EXPLORE,
          "all": {**MAIN, **ABLATIONS, **EXPLORE}}


# ---------------------------------------------------------------------- setup
def load_generator(kind: str, run: Path, size: int, channel_max: int, seed: int = 0):
    if kind == "testbed":
        from safetensors.torch import load_file

        G = Generator(**json.loads((run / "generator.json").read_text()))
        G.load_state_dict(load_file(str(run / "g_ema.safetensors")), strict=True)
    else:
        torch.manual_seed(seed)
        G = Generator(size, style_dim=128, n_mlp=4, channel_multiplier=1,
                      channel_max=channel_max)
        # A random StyleGAN2 draws far outside [−1, 1] (std ≈ 2 here); scale the ToRGB weights
        # (not demodulated: the output is linear in them) so G(w) has std 0.5 over random w,
        # like a trained generator, and targets in [−1, 1] are reachable.
        with torch.no_grad():
            w = G.mapping(torch.randn(64, G.style_dim, generator=torch.Generator()
                                      .manual_seed(seed + 1)))
            std = float(G.synthesis(w, noise_mode="const").std())
            for name, m in G.modulated_convs().items():
                if name.startswith("to_rgb"):
                    m.weight.mul_(0.5 / std)
    return G.eval().requires_grad_(False)


def photo(name: str, size: int) -> torch.Tensor:
    from PIL import Image
    from skimage import data

    if name == "astronaut":
        arr = data.astronaut()[20:220, 130:330]
    else:
        arr = data.coffee()
        h, w = arr.shape[:2]
        s = min(h, w)
        arr = arr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = Image.fromarray(arr).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255) \
        .sub(0.5).div(0.5).unsqueeze(0)


@torch.no_grad()
def make_targets(G, kind: str, seed: int = 0):
    """(names, targets [N,3,H,W], start latents [N, n_latent, D])."""
    L = G.n_latent
    w_mean = G.mean_latent(4096, generator=torch.Generator().manual_seed(seed))
    names, xs, ws = [], [], []
    if kind == "testbed":
        from gani.testbed.faces import make_face, to_tensor

        for name, split, idx in [("face (held-out)", "test", 0), ("face (held-out) 2", "test", 1),
                                 ("face (shifted split)", "shifted", 0)]:
            img, _ = make_face(0, split, idx, size=G.size)
            names.append(name)
            xs.append(to_tensor(img[None]))
            ws.append(w_mean.unsqueeze(1).repeat(1, L, 1))
        names.append("astronaut")
        xs.append(photo("astronaut", G.size))
        ws.append(w_mean.unsqueeze(1).repeat(1, L, 1))
    else:
        for name in ("astronaut", "coffee"):
            names.append(name)
            xs.append(photo(name, G.size))
            ws.append(w_mean.unsqueeze(1).repeat(1, L, 1))
        gen = torch.Generator().manual_seed(seed + 11)
        for k in range(2):
            z = torch.randn(2, G.style_dim, generator=gen)
            w_a, w_b = G.mapping(z)
            w_start = w_a.view(1, 1, -1).repeat(1, L, 1)
            w_tgt = (w_a + 0.3 * (w_b - w_a)).view(1, 1, -1).repeat(1, L, 1)
            noisy = {n: 0.05 * m.weight[0].std() * torch.randn(m.weight.shape[1:], generator=gen)
                     for n, m in G.modulated_convs().items()}
            names.append(f"near {k + 1}")
            xs.append(G.synthesis(w_tgt, noise_mode="const", weight_deltas=noisy).clamp(-1, 1))
            ws.append(w_start)
    return names, torch.cat(xs), torch.cat(ws)


def make_cfg(base: TuneSection, overrides: dict, steps: int, batch: int) -> TuneSection:
    cfg = base.model_copy(deep=True)
    cfg.steps = steps
    cfg.projection.n_mean_latent = 4096
    cfg.batch_size = batch
    for key, value in overrides.items():
        obj = cfg
        *path, last = key.split(".")
        for p in path:
            obj = getattr(obj, p)
        if isinstance(value, str) and value.startswith("×"):
            value = getattr(obj, last) * float(value[1:])
        setattr(obj, last, value)
    return cfg


# ---------------------------------------------------------------------- run
def evaluate(G, names, targets, results) -> list[dict]:
    from gani.metrics import compute_metrics

    rows = []
    with torch.no_grad():
        for i, r in enumerate(results):
            recon = render(G, r)
            m = compute_metrics(targets[i], recon, G=G, weight_deltas=r.deltas or None,
                                locality_n=8, locality_seed=1234)
            curve = r.parts.get("rec", r.loss_curve)
            rows.append({"target": names[i], "l2": m["l2"], "ms_ssim": m["ms_ssim"],
                         "lpips": m["lpips"], "drift": m["locality_l2"],
                         "rec_start": curve[0], "rec_end": curve[-1], "error": r.error,
                         "rec_curve": curve})
    return rows


def run_suite(args) -> dict:
    torch.set_num_threads(args.threads)
    G = load_generator(args.generator, Path(args.run), args.size, args.channel_max)
    names, targets, w0 = make_targets(G, args.generator)
    base = TuneSection(**read_params(ROOT / "params.yaml")["tune"])
    variants = SUITES[args.suite]
    if args.only:
        wanted = [s.strip() for s in args.only.split(",")]
        unknown = [w for w in wanted if w not in SUITES["all"]]
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; known: {sorted(SUITES['all'])}")
        variants = {k: SUITES["all"][k] for k in wanted}
    loss = SimilarityLoss(base.loss)  # no LPIPS/id/parser weights here: L2 only
    gen_info = None
    if args.generator == "testbed":
        import hashlib

        f = Path(args.run) / "g_ema.safetensors"
        gen_info = {"file": str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f),
                    "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
        log = Path(args.run) / "log.jsonl"
        if log.exists():
            last = json.loads(log.read_text().strip().splitlines()[-1])
            gen_info.update(step=last.get("step"), kimg=last.get("kimg"))
    out = {"suite": args.suite, "generator": args.generator, "generator_info": gen_info,
           "steps": args.steps,
           "size": G.size, "channels": sorted(set(G.channels.values())),
           "targets": names, "threads": args.threads, "machine": platform.processor() or
           platform.machine(), "loss_terms": loss.active_terms(),
           "skipped_terms": loss.skipped_terms(), "defaults": base.model_dump(), "runs": {}}
    pti_seconds = None
    warm = make_cfg(base, {}, 2, len(names))  # warm up kernels and allocator before timing
    tune_images("pti", G, targets, w0, warm, loss)
    order = sorted(variants, key=lambda k: variants[k][0] != "pti")  # PTI first: time budget
    for name in order:
        method, over = variants[name]
        cfg = make_cfg(base, over, args.steps, len(names))
        t0 = time.perf_counter()
        res = tune_images(method, G, targets, w0, cfg, loss)
        wall = time.perf_counter() - t0
        rows = evaluate(G, names, targets, res)
        steps = max(len(res[0].loss_curve) - 1, 1)
        s_step = wall / steps if method != "e4e" else 0.0
        if name == "pti":
            pti_seconds = wall
        eq_step = None
        if pti_seconds and method != "e4e":
            eq_step = min(steps, int(pti_seconds / s_step)) if s_step > 0 else steps
            for row in rows:
                row["rec_equal_time"] = row["rec_curve"][eq_step]
        out["runs"][name] = {"method": method, "overrides": over,
                             "config": {k: cfg.model_dump()[k] for k in ("gmm", "optimizer")}
                             if method == "gani" else None,
                             "seconds": wall, "s_per_step_batch": s_step,
                             "equal_time_step": eq_step, "per_target": rows}
        mean = lambda k: _mean([r[k] for r in rows])  # noqa: E731
        print(f"{name:60s} L2 {mean('l2'):.4f}  MS-SSIM {mean('ms_ssim'):.3f}  "
              f"drift {mean('drift'):.4f}  {s_step:.2f} s/step  "
              f"errors {[r['error'] for r in rows if r['error']]}", flush=True)
        if args.grid and name in ("e4e-only", "pti", "wplus_projection", "gani"):
            out.setdefault("_renders", {})[name] = [render(G, r).clamp(-1, 1) for r in res]
    out["_targets"] = targets
    return out


def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else None


# ---------------------------------------------------------------------- report
def write_report(out: dict, path: Path) -> None:
    renders = out.pop("_renders", {})
    targets = out.pop("_targets")
    path.parent.mkdir(parents=True, exist_ok=True)
    for run in out["runs"].values():
        for row in run["per_target"]:
            row["rec_curve"] = [round(v, 6) for v in row["rec_curve"]]
    path.with_suffix(".json").write_text(json.dumps(out, indent=1))
    lines = [f"# Quality: {out['suite']} suite, {out['generator']} generator "
             f"({out['size']} px, C ∈ {out['channels']}), {out['steps']} steps",
             "", f"Loss terms: {out['loss_terms']}; skipped: {out['skipped_terms']}. "
             "LPIPS metric: null (no AlexNet weights here).", "",
             "Mean over targets " + ", ".join(out["targets"]) + ".", "",
             "MS-SSIM: the reference implementation's NaN (negative contrast on a poor fit) "
             "drops a target from its mean; (k/N) says how many remain.", "",
             "| variant | L2 ↓ | MS-SSIM ↑ | drift ↓ | MSE @ equal time ↓ | s/step (batch) |",
             "|---|---|---|---|---|---|"]
    default_cfg = {k: out["defaults"][k] for k in ("gmm", "optimizer")}
    for name, run in out["runs"].items():
        rows = run["per_target"]
        m = {k: _mean([r.get(k) for r in rows]) for k in ("l2", "ms_ssim", "drift",
                                                          "rec_equal_time")}
        f = lambda v, d=4: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
        eq = f(m["rec_equal_time"])
        if run["equal_time_step"] is not None:
            eq += f" (step {run['equal_time_step']})"
        n_ok = sum(r["ms_ssim"] is not None for r in rows)
        ms = f(m["ms_ssim"], 3) + ("" if n_ok == len(rows) else f" ({n_ok}/{len(rows)})")
        label = name
        if run["method"] == "gani" and name != "gani" and run["config"] == default_cfg:
            label += " (= default)"
        lines.append(f"| {label} | {f(m['l2'])} | {ms} | {f(m['drift'])} | "
                     f"{eq} | {run['s_per_step_batch']:.2f} |")
    lines += ["", "Per target (L2 / drift):", "",
              "| variant | " + " | ".join(out["targets"]) + " |",
              "|---|" + "---|" * len(out["targets"])]
    for name, run in out["runs"].items():
        cells = [f"{r['l2']:.4f} / {r['drift']:.4f}" for r in run["per_target"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(out, path, renders, targets)


def plot(out: dict, path: Path, renders: dict, targets) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = out["targets"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), squeeze=False)
    for j, t in enumerate(names):
        ax = axes[0, j]
        for name, run in out["runs"].items():
            if run["method"] == "e4e":
                continue
            c = run["per_target"][j]["rec_curve"]
            main = name in ("pti", "wplus_projection", "gani")
            ax.plot(c, lw=2 if main else 0.8, alpha=1 if main else 0.6,
                    label=name if (j == 0) else None)
        ax.set_yscale("log")
        ax.set_title(t)
        ax.set_xlabel("step")
        ax.set_ylabel("MSE")
    fig.legend(loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.02 - 0.03 *
                                                                        len(out["runs"]) / 3))
    fig.tight_layout()
    fig.savefig(path.with_name(path.stem + "_curves.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, run in out["runs"].items():
        if run["method"] == "e4e":
            continue
        l2 = _mean([r["l2"] for r in run["per_target"]])
        dr = _mean([r["drift"] for r in run["per_target"]])
        if l2 is None or dr is None:
            continue
        style = {"pti": ("s", "tab:red"), "gani": ("o", "tab:blue")}.get(
            run["method"], ("^", "tab:green"))
        ax.scatter(dr + 1e-6, l2, s=34, marker=style[0], color=style[1])
        ax.annotate(name.replace("gani ", "")[:28], (dr + 1e-6, l2), fontsize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("drift (locality L2 on 8 random W latents) ↓")
    ax.set_ylabel("reconstruction L2 ↓")
    ax.set_title(f"{out['suite']} / {out['generator']}: fit vs drift at {out['steps']} steps "
                 "(■ PTI, ● GANI, ▲ other)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path.with_name(path.stem + "_fit_vs_drift.png"), dpi=110)
    plt.close(fig)

    if renders:
        from torchvision.utils import save_image

        rows = [targets] + [torch.cat(v) for v in renders.values()]
        save_image(torch.cat(rows).add(1).div(2), path.with_name(path.stem + "_grid.png"),
                   nrow=len(names), padding=1)
        (path.with_name(path.stem + "_grid.txt")).write_text(
            "rows: target, " + ", ".join(renders) + "\ncolumns: " + ", ".join(names) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", choices=sorted(SUITES), default="main")
    ap.add_argument("--only", default="", help="comma-separated variant names (any suite)")
    ap.add_argument("--generator", choices=["demo", "testbed"], default="demo")
    ap.add_argument("--run", default=str(ROOT / "benchmarks/testbed/runs/cpu32"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channel-max", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/quality/results"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--no-grid", dest="grid", action="store_false")
    args = ap.parse_args(argv)
    out = run_suite(args)
    stem = f"{args.suite}_{args.generator}" + (f"_{args.tag}" if args.tag else "")
    write_report(out, Path(args.out) / stem)
    print(f"wrote {Path(args.out) / stem}.json/.md/_*.png")


if __name__ == "__main__":
    main()
