#!/usr/bin/env python
"""Measure the testbed's edit reference once and write it next to the shipped assets.

    .venv/bin/python -m benchmarks.testbed.edit_reference            # ~1 200 renders, minutes

Every InterFaceGAN direction of `testbed-directions`, ±1.5 σ_d on `--n-ref` generated
samples (seed 3) of `testbed-generator`, read by `testbed-regressor`
(``gani.testbed.edits.EditContext``, as benchmarks/testbed/judge.py measures). Output:
gani/testbed/assets/edit_reference.pt (registry `testbed-edit-reference`; after writing it,
update its size and sha256 in gani/checkpoints/registry.py).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gani.checkpoints.store import require_verified
from gani.testbed.attributes import load_regressor
from gani.testbed.edits import EditContext, reference_record
from gani.testbed.load import load_directions, load_generator

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-ref", type=int, default=64)
    ap.add_argument("--n-pop", type=int, default=2000)
    ap.add_argument("--strength", type=float, default=1.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "gani/testbed/assets/edit_reference.pt"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    G, _ = load_generator(require_verified("testbed-generator"),
                          require_verified("testbed-generator-config"))
    reg = load_regressor(require_verified("testbed-regressor"))
    dirs = {k: v.reshape(-1) for k, v in
            load_directions(require_verified("testbed-directions")).items()}
    ctx = EditContext(G, reg, dirs, {"comp": torch.zeros(0, 1, G.style_dim)}, 0,
                      args.strength, args.n_pop, args.n_ref, min_ref_effect=0.15)
    torch.save(reference_record(ctx, args.n_pop, args.n_ref), args.out)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f}s")
    for n in ctx.directions:
        t = ctx.target[n]
        print(f"{n:15s} reference {float(ctx.reference[n][t]):+.3f}  consistency "
              f"{ctx.consistency[n]:.2f}  reliable {ctx.reliable[n]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
