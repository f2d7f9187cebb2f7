#!/usr/bin/env python
"""The Pareto judgement (issue 13): every tuning configuration's fit against its drift, on
both trained testbeds, from the testbed e4e's start, at 100 and 300 steps.

    # on a GPU machine (the lent H200: one command, ≈ 6 min; tuning on the GPU, the
    # assessment on its CPUs, `--workers` processes side by side):
    python -m benchmarks.testbed.pareto run --device cuda --workers 8 --out OUT
    # here, from the merged files it leaves (OUT/pareto_<testbed>.json):
    .venv/bin/python -m benchmarks.testbed.pareto report OUT/pareto_*.json
    # CPU dry run (minutes): 1 + 1 targets, 3 and 5 steps, a few configurations
    .venv/bin/python -m benchmarks.testbed.pareto run --device cpu --workers 2 \
        --targets 1,1 --real "" --steps 3,5 --configs "start,pti lr 0.0003,gani reparam/channels lr×1"

The grid (`grid()`), every configuration from the same e4e start latent:

- `start`: the testbed e4e alone; `projection`: the W+ projector continued from it (drift 0);
- PTI at lr 1e-4, 3e-4 (PTI's own) and 1e-3;
- GANI, reading `reparam` (θ' = θ − M_φ(g), paper Eq. 2) × sharing `channels` (paper),
  `layer`, `channels_affine`, each at 1/3, 1 and 3 × the module learning rate of params.yaml;
- GANI, reading `optimizer` (M_φ(g_t) drives PTI's Adam) × the same three sharings, each at
  PTI's three step sizes (its base step is PTI's: with φ frozen it *is* PTI at that lr).

Each configuration is one batch of all targets (image i of a batch = image i alone, tested in
tests/tuning), run for each budget in `--steps` separately. Assessment per target as in
`benchmarks.testbed.judge` (`assess`): L2, MS-SSIM, drift (locality L2 of G(·; θ) vs
G(·; θ') on 8 fixed W), attribute error, edit ratio / leakage / change vs start.

Equal time: GPU wall times of processes that share one GPU are not each method's cost, and
a 32-px step says little about a 1024-px one. The equal-time column therefore uses the step
costs measured at the product's scale (`benchmarks/gpu/results/h200_1024.json`, fp32, batch
1): a method whose 1024-px step costs r × PTI's gets k = ⌊N / r⌋ steps, and its training MSE
is read off its N-step curve at step k (exact for PTI and GANI: Adam without a schedule, so
a k-step run is the first k steps of the N-step run). The projector is not in that benchmark
(its step has no weight gradients, so it costs at most PTI's): its column is left empty.

Front: per budget and split group, a configuration is on the Pareto front when no other has
both a lower-or-equal mean L2 and a lower-or-equal mean drift, one of them strictly lower.
The report gives that front, and a second one among the methods that tune the generator
(PTI and GANI: what `tune.method` chooses from), which the drift-0 projection can hide.
"""
from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNS = {"cpu32": HERE / "runs" / "cpu32", "cpu32v": HERE / "runs" / "cpu32v"}
TESTBED_TITLES = {"cpu32": "testbed cpu32 (C = 128 at every layer)",
                  "cpu32v": "testbed cpu32v (C = 256/128/64/32 at 4/8/16/32 px)"}
PTI_LRS = (1e-4, 3e-4, 1e-3)
REPARAM_LR_FACTORS = ((1 / 3, "×1/3"), (1.0, "×1"), (3.0, "×3"))
SHARINGS = ("channels", "layer", "channels_affine")
GPU_RESULTS = ROOT / "benchmarks" / "gpu" / "results" / "h200_1024.json"


# ---------------------------------------------------------------------- the grid
def base_tune():
    """params.yaml's tune section (every configuration's base)."""
    from gani.config import read_params
    from gani.config.schema import TuneSection

    return TuneSection(**read_params(ROOT / "params.yaml")["tune"])


def grid(reparam_lr: float) -> dict[str, tuple[str, dict]]:
    """name → (tune method, overrides of params.yaml's tune section), in report order."""
    g: dict[str, tuple[str, dict]] = {
        "start": ("e4e", {}),
        "projection": ("wplus_projection", {"projection.latent_noise": 0.0}),
    }
    for lr in PTI_LRS:
        g[f"pti lr {lr:g}"] = ("pti", {"pti.lr": lr})
    for sharing in SHARINGS:
        for f, label in REPARAM_LR_FACTORS:
            g[f"gani reparam/{sharing} lr{label}"] = (
                "gani", {"gmm.reading": "reparam", "gmm.sharing": sharing,
                         "optimizer.lr": reparam_lr * f})
    for sharing in SHARINGS:
        for lr in PTI_LRS:
            g[f"gani optimizer/{sharing} lr {lr:g}"] = (
                "gani", {"gmm.reading": "optimizer", "gmm.sharing": sharing, "pti.lr": lr})
    return g


def family(name: str) -> str:
    """start | projection | pti | gani reparam | gani optimizer."""
    if name.startswith("gani "):
        return name.split("/")[0]
    return name.split(" ")[0]


def gpu_variant(name: str) -> str | None:
    """The row name of this configuration in the 1024-px GPU benchmark."""
    if name.startswith("pti"):
        return "pti"
    if name.startswith("gani "):
        reading, sharing = name[len("gani "):].split(" ")[0].split("/")
        return f"gani[{reading},{sharing}]"
    return None


def step_cost_ratios(path: Path = GPU_RESULTS, dtype: str = "fp32", batch: int = 1) -> dict:
    """variant → its s/step over PTI's, measured at 1024 px on the H200 ({} if absent)."""
    if not path.is_file():
        return {}
    rows = [r for r in json.loads(path.read_text()).get("tune", [])
            if r.get("dtype") == dtype and r.get("batch") == batch and r.get("s_per_step")
            and not r.get("channels_last")]
    pti = next((r["s_per_step"] for r in rows if r["variant"] == "pti"), None)
    if pti is None:
        return {}
    return {r["variant"]: r["s_per_step"] / pti for r in rows}


# ---------------------------------------------------------------------- one worker
def _to_cpu(r):
    """A TunedImage with every tensor on the CPU (assessment runs there)."""
    r = copy.copy(r)
    r.latent = r.latent.detach().float().cpu()
    r.deltas = {k: v.detach().float().cpu() for k, v in r.deltas.items()}
    if r.noise is not None:
        r.noise = [n.detach().float().cpu() for n in r.noise]
    r.state = {}
    return r


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_worker(args) -> int:
    """Run the jobs of --jobs (JSON list of [config, steps]) on one testbed; write --part."""
    from benchmarks.quality import run as Q
    from benchmarks.testbed import judge as J
    from gani.losses import SimilarityLoss
    from gani.testbed.edits import EditContext
    from gani.tuning import tune_images

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    deadline = t0 + args.deadline
    run = RUNS[args.testbed]
    G, reg, ifg, pca, gen_info = J.load_run(run)
    n_test, n_shifted = (int(v) for v in args.targets.split(","))
    real = [s.strip() for s in args.real.split(",") if s.strip()]
    targets_info, targets = J.make_targets(G, reg, n_test, n_shifted, real)
    N = targets.shape[0]
    pred_target = reg.predict(targets)
    for t, p in zip(targets_info, pred_target):
        if t["labels"] is not None:
            t["attr_err_target"] = float(((p - torch.tensor(t["labels"])).abs()
                                          / reg.label_std).mean())
    base = base_tune()
    loss = SimilarityLoss(base.loss)          # no LPIPS / id / parser weights: pixel L2 only
    table = grid(base.optimizer.lr)
    G_dev = copy.deepcopy(G).to(args.device).requires_grad_(False)
    w0, init = J.encoder_start(run, G, targets)
    ctx = EditContext(G, reg, ifg, pca, args.ganspace, args.strength, args.n_pop, args.n_ref,
                      args.min_ref_effect, args.min_consistency)
    fixed = {"projection.optimize_noise": False, "projection.noise_init": "const"}
    res0 = tune_images("e4e", G, targets, w0, Q.make_cfg(base, fixed, 0, N), loss)
    start_rows = J.zero_vs_start(J.assess(G, ctx, targets_info, targets, res0, pred_target))
    setup_s = time.perf_counter() - t0
    out = {"testbed": args.testbed, "generator": gen_info, "init": init,
           "targets": targets_info, "device": args.device,
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
           "torch": torch.__version__, "loss_terms": loss.active_terms(),
           "edits": ctx.summary(), "setup_s": setup_s, "jobs": []}
    part = Path(args.part)
    for name, steps in json.loads(args.jobs):
        method, over = table[name]
        job = {"config": name, "method": method, "overrides": over, "budget": steps,
               "steps": 0 if method == "e4e" else steps}
        if name == "start":
            job.update(seconds=0.0, rows=start_rows, curves=[[]] * N, errors=[])
        elif time.perf_counter() > deadline:
            job["skipped"] = f"past this worker's deadline ({args.deadline:.0f} s)"
        else:
            cfg = Q.make_cfg(base, {**fixed, **over}, steps, N)
            _sync(args.device)
            t = time.perf_counter()
            res = tune_images(method, G_dev, targets, w0, cfg, loss)
            _sync(args.device)
            wall = time.perf_counter() - t
            res = [_to_cpu(r) for r in res]
            t = time.perf_counter()
            rows = J.assess(G, ctx, targets_info, targets, res, pred_target, start_rows)
            job.update(seconds=wall, eval_seconds=time.perf_counter() - t, rows=rows,
                       errors=[r.error for r in res if r.error],
                       curves=[[round(float(v), 6) for v in r.parts.get("rec", r.loss_curve)]
                               for r in res])
        if "rows" in job:                             # per-direction detail: judge.py has it
            job["rows"] = [{k: v for k, v in row.items() if k != "per_direction"}
                           for row in job["rows"]]
        out["jobs"].append(job)
        print(f"[{args.testbed} {steps:4d}] {name:36s} "
              + (job.get("skipped") or f"{job['seconds']:6.1f}s  L2 "
                 f"{np.mean([r['l2'] for r in job['rows']]):.4f}  drift "
                 f"{np.mean([r['drift'] for r in job['rows']]):.4f}"), flush=True)
        part.write_text(json.dumps(out) + "\n")
    out["total_s"] = time.perf_counter() - t0
    part.write_text(json.dumps(out) + "\n")
    return 0


# ---------------------------------------------------------------------- the launcher
def _job_cost(name: str, steps: int, method: str) -> float:
    """A rough relative cost to balance the workers (GANI ≈ 3× a PTI step at 32 px)."""
    if method == "e4e":
        return 0.0
    return steps * (3.0 if method == "gani" else 1.0) + 60.0      # + the assessment


def priority(name: str, steps: int) -> tuple:
    """Run order inside a worker, for a run cut short by its deadline: the cheap baselines
    first, then every GANI reading × sharing at its middle learning rate, then the low and
    high rates; the shorter budget before the longer."""
    fam = {"start": 0, "pti": 1, "projection": 2}.get(family(name), 3)
    middle = name.endswith(("lr×1", "lr 0.0003"))
    low = name.endswith(("lr×1/3", "lr 0.0001"))
    return (steps, fam, 0 if middle else 1 if low else 2)


def plan_jobs(configs: list[str], budgets: list[int], table: dict, n: int) -> list[list]:
    """Split (config, steps) jobs over n workers, costliest first onto the least loaded;
    every worker also gets `start` (the reference rows of `edit_vs_start`) and runs its
    jobs in `priority` order."""
    jobs = [(c, s) for c in configs if c != "start" for s in budgets]
    jobs.sort(key=lambda j: -_job_cost(j[0], j[1], table[j[0]][0]))
    loads, lists = [0.0] * n, [[] for _ in range(n)]
    for c, s in jobs:
        k = loads.index(min(loads))
        lists[k].append([c, s])
        loads[k] += _job_cost(c, s, table[c][0])
    return [[["start", budgets[0]]] + sorted(l, key=lambda j: priority(*j)) for l in lists]


def launch(args) -> int:
    """Start --workers processes (split evenly over the testbeds), wait, merge per testbed.
    A testbed without its e4e is left out with a message (the others still run)."""
    out = Path(args.out)
    parts_dir = Path(args.parts_dir or out / "parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    table = grid(base_tune().optimizer.lr)
    configs = ([c.strip() for c in args.configs.split(",") if c.strip()]
               if args.configs else list(table))
    unknown = [c for c in configs if c not in table]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; known: {list(table)}")
    if "start" not in configs:
        configs.insert(0, "start")
    budgets = [int(s) for s in args.steps.split(",")]
    testbeds = [t.strip() for t in args.testbeds.split(",") if t.strip()]
    for tb in [t for t in testbeds if not (RUNS[t] / "e4e_encoder.safetensors").is_file()]:
        print(f"left out: {tb} has no testbed e4e (benchmarks.testbed.train_encoder)",
              flush=True)
        testbeds.remove(tb)
    if not testbeds:
        raise SystemExit("no testbed with an e4e to judge")
    per = max(1, args.workers // len(testbeds))
    procs = []
    for tb in testbeds:
        for k, jobs in enumerate(plan_jobs(configs, budgets, table, per)):
            part = parts_dir / f"{tb}_{k}.json"
            cmd = [sys.executable, "-m", "benchmarks.testbed.pareto", "worker",
                   "--testbed", tb, "--jobs", json.dumps(jobs), "--part", str(part),
                   "--device", args.device, "--threads", str(args.threads),
                   "--targets", args.targets, "--real", args.real,
                   "--deadline", str(args.deadline)]
            procs.append(subprocess.Popen(cmd, cwd=ROOT))
    rc = max(p.wait() for p in procs)
    merge(parts_dir, out)
    return rc


def merge(parts_dir: Path, out: Path) -> list[Path]:
    """parts_dir/<testbed>_<k>.json (one per worker) → out/pareto_<testbed>.json. Parts of
    several runs may share the folder: a job that ran wins over the same job skipped at a
    deadline elsewhere (a resumed grid)."""
    by_tb: dict[str, list[dict]] = {}
    for p in sorted(Path(parts_dir).glob("*_*.json")):
        d = json.loads(p.read_text())
        by_tb.setdefault(d["testbed"], []).append(d)
    written = []
    for tb, parts in by_tb.items():
        merged = {k: v for k, v in parts[0].items() if k not in ("jobs", "setup_s", "total_s")}
        merged.update(workers=len(parts), setup_s=[p["setup_s"] for p in parts],
                      total_s=[p.get("total_s") for p in parts],
                      written=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), jobs=[])
        at: dict[tuple, int] = {}             # (config, steps) -> index in merged["jobs"]
        for p in parts:
            for j in p["jobs"]:
                key = (j["config"], j["steps"])
                if key not in at:
                    at[key] = len(merged["jobs"])
                    merged["jobs"].append(j)
                elif "skipped" in merged["jobs"][at[key]] and "skipped" not in j:
                    merged["jobs"][at[key]] = j   # a later run did what an earlier one skipped
        merged["budgets"] = sorted({j["steps"] for j in merged["jobs"] if j["steps"]}
                                   | {j["budget"] for j in merged["jobs"] if "budget" in j})
        path = Path(out) / f"pareto_{tb}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged) + "\n")
        written.append(path)
        print(f"wrote {path} ({len(merged['jobs'])} jobs)", flush=True)
    return written


# ---------------------------------------------------------------------- the report
GROUPS = {"procedural": ("test", "shifted"), "test": ("test",), "shifted": ("shifted",),
          "real": ("real",)}
KEYS = ("l2", "ms_ssim", "drift", "mse", "attr_err", "edit_ratio", "edit_leakage",
        "edit_vs_start", "mse_equal_time")


def summarise(data: dict, ratios: dict) -> dict:
    """{steps: {config: {group: {key: spread}}}} with the equal-time MSE added to the rows."""
    from benchmarks.testbed.judge import spread

    out: dict = {}
    for job in data["jobs"]:
        if "rows" not in job:
            continue
        name, steps = job["config"], job["steps"]
        n_budget = steps or data["budgets"][0]
        r = ratios.get(gpu_variant(name) or "")
        for row, curve in zip(job["rows"], job["curves"]):
            row["mse_equal_time"] = (curve[min(len(curve) - 1, int(steps / r))]
                                     if r and curve else None)
        budgets = data["budgets"] if name == "start" else [n_budget]
        for b in budgets:
            cell = out.setdefault(b, {}).setdefault(name, {})
            for g, splits in GROUPS.items():
                sel = [row for row in job["rows"] if row["split"] in splits]
                if sel:
                    cell[g] = {k: spread([row.get(k) for row in sel]) for k in KEYS}
            cell["_meta"] = {"seconds": job.get("seconds"), "errors": job.get("errors", []),
                             "ratio_1024": r}
    return out


FAMILY_ORDER = ("start", "projection", "pti", "gani reparam", "gani optimizer")


def report_order(name: str) -> tuple:
    """Rows by family (baselines first), then sharing, then learning rate."""
    rate = name.rsplit(" ", 1)[-1].replace("lr", "")
    value = {"×1/3": 1 / 3, "×1": 1.0, "×3": 3.0}.get(rate)
    if value is None:
        try:
            value = float(rate)
        except ValueError:
            value = 0.0
    return (FAMILY_ORDER.index(family(name)), name.split(" lr")[0], value)


def pareto_front(cells: dict, group: str = "procedural") -> set[str]:
    pts = {n: (c[group]["l2"]["mean"], c[group]["drift"]["mean"])
           for n, c in cells.items() if group in c and c[group]["l2"]["mean"] is not None}
    front = set()
    for n, (l2, dr) in pts.items():
        dominated = any((l2b <= l2 and drb <= dr) and (l2b < l2 or drb < dr)
                        for m, (l2b, drb) in pts.items() if m != n)
        if not dominated:
            front.add(n)
    return front


def pti_l2_at_drift(cells: dict, drift: float, group: str = "procedural") -> float | None:
    """PTI's L2 at a given drift, read off PTI's own learning-rate curve: log L2 interpolated
    linearly in log drift between the two learning rates that bracket `drift`. None outside
    PTI's measured drift range (no extrapolation), and None when the curve is not a sweep
    (drift rising and L2 falling with the lr): then "PTI at that drift" is not defined by it."""
    by_lr = sorted((float(n.rsplit(" ", 1)[-1]), c[group]["drift"]["mean"],
                    c[group]["l2"]["mean"])
                   for n, c in cells.items() if family(n) == "pti" and group in c)
    pts = [(d, l2) for _, d, l2 in by_lr]
    if any(d1 <= d0 or l1 >= l0 for (d0, l0), (d1, l1) in zip(pts, pts[1:])):
        return None
    for (d0, l0), (d1, l1) in zip(pts, pts[1:]):
        if d0 <= drift <= d1 and d0 > 0 and d1 > d0:
            t = np.log(drift / d0) / np.log(d1 / d0)
            return float(np.exp(np.log(l0) + t * np.log(l1 / l0)))
    return None


def vs_pti_at_equal_drift(cells: dict, name: str, group: str = "procedural") -> float | None:
    """L2 of `name` relative to PTI's at the same drift (−0.05: 5 % lower than PTI)."""
    c = cells[name].get(group)
    if not c or family(name) in ("start", "projection", "pti"):
        return None
    ref = pti_l2_at_drift(cells, c["drift"]["mean"], group)
    return None if ref is None else c["l2"]["mean"] / ref - 1.0


def dominated_by_pti(cells: dict, group: str = "procedural") -> dict[str, list[str]]:
    """{GANI configuration: the PTI configurations that dominate it (no worse in L2 and in
    drift, better in one)}, for the GANI configurations that one dominates."""
    pts = {n: (c[group]["l2"]["mean"], c[group]["drift"]["mean"])
           for n, c in cells.items() if group in c}
    out = {}
    for n, (l2, dr) in pts.items():
        if not n.startswith("gani "):
            continue
        by = [m for m, (l2b, drb) in pts.items() if family(m) == "pti"
              and l2b <= l2 and drb <= dr and (l2b < l2 or drb < dr)]
        if by:
            out[n] = sorted(by, key=report_order)
    return out


def tuning_front(cells: dict, group: str = "procedural") -> set[str]:
    """The front among the configurations that tune the generator (PTI, GANI): the product's
    `tune.method` is one of them, and the W+ projection, at drift 0, can hide them all."""
    return pareto_front({n: c for n, c in cells.items() if family(n) not in ("start", "projection")}, group)


def _f(s: dict | None, d: int = 4) -> str:
    if not s or s.get("mean") is None:
        return "–"
    txt = f"{s['mean']:.{d}f}"
    return txt + (f" ± {s['ci95']:.{d}f}" if s.get("ci95") is not None else "")


def keep_preface(old: str, new: str) -> str:
    """Carry the hand-written notes of an earlier report (the `>` block under its title:
    what was run where, and its reading) into a regenerated one."""
    head, *rest = old.split("\n\n", 1)
    quote = rest[0].split("\nWritten by ", 1)[0] if rest else ""
    if not quote.startswith(">"):
        return new
    title, body = new.split("\n\n", 1)
    return f"{title}\n\n{quote.rstrip()}\n\n{body}"


def markdown(datas: list[dict], ratios: dict, expected: list[str] | None = None) -> str:
    """The report; `expected` (the grid's names) lists what a budget lacks."""
    lines = ["# Pareto judgement: fit against drift on both testbeds (issue 13)", "",
             "Written by `python -m benchmarks.testbed.pareto` (its docstring has the protocol). "
             "Cells: mean ± 95 % CI half-width (Student t over targets). L2 and drift as in "
             "`judgement*.md`; ★ = on the fit-vs-drift Pareto front of that budget (procedural "
             "targets: held-out + shifted). MSE @ equal time: the training MSE after the steps "
             "that cost what N PTI steps cost at 1024 px on the H200 (ratios from "
             "`benchmarks/gpu/results/h200_1024.json`, fp32, batch 1). L2 vs PTI @ equal drift: "
             "the procedural L2 against PTI's at the same drift, read off PTI's three "
             "learning rates (log L2 linear in log drift between the two that bracket it; – "
             "outside their range, or where PTI's drift does not rise with its lr).", ""]
    for data in datas:
        tb = data["testbed"]
        n_split = {s: sum(t["split"] == s for t in data["targets"])
                   for s in ("test", "shifted", "real")}
        lines += [f"## {TESTBED_TITLES.get(tb, tb)}", "",
                  f"Generator sha256 `{data['generator']['sha256'][:16]}…`, training step "
                  f"{data['generator'].get('step')}; start: {data['init']['method']} (mean "
                  f"training MSE {np.mean(data['init']['mse_start']):.4f}). Targets: "
                  f"{n_split['test']} held-out, {n_split['shifted']} shifted, "
                  f"{n_split['real']} real. Device: {data.get('gpu') or data['device']} "
                  f"(tuning), its CPUs (assessment); torch {data['torch']}.", ""]
        cells_by_budget = summarise(data, ratios)
        for b in data["budgets"]:
            cells = cells_by_budget.get(b, {})
            front = pareto_front(cells)
            lines += [f"### {b} steps", "",
                      "| configuration | L2 held-out ↓ | L2 shifted ↓ | drift ↓ | L2 vs PTI @ "
                      "equal drift ↓ | MSE @ equal time ↓ | edit ratio (→1) | edit leakage ↓ | "
                      "edit change vs start ↓ | attr err ↓ | L2 real ↓ |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for name, c in sorted(cells.items(), key=lambda kv: report_order(kv[0])):
                p = c.get("procedural", {})
                rel = vs_pti_at_equal_drift(cells, name)
                lines.append(
                    f"| {'★ ' if name in front else ''}{name} | {_f(c.get('test', {}).get('l2'))}"
                    f" | {_f(c.get('shifted', {}).get('l2'))} | {_f(p.get('drift'))} | "
                    f"{'–' if rel is None else f'{rel * 100:+.1f} %'} | "
                    f"{_f(p.get('mse_equal_time'))} | {_f(p.get('edit_ratio'), 2)} | "
                    f"{_f(p.get('edit_leakage'), 3)} | {_f(p.get('edit_vs_start'), 3)} | "
                    f"{_f(p.get('attr_err'), 3)} | {_f(c.get('real', {}).get('l2'))} |")
            tuning = tuning_front(cells)
            lines += ["", "On the front: " + ", ".join(sorted(front, key=report_order)) + ".",
                      "", "Front of the methods that tune the generator (start and projection "
                      "left out): " + (", ".join(sorted(tuning, key=report_order)) or "none")
                      + ".", ""]
            gani = [n for n in cells if n.startswith("gani ")]
            if gani:
                dom = dominated_by_pti(cells)
                lines += [f"GANI configurations that a PTI configuration dominates: {len(dom)} "
                          f"of {len(gani)}" + (" (" + "; ".join(
                              f"{n}: by {', '.join(by)}" for n, by in
                              sorted(dom.items(), key=lambda kv: report_order(kv[0])))
                              + ")" if dom else "") + ".", ""]
            lacking = [n for n in (expected or []) if n not in cells]
            if lacking:
                lines += [f"**Not in this run ({len(lacking)} of {len(expected)} "
                          "configurations):** " + ", ".join(lacking) + ".", ""]
            errs = {n: c["_meta"]["errors"] for n, c in cells.items() if c["_meta"]["errors"]}
            if errs:
                lines += [f"Errors: {errs}", ""]
        skipped = [f"{j['config']} ({j['steps']})" for j in data["jobs"] if "skipped" in j]
        if skipped:
            lines += ["Not run (deadline): " + ", ".join(skipped), ""]
    return "\n".join(lines) + "\n"


STYLE = {"start": ("black", "s"), "projection": ("tab:gray", "D"), "pti": ("tab:blue", "o"),
         "gani reparam": ("tab:red", "^"), "gani optimizer": ("tab:green", "v")}
SHARING_FILL = {"channels": "full", "layer": "none", "channels_affine": "left"}


def plot(datas: list[dict], ratios: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = datas[0]["budgets"]
    fig, axes = plt.subplots(len(datas), len(budgets), figsize=(6.5 * len(budgets),
                                                               5.2 * len(datas)),
                             squeeze=False)
    for i, data in enumerate(datas):
        cells_by_budget = summarise(data, ratios)
        for j, b in enumerate(budgets):
            ax, cells = axes[i][j], cells_by_budget.get(b, {})
            front = pareto_front(cells)
            labels: dict[tuple, tuple] = {}    # log-position -> (point, names): coinciding
                                               # points share one label
            for name, c in cells.items():
                p = c.get("procedural")
                if not p or p["l2"]["mean"] is None:
                    continue
                colour, marker = STYLE[family(name)]
                sharing = name.split("/")[1].split(" ")[0] if "/" in name else "channels"
                ax.errorbar(p["drift"]["mean"], p["l2"]["mean"], xerr=p["drift"]["ci95"] or 0,
                            yerr=p["l2"]["ci95"] or 0, fmt=marker, color=colour,
                            fillstyle=SHARING_FILL[sharing], ms=7, capsize=2, lw=0.8,
                            mec=colour, alpha=0.9)
                if name in front or family(name) in ("pti", "start", "projection"):
                    xy = (p["drift"]["mean"], p["l2"]["mean"])
                    at = np.log10(np.array(xy) + 1e-9)
                    key = next((k for k in labels if np.abs(np.array(k) - at).max() < 0.03),
                               tuple(at))
                    labels.setdefault(key, (xy, []))[1].append(name.replace("gani ", ""))
            for xy, names in labels.values():
                ax.annotate("\n".join(names), xy, fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
            pts = sorted((cells[n]["procedural"]["drift"]["mean"],
                          cells[n]["procedural"]["l2"]["mean"]) for n in front)
            if pts:
                ax.plot(*zip(*pts), color="gold", lw=2, zorder=0, label="Pareto front")
            ax.set_xscale("symlog", linthresh=1e-3)
            ax.set_yscale("log")
            ax.set_xlabel("drift (locality L2) ↓")
            ax.set_ylabel("L2 (held-out + shifted) ↓")
            ax.set_title(f"{data['testbed']}, {b} steps", fontsize=10)
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker=m, ls="", label=f) for f, (c, m) in STYLE.items()]
    handles += [plt.Line2D([], [], color="k", marker="o", ls="", fillstyle=fs, label=f"sharing {s}")
                for s, fs in SHARING_FILL.items()]
    handles.append(plt.Line2D([], [], color="gold", lw=2, label="Pareto front"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.1 / len(datas), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(args) -> int:
    datas = [json.loads(Path(p).read_text()) for p in args.files]
    ratios = step_cost_ratios()
    expected = list(grid(base_tune().optimizer.lr))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / f"{args.stem}.md", out / f"{args.stem}_fit_vs_drift.png"
    text = markdown(datas, ratios, expected)
    if md.is_file():
        text = keep_preface(md.read_text(), text)
    md.write_text(text)
    plot(datas, ratios, png)
    print(f"wrote {md} and {png}")
    return 0


# ---------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    from benchmarks.testbed.judge import add_edit_arguments

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "worker"):
        p = sub.add_parser(name)
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--threads", type=int, default=2, help="torch CPU threads per worker")
        p.add_argument("--targets", default="8,4", help="N_TEST,N_SHIFTED procedural targets")
        p.add_argument("--real", default="astronaut,lfw1")
        p.add_argument("--deadline", type=float, default=330.0,
                       help="seconds after which a worker starts no new tuning run")
    run = sub.choices["run"]
    run.add_argument("--out", required=True)
    run.add_argument("--workers", type=int, default=8)
    run.add_argument("--testbeds", default="cpu32,cpu32v")
    run.add_argument("--steps", default="100,300")
    run.add_argument("--configs", default="", help="comma-separated; default: the whole grid")
    run.add_argument("--parts-dir", default="", help="the workers' files (default OUT/parts)")
    w = sub.choices["worker"]
    w.add_argument("--testbed", required=True, choices=sorted(RUNS))
    w.add_argument("--jobs", required=True)
    w.add_argument("--part", required=True)
    add_edit_arguments(w)
    mg = sub.add_parser("merge")
    mg.add_argument("parts_dir")
    mg.add_argument("--out", required=True)
    rep = sub.add_parser("report")
    rep.add_argument("files", nargs="+")
    rep.add_argument("--out", default=str(HERE / "results"))
    rep.add_argument("--stem", default="pareto", help="writes <stem>.md, <stem>_fit_vs_drift.png")
    args = ap.parse_args(argv)
    if args.cmd == "merge":
        return 0 if merge(Path(args.parts_dir), Path(args.out)) else 1
    return {"run": launch, "worker": run_worker, "report": report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
