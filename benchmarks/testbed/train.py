#!/usr/bin/env python
"""Train the testbed StyleGAN2 on the procedural faces: one command, resumable.

    .venv/bin/python -m benchmarks.testbed.train --minutes 50            # new run "cpu32"
    .venv/bin/python -m benchmarks.testbed.train --minutes 50 --resume   # continue it
    .venv/bin/python -m benchmarks.testbed.train --device cuda --minutes 30 --name gpu32

Writes benchmarks/testbed/runs/<name>/: checkpoint.pt (full resume state), g_ema.safetensors
(official g_ema key layout; `Generator(**generator.json)` loads it strictly), generator.json,
config.json, samples/step_*.png, log.jsonl. At the end (unless --no-eval) it runs
benchmarks.testbed.evaluate on the run (regressor, sanity FD, directions, report).
With --resume the architecture and hyper-parameters come from the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.testbed.core.train import TrainConfig, Trainer, train

HERE = Path(__file__).resolve().parent


def parse_channels(text: str) -> dict:
    """"4:256,8:256,16:128,32:64" → {4: 256, 8: 256, 16: 128, 32: 64}."""
    try:
        return {int(r): int(c) for r, c in (item.split(":") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RES:C,RES:C,..., got {text!r}") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="cpu32", help="run name (folder under runs/)")
    ap.add_argument("--runs-dir", default=str(HERE / "runs"))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--minutes", type=float, default=50.0, help="wall-time budget of this call")
    ap.add_argument("--max-steps", type=int, default=None, help="stop at this total step")
    ap.add_argument("--resume", action="store_true", help="continue runs/<name>/checkpoint.pt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--style-dim", type=int, default=256)
    ap.add_argument("--n-mlp", type=int, default=4)
    ap.add_argument("--channel-max", type=int, default=128)
    ap.add_argument("--d-channel-max", type=int, default=None, help="default: --channel-max")
    ap.add_argument("--channels", type=parse_channels, default=None, metavar="RES:C,...",
                    help="per-resolution channels of G (and D), e.g. 4:256,8:256,16:128,32:64; "
                         "replaces the --channel-max table")
    ap.add_argument("--d-channels", type=parse_channels, default=None, metavar="RES:C,...",
                    help="per-resolution channels of D (default: --channels)")
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--r1-gamma", type=float, default=0.05)
    ap.add_argument("--mixing", type=float, default=0.5)
    ap.add_argument("--ema-kimg", type=float, default=2.0)
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--sample-every", type=int, default=250)
    ap.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    run_dir = Path(args.runs_dir) / args.name
    ckpt = run_dir / "checkpoint.pt"
    if args.resume:
        if not ckpt.is_file():
            ap.error(f"--resume: no checkpoint at {ckpt}")
        cfg = Trainer.config_from_checkpoint(ckpt)
    else:
        if ckpt.exists():
            ap.error(f"{ckpt} exists: pass --resume to continue it or choose another --name")
        cfg = TrainConfig(size=args.size, style_dim=args.style_dim, n_mlp=args.n_mlp,
                          channel_max=args.channel_max,
                          d_channel_max=args.d_channel_max or args.channel_max,
                          channels=args.channels, d_channels=args.d_channels,
                          batch=args.batch, lr=args.lr, r1_gamma=args.r1_gamma,
                          mixing=args.mixing, ema_kimg=args.ema_kimg, n_train=args.n_train,
                          seed=args.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    trainer = Trainer(cfg, device=args.device)
    if args.resume:
        trainer.load(ckpt)
        print(f"resumed {ckpt} at step {trainer.step} ({trainer.nimg / 1000:.1f} kimg)",
              flush=True)
    print(f"data + models ready in {time.time() - t0:.1f}s; G params "
          f"{sum(p.numel() for p in trainer.G.parameters()):,}, D params "
          f"{sum(p.numel() for p in trainer.D.parameters()):,}", flush=True)
    import dataclasses
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    (run_dir / "generator.json").write_text(json.dumps(
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in trainer.G.config().items()},
        indent=2) + "\n")
    with open(run_dir / "sessions.jsonl", "a") as f:
        f.write(json.dumps({"event": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "step": trainer.step, "device": args.device,
                            "threads": args.threads, "host": platform.node(),
                            "cpu": platform.processor() or platform.machine(),
                            "torch": torch.__version__}) + "\n")
    res = train(trainer, run_dir, minutes=args.minutes, max_steps=args.max_steps,
                ckpt_every=args.ckpt_every, sample_every=args.sample_every,
                progress=not args.no_progress)
    with open(run_dir / "sessions.jsonl", "a") as f:
        f.write(json.dumps({"event": "end", "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            **res}) + "\n")
    print(f"stopped at step {res['step']} ({res['kimg']:.1f} kimg, {res['train_s'] / 60:.1f} "
          f"train-minutes in total)", flush=True)
    if not args.no_eval:
        from benchmarks.testbed.evaluate import main as evaluate_main
        return evaluate_main(["--run", str(run_dir), "--device", args.device,
                              "--threads", str(args.threads)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
