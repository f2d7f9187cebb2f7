#!/usr/bin/env python
"""Evaluate a testbed run: attribute regressor, sanity FD, directions, edit specificity.

    .venv/bin/python -m benchmarks.testbed.evaluate --run benchmarks/testbed/runs/cpu32

Reads runs/<name>/g_ema.safetensors + generator.json (strict load into Generator) and
checkpoint.pt (steps, training time; optional). Writes:
- runs/<name>/regressor.pt          the attribute regressor (reused if present)
- runs/<name>/directions.pt         InterFaceGAN-style directions {attr: [1, style_dim]}
- runs/<name>/ganspace_pca.pt       GANSpace PCA of the mapping ({"mean","comp","std"})
- results/testbed.json              the report (training, sanity, R², edit tables)
- results/testbed_samples.png       64 g_ema samples (fixed seed) next to 64 held-out images
- results/testbed_edits.png         InterFaceGAN edits (rows: direction × sample; columns
                                    −3σ … +3σ along the direction)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gani.testbed import attributes as A
from gani.testbed import directions as Dn
from benchmarks.testbed.core import sanity as S
from gani.testbed.faces import (ATTRIBUTES, TRAIN_RANGE, render_split, save_grid,
                                           to_tensor, to_uint8)

HERE = Path(__file__).resolve().parent


def load_run_generator(run: Path):
    from gani.safeload import load_safetensors
    from gani.models.stylegan2 import Generator
    cfg = json.loads((run / "generator.json").read_text())
    cfg["blur_kernel"] = tuple(cfg.get("blur_kernel", (1, 3, 3, 1)))
    G = Generator(**cfg)
    G.load_state_dict(load_safetensors(run / "g_ema.safetensors"), strict=True)
    return G.eval(), cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(HERE / "runs" / "cpu32"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-fd", type=int, default=2000, help="images per set in the FD figures")
    ap.add_argument("--n-fit", type=int, default=2000, help="generated samples for directions")
    ap.add_argument("--n-edit", type=int, default=128, help="samples the edit tables average")
    ap.add_argument("--reg-train", type=int, default=10_000)
    ap.add_argument("--reg-steps", type=int, default=1500)
    ap.add_argument("--retrain-regressor", action="store_true")
    ap.add_argument("--data-seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    report: dict = {"run": os.path.relpath(run, HERE.parents[1])}

    G, gcfg = load_run_generator(run)
    G = G.to(args.device)
    size = int(gcfg["size"])
    report["generator"] = {**gcfg, "blur_kernel": list(gcfg["blur_kernel"]),
                           "params": sum(p.numel() for p in G.parameters()),
                           "g_ema_safetensors_bytes": (run / "g_ema.safetensors").stat().st_size}
    ck = run / "checkpoint.pt"
    if ck.is_file():
        from gani.safeload import load_torch_file
        sd = load_torch_file(ck)
        report["training"] = {"steps": int(sd["step"]), "kimg": sd["nimg"] / 1000,
                              "train_minutes": round(sd["elapsed_s"] / 60, 1),
                              "config": json.loads(sd["config"])}
        del sd
    sess = run / "sessions.jsonl"
    if sess.is_file():
        report.setdefault("training", {})["sessions"] = [
            json.loads(l) for l in sess.read_text().splitlines() if l.strip()]
    report["hardware"] = {"device": args.device, "torch_threads": args.threads,
                          "cpu": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "note": "CPU shared with other jobs; 1 torch thread"}

    # ---------------- data + regressor
    t = time.time()
    tr_imgs, tr_lab = render_split(args.data_seed, "train", args.reg_train, size)
    te_imgs, te_lab = render_split(args.data_seed, "test", max(args.n_fd, 2000), size)
    sh_imgs, sh_lab = render_split(args.data_seed, "shifted", 1000, size)
    x_tr, y_tr = to_tensor(tr_imgs), torch.from_numpy(tr_lab)
    x_te, y_te = to_tensor(te_imgs), torch.from_numpy(te_lab)
    x_sh, y_sh = to_tensor(sh_imgs), torch.from_numpy(sh_lab)
    print(f"data rendered in {time.time() - t:.1f}s", flush=True)
    reg_path = run / "regressor.pt"
    if reg_path.is_file() and not args.retrain_regressor:
        reg = A.load_regressor(reg_path)
    else:
        t = time.time()
        reg = A.train_regressor(x_tr, y_tr, steps=args.reg_steps, log_every=250)
        A.save_regressor(reg, reg_path)
        print(f"regressor trained in {time.time() - t:.1f}s", flush=True)
    report["regressor"] = {
        "arch": "5 conv (32-64-64-128-128, BN, lrelu) + GAP + linear; MSE on standardised labels",
        "train_images": args.reg_train, "steps": args.reg_steps,
        "r2_test": A.evaluate_regressor(reg, x_te, y_te),
        "r2_shifted": A.evaluate_regressor(reg, x_sh, y_sh),
        "chance_r2": 0.0}
    print("regressor R² test:", report["regressor"]["r2_test"], flush=True)

    # ---------------- sanity FD
    t = time.time()
    n = args.n_fd
    x_gen = S.generate_images(G, n, seed=1)
    from gani.models.stylegan2 import Generator
    torch.manual_seed(0)
    G0 = Generator(**gcfg).eval()
    x_g0 = S.generate_images(G0, n, seed=1)
    extractors = {"regressor": reg, "randconv": S.RandomConvFeatures(seed=0).eval()}
    fd = {}
    for name, ex in extractors.items():
        f_te = S.features(ex, x_te[:n])
        fd[name] = {
            "trained_g_ema_vs_test": round(S.frechet_distance(S.features(ex, x_gen), f_te), 4),
            "untrained_G_vs_test": round(S.frechet_distance(S.features(ex, x_g0), f_te), 4),
            "train_data_vs_test": round(S.frechet_distance(S.features(ex, x_tr[:n]), f_te), 4),
            "shifted_data_vs_test": round(S.frechet_distance(
                S.features(ex, x_sh), S.features(ex, x_te[:len(x_sh)])), 4),
        }
    report["sanity_fd"] = {
        "n_per_set": n, "definition": "Fréchet distance between feature Gaussians; 'regressor' "
        "= attribute-regressor penultimate (128-d GAP) features, 'randconv' = fixed seeded "
        "random 3-layer conv net (176-d). Generated: g_ema, z seed 1, no truncation, const "
        "noise. 'shifted_data_vs_test' uses 1000 images per set.", **fd}
    print("FD:", json.dumps(fd), flush=True)
    # attribute statistics of generated samples vs held-out data (regressor-measured)
    p_gen = reg.predict(x_gen)
    report["generated_attribute_stats"] = {
        a: {"gen_mean": round(float(p_gen[:, j].mean()), 3),
            "gen_std": round(float(p_gen[:, j].std()), 3),
            "test_mean": round(float(y_te[:, j].mean()), 3),
            "test_std": round(float(y_te[:, j].std()), 3)}
        for j, a in enumerate(reg.attributes)}
    print(f"sanity figures in {time.time() - t:.1f}s", flush=True)

    # sample grid: 64 generated | 64 held-out
    g_u8, r_u8 = to_uint8(x_gen[:64]), to_uint8(x_te[:64])
    gap = np.full((64, size, 4, 3), 255, np.uint8)
    side = np.concatenate([g_u8, gap, r_u8], axis=2)
    save_grid(side, out / "testbed_samples.png", ncol=4, scale=3)

    # ---------------- directions
    t = time.time()
    w_fit = Dn.sample_w(G, args.n_fit, seed=2)
    attrs_fit = reg.predict(Dn.render_w(G, w_fit))
    ifg = Dn.fit_interfacegan(w_fit, attrs_fit, reg.attributes)
    dirs = {k: v["direction"] for k, v in ifg.items()}
    torch.save(dirs, run / "directions.pt")
    w_edit = Dn.sample_w(G, args.n_edit, seed=3)
    attr_std = attrs_fit.std(0).clamp_min(1e-6)
    eff = Dn.edit_effects(G, reg, w_edit, dirs, strength=1.5, attr_std=attr_std)
    gs = Dn.ganspace_directions(G, n_samples=5000, n_components=8, seed=4)
    torch.save(gs["pca"], run / "ganspace_pca.pt")
    eff_pca = Dn.edit_effects(G, reg, w_edit, gs["directions"], strength=1.5, attr_std=attr_std)
    report["interfacegan"] = {
        "fit": f"ridge regression of regressor-predicted attributes on W, {args.n_fit} samples "
               "(80/20 split), direction = unit normal in W applied to all W+ rows",
        "w_fit_r2_holdout": {k: round(v["r2_holdout"], 3) for k, v in ifg.items()},
        "edit_effects": eff,
        "generated_attribute_std": {a: round(float(s), 4)
                                    for a, s in zip(reg.attributes, attr_std)}}
    report["ganspace"] = {"n_samples": 5000, "std": [round(float(s), 4) for s in gs["pca"]["std"]],
                          "edit_effects": eff_pca,
                          "dominant_attribute": Dn.dominant_attribute(eff_pca)}
    print(f"directions in {time.time() - t:.1f}s", flush=True)
    print("specificity:", eff["target_over_mean_others"], flush=True)

    # edit grid: 3 directions × 3 samples, 7 strengths
    rows = []
    show = [a for a in ("smile", "yaw", "hair_hue", "skin_tone") if a in dirs]
    ks = [-3, -2, -1, 0, 1, 2, 3]
    for a in show:
        d = dirs[a].view(-1)
        sig = float((w_fit @ d).std())
        for i in range(3):
            ws = torch.stack([w_edit[i] + k * sig * d for k in ks])
            rows.append(to_uint8(Dn.render_w(G, ws)))
    save_grid(np.concatenate(rows), out / "testbed_edits.png", ncol=len(ks), scale=3)
    fig = {k: os.path.relpath(out / f"testbed_{k}.png", HERE) for k in ("samples", "edits")}
    report["figures"] = {"samples": f"{fig['samples']} (left 4 columns: g_ema, "
                         "right: held-out data)",
                         "edits": f"{fig['edits']} (rows: {show} × 3 samples; "
                                  f"columns {ks} σ along the direction)"}
    report["eval_seconds"] = round(time.time() - t_all, 1)
    report["written"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    (out / "testbed.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out / 'testbed.json'} in {time.time() - t_all:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
