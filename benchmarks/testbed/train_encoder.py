#!/usr/bin/env python
"""Train a small e4e for the testbed generator (``benchmarks.testbed.core.encoder``), then
evaluate it.

    .venv/bin/python -m benchmarks.testbed.train_encoder --minutes 30           # new
    .venv/bin/python -m benchmarks.testbed.train_encoder --minutes 20 --resume  # continue
    .venv/bin/python -m benchmarks.testbed.train_encoder --eval-only

Reads the generator of --run (runs/cpu32). Writes there: e4e_encoder.safetensors (weights in
the official `encoder.*` key layout + latent_avg) and e4e_encoder.json (config, step, train
time), encoder_state.pt (resume state, not committed), encoder_log.jsonl; and
results/testbed_e4e.json (evaluation) and results/testbed_e4e.png (rows: held-out faces |
e4e reconstruction | shifted faces | reconstruction). Evaluation: MSE of G(E(x)) at the
generator's size on 256 held-out and 64 shifted faces, and on 256 generated samples with
their latent error against the true W; the mean delta norm ‖ŵ_i − ŵ_0‖ (how far the codes
leave W, which e4e keeps small).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.testbed.core.encoder import (EncoderConfig, EncoderTrainer, encode_images,
                                             load_encoder)
from gani.testbed.faces import render_split, save_grid, to_tensor, to_uint8

HERE = Path(__file__).resolve().parent


def mean_delta_norm(w: torch.Tensor) -> float:
    """Mean ‖ŵ_i − ŵ_0‖ over the entries i ≥ 1 of W+ codes [N, L, D]."""
    return float((w[:, 1:] - w[:, :1]).norm(dim=2).mean())


def evaluate(G, run: Path, out: Path, n: int = 256) -> dict:
    from gani.testbed.directions import render_w, sample_w

    E, latent_avg, meta = load_encoder(run / "e4e_encoder.safetensors")
    size = meta["input_size"]
    res = {"encoder": meta, "n": {}}
    grid = []
    for split, k in (("test", n), ("shifted", n // 4)):
        x = to_tensor(render_split(0, split, k, G.size)[0])
        t = time.perf_counter()
        w = encode_images(E, latent_avg, x, size)
        res["encode_s_per_image"] = (time.perf_counter() - t) / k
        rec = render_w(G, w)
        res[f"mse_{split}"] = float((rec - x).square().mean())
        res[f"delta_norm_{split}"] = mean_delta_norm(w)
        res["n"][split] = k
        grid += [to_uint8(x[:16]), to_uint8(rec[:16])]
    wt = sample_w(G, n, seed=123)
    x = render_w(G, wt)
    w = encode_images(E, latent_avg, x, size)
    res["mse_generated"] = float((render_w(G, w) - x).square().mean())
    res["latent_mse_generated"] = float((w - wt[:, None]).square().mean())
    res["latent_mse_generated_mean_w"] = float((latent_avg[None] - wt[:, None]).square().mean())
    res["delta_norm_generated"] = mean_delta_norm(w)
    res["n"]["generated"] = n
    out.mkdir(parents=True, exist_ok=True)
    (out / "testbed_e4e.json").write_text(json.dumps(res, indent=1) + "\n")
    save_grid(np.concatenate(grid), out / "testbed_e4e.png", ncol=16, scale=3)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(HERE / "runs" / "cpu32"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-time budget of this call")
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="training device (cuda on a GPU machine); "
                    "the evaluation runs on the CPU")
    ap.add_argument("--ckpt-every", type=int, default=200)
    for f in EncoderConfig.__dataclass_fields__.values():
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from benchmarks.testbed.judge import hardware, load_run

    run, out = Path(args.run), Path(args.out)
    G = load_run(run)[0]
    if not args.eval_only:
        state = run / "encoder_state.pt"
        if args.resume:
            if not state.is_file():
                ap.error(f"--resume: no state at {state}")
            st = torch.load(state, weights_only=True)
            cfg = EncoderConfig(**st["config"])
        else:
            if state.exists():
                ap.error(f"{state} exists: pass --resume to continue it")
            cfg = EncoderConfig(**{k: getattr(args, k) for k in EncoderConfig.__dataclass_fields__})
        trainer = EncoderTrainer(G, cfg, device=args.device)
        if args.resume:
            trainer.load_state(st)
            print(f"resumed at step {trainer.step}", flush=True)
        log = open(run / "encoder_log.jsonl", "a")
        log.write(json.dumps({"event": "start", "step": trainer.step,
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "hardware": hardware(args.threads),
                              "device": args.device}) + "\n")
        t_end = time.time() + 60 * args.minutes

        def on_log(r):
            log.write(json.dumps(r) + "\n")
            log.flush()
            print(f"step {r['step']:5d}  rec {r['rec']:.4f}  lat {r['lat']:.4f}  "
                  f"delta {r['delta']:.2f}  active {r['active']}  {r['elapsed_s']:.0f}s",
                  flush=True)

        while trainer.step < args.max_steps and time.time() < t_end:
            left = (t_end - time.time()) / 60
            trainer.train(min(args.max_steps, trainer.step + args.ckpt_every), minutes=left,
                          on_log=on_log)
            trainer.save_state(state)
            trainer.save_encoder(run / "e4e_encoder.safetensors")
        log.write(json.dumps({"event": "end", "step": trainer.step,
                              "train_s": round(trainer.elapsed, 1)}) + "\n")
        log.close()
        print(f"stopped at step {trainer.step} ({trainer.elapsed / 60:.1f} train-minutes)",
              flush=True)
    res = evaluate(G.cpu(), run, out)
    print(json.dumps({k: v for k, v in res.items() if k != "encoder"}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
