"""The FLOP model: multiply-accumulates counted from our own networks' layer shapes.

    .venv/bin/python -m benchmarks.gpu.flops                 # the table of docs/performance.md
    .venv/bin/python -m benchmarks.gpu.flops --json out.json

Every count runs the real module code on PyTorch's "meta" device under
`torch.utils.flop_counter`'s formulas (`FlopCounter` below): no arithmetic is done, but every convolution,
(batched) matrix product and linear layer is seen with its shapes, forward and backward. A
multiply-accumulate (MAC) is 2 FLOP. Counted: aten.convolution (+ its backward), mm, addmm,
bmm, baddbmm. Not counted: element-wise work (modulation, demodulation, activations, noise,
norms, Adam), which is memory traffic, not arithmetic (docs/performance.md estimates it).

What a step is (gani/tuning): the main render G(w; θ+Δ) and its loss, the Eq. 5 regularizer
(one no-grad render G(w_r; θ) shared by the batch, one render G(w_r; θ+Δ) per image and its
loss), and the backward pass of the total. PTI's loss is rec + LPIPS; GANI's is the full
L_sim (rec, LPIPS, ID, parsing) plus the GMMs' forward and backward, with the gradient at θ
taken once before the first step (setup). The regularizer's loss is rec + LPIPS for both.
Frozen networks (LPIPS, ID, parser) back-propagate to their input only (no weight grads).
"""
from __future__ import annotations

import argparse
import json
import math
from contextlib import contextmanager
from typing import Callable, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

META = torch.device("meta")
H200_BF16_FLOPS = 790e12  # dense bf16 matrix rate measured on this workplace's H200s


class FlopCounter(TorchDispatchMode):
    """Sums `torch.utils.flop_counter`'s formulas over every op dispatched inside it (no
    module tracking: FlopCounterMode's module hooks break under `autograd.grad`), with the
    weight gradient of grouped convolutions counted per group."""

    def __init__(self):
        super().__init__()
        self.total = 0
        self.by_op: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        formula = flop_registry.get(packet)
        if formula is not None:
            if packet is torch.ops.aten.convolution_backward and args[9] > 1 and args[10][1]:
                # torch's weight-gradient formula ignores groups (it counts groups× the work
                # of a grouped conv, B× for the generator's per-sample convs): divide it
                mask = list(args[10])
                a_in = list(args)
                a_in[10] = [mask[0], False, mask[2]]
                a_w = list(args)
                a_w[10] = [False, True, False]
                n = int(formula(*a_in, **kwargs, out_val=out)) + \
                    int(formula(*a_w, **kwargs, out_val=out)) // int(args[9])
            else:
                n = int(formula(*args, **kwargs, out_val=out))
            self.total += n
            key = str(func._overloadpacket)
            self.by_op[key] = self.by_op.get(key, 0) + n
        return out

    def get_total_flops(self) -> int:
        return self.total


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix and convolution ops `fn()` runs (forward and any backward in it)."""
    fc = FlopCounter()
    with fc:
        fn()
    return fc.total


# aten ops that only alias or describe memory: no kernel runs for them on a GPU
NO_KERNEL = frozenset(f"aten.{n}" for n in (
    "view", "_unsafe_view", "reshape", "_reshape_alias", "expand", "unsqueeze", "squeeze",
    "permute", "transpose", "t", "detach", "alias", "select", "slice", "narrow", "as_strided",
    "split", "split_with_sizes", "unbind", "chunk", "unflatten", "flatten", "lift_fresh",
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "is_same_size"))


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside it that run a kernel (not in `NO_KERNEL`): a
    proxy of a step's kernel launches and of its per-op host work (some ops launch more
    than one kernel, e.g. a cuDNN convolution; autocast's casts are not seen on meta)."""

    def __init__(self):
        super().__init__()
        self.total = 0
        self.by_op: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        key = str(func._overloadpacket)
        if key not in NO_KERNEL:
            self.total += 1
            self.by_op[key] = self.by_op.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> int:
    """Kernel-running aten ops of `fn()` (forward and any backward in it)."""
    oc = OpCounter()
    with oc:
        fn()
    return oc.total


@contextmanager
def _quiet_init():
    """Module constructors on meta: no random numbers drawn for real (fast, no memory)."""
    with torch.device(META):
        yield


# --------------------------------------------------------------------------- networks
def meta_generator(size: int, channel_multiplier: int = 2, channel_max: int = 512,
                   style_dim: int = 512, n_mlp: int = 8):
    from gani.models.stylegan2 import Generator

    with _quiet_init():
        G = Generator(size, style_dim=style_dim, n_mlp=n_mlp,
                      channel_multiplier=channel_multiplier, channel_max=channel_max)
    return G.eval().requires_grad_(False)


def generator_breakdown(G, batch: int = 1) -> dict:
    """Forward MACs of G.synthesis per resolution {res: MACs} (+ 'total'), counted through
    forward hooks on the top-level blocks under one FlopCounterMode."""
    fc = FlopCounter()
    per_res: dict = {}
    marks: dict = {}

    def pre(res):
        def hook(_m, _inp):
            marks[res] = fc.get_total_flops()
        return hook

    def post(res):
        def hook(_m, _inp, _out):
            per_res[res] = per_res.get(res, 0) + fc.get_total_flops() - marks[res]
        return hook

    handles = []
    blocks = [(4, G.conv1), (4, G.to_rgb1)]
    for k, to_rgb in enumerate(G.to_rgbs):
        res = 2 ** (k + 3)
        blocks += [(res, G.convs[2 * k]), (res, G.convs[2 * k + 1]), (res, to_rgb)]
    for res, m in blocks:
        handles.append(m.register_forward_pre_hook(pre(res)))
        handles.append(m.register_forward_hook(post(res)))
    w = torch.zeros(batch, G.n_latent, G.style_dim, device=META)
    try:
        with fc:
            G.synthesis(w)
    finally:
        for h in handles:
            h.remove()
    out = {r: v // 2 for r, v in sorted(per_res.items())}
    out["total"] = int(fc.get_total_flops()) // 2
    return out


def meta_loss_nets(width_div: int = 1) -> dict:
    """Random-weight stand-ins of the ffhq profile's loss networks, on meta: LPIPS (AlexNet
    v0.1, the `lpips` package), CurricularFace IR-101 (ID), the MaskGAN parsing U-Net."""
    from gani.models.irse import IR101
    from gani.models.parsing import FaceParsingUNet

    nets = {}
    with _quiet_init():
        nets["identity"] = IR101(width_div=width_div).eval()
        nets["parser"] = FaceParsingUNet(feature_scale=4 * width_div).eval()
    nets["lpips"] = lpips_module().to(META)
    for n in nets.values():
        n.requires_grad_(False)
    return nets


def lpips_module():
    """lpips.LPIPS(alex, v0.1) with random trunk and heads: no download (the architecture
    the pipeline loads from its local AlexNet file)."""
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True,
                          verbose=False)
    return net.eval().requires_grad_(False)


def network_macs(nets: dict, e4e_width_div: int = 1) -> dict:
    """Forward MACs per image of the loss / metric / encoder networks at their input sizes,
    and forward + input-backward (what a loss term costs in a tuning step)."""
    from gani.losses import LPIPS_SIZE, PARSER_SIZE
    from gani.models.e4e import E4EEncoder

    out = {}

    def both(name, fn_in, shape):
        x = torch.zeros(*shape, device=META)
        fwd = count_flops(lambda: fn_in(x)) // 2
        xg = torch.zeros(*shape, device=META, requires_grad=True)
        fb = count_flops(lambda: _sum(fn_in(xg)).backward()) // 2
        out[name] = {"input": list(shape[1:]), "forward_macs": fwd, "fwd_bwd_macs": fb}

    lp = nets["lpips"]
    both("lpips_alex", lambda x: lp(x, x.detach() * 0), (1, 3, LPIPS_SIZE, LPIPS_SIZE))
    both("id_ir101", nets["identity"], (1, 3, 112, 112))
    both("parser_unet", nets["parser"].contracting_features, (1, 3, PARSER_SIZE, PARSER_SIZE))
    with _quiet_init():
        enc = E4EEncoder(n_styles=18, style_dim=512, width_div=e4e_width_div).eval()
    x = torch.zeros(1, 3, 256, 256, device=META)
    out["e4e_irse50"] = {"input": [3, 256, 256],
                         "forward_macs": count_flops(lambda: enc(x)) // 2}
    return out


def _sum(x):
    if isinstance(x, (list, tuple)):
        return sum(t.float().sum() for t in x)
    return x.float().sum()


# --------------------------------------------------------------------------- steps
def meta_similarity_loss(weights, nets: Optional[dict]):
    from gani.losses import SimilarityLoss
    from gani.models.irse import id_crop_pool

    if not nets:
        return SimilarityLoss(weights)
    return SimilarityLoss(weights, lpips=nets["lpips"], identity=nets["identity"],
                          identity_input=id_crop_pool, parser=nets["parser"])


def step_flops(G, tune_cfg, batch: int, nets: Optional[dict],
               sharings: Optional[list] = None, count_flops=count_flops) -> dict:
    """Counted FLOPs of one PTI step, one GANI (reparam) step, GANI's setup, the GMMs'
    forward and forward+backward, for `batch` images (module doc). `count_flops=count_ops`
    counts the same pieces in kernel-running ops instead (the optimizer's update is not
    in either count)."""
    from gani.gmm import GMMBank, GradientRows
    from gani.tuning.common import LocalityRegularizer, objective
    from gani.tuning.gani import loss_gradients

    B = batch
    loss = meta_similarity_loss(tune_cfg.loss, nets)
    x = torch.zeros(B, 3, G.size, G.size, device=META)
    w = torch.zeros(B, G.n_latent, G.style_dim, device=META)
    out = {"batch": B}

    # PTI: rec + LPIPS, deltas on every modulated conv, regularizer on
    pti_loss = loss.restricted(("rec", "lpips"))
    pti_target = pti_loss.prepare(x)
    deltas = {n: torch.zeros(B, *m.weight.shape[1:], device=META, requires_grad=True)
              for n, m in G.modulated_convs().items()}
    reg = LocalityRegularizer(G, tune_cfg.reg, pti_loss, tune_cfg.seed)

    def pti_step():
        total, _ = objective(G, w, deltas, pti_target, pti_loss, reg)
        total.sum().backward()

    out["pti_step"] = count_flops(pti_step)
    out["setup_target_features"] = count_flops(lambda: loss.prepare(x))

    # GANI: full L_sim, the gradient at θ once, the GMMs every step
    target = loss.prepare(x)
    holder = {}

    def setup():
        holder["grads"], _ = loss_gradients(G, w, target, loss)

    out["gani_setup"] = count_flops(setup)
    rows = GradientRows(holder["grads"], tune_cfg.gmm.row_scale)
    greg = LocalityRegularizer(G, tune_cfg.reg, loss, tune_cfg.seed)
    if sharings is None:
        sharings = _literal_values(type(tune_cfg.gmm), "sharing") or ["channels"]
    for sharing in sharings:
        gcfg = tune_cfg.gmm.model_copy(update={"sharing": sharing})
        bank = GMMBank.for_generator(G, gcfg, batch=B).to(META)

        def gmm_fwd():
            with torch.no_grad():
                bank(rows)

        def gmm_fb():
            _sum(list(bank(rows).values())).backward()

        def gani_step():
            corr = bank(rows)
            total, _ = objective(G, w, corr, target, loss, greg)
            total.sum().backward()

        out[f"gmm_forward[{sharing}]"] = count_flops(gmm_fwd)
        out[f"gmm_fwd_bwd[{sharing}]"] = count_flops(gmm_fb)
        out[f"gani_step[{sharing}]"] = count_flops(gani_step)
    out["G_forward"] = count_flops(lambda: G.synthesis(w))
    return out


def _literal_values(model_cls, field: str) -> list:
    """The allowed values of a Literal-typed pydantic field ([] if there is no such field)."""
    import typing

    f = getattr(model_cls, "model_fields", {}).get(field)
    if f is None:
        return []
    return list(typing.get_args(f.annotation))


def gmm_rows(G) -> dict:
    """Rows per channel count C that the GMMs transform ({C: rows}) and their forward MACs
    per block pair (2 matmuls C×C per row per block)."""
    rows: dict = {}
    for m in G.modulated_convs().values():
        o, c, kh, kw = m.weight.shape[1:]
        rows[int(c)] = rows.get(int(c), 0) + o * kh * kw
    return dict(sorted(rows.items()))


# --------------------------------------------------------------------------- model
def flop_model(size: int = 1024, batch: int = 1, params_path=None, profile: str = "ffhq",
               channel_multiplier: int = 2, channel_max: int = 512, style_dim: int = 512,
               n_mlp: int = 8, loss_nets: bool = True, net_width_div: int = 1,
               tune_cfg=None, steps: Optional[int] = None,
               rate: float = H200_BF16_FLOPS) -> dict:
    """The whole model for one configuration: counts, per-step FLOPs and the floor per image
    at `rate` FLOP/s for the profile's steps."""
    if tune_cfg is None or steps is None:
        from gani.config import load_settings

        from . import ROOT

        s = load_settings(params_path or ROOT / "params.yaml", profile)
        tune_cfg = tune_cfg or s.tune
        steps = steps if steps is not None else s.tune.steps
    G = meta_generator(size, channel_multiplier, channel_max, style_dim, n_mlp)
    nets = meta_loss_nets(net_width_div) if loss_nets else None
    st = step_flops(G, tune_cfg, batch, nets)
    out = {"size": size, "batch": batch, "steps": steps, "rate_flops": rate,
           "loss_nets": bool(loss_nets),
           "generator_macs_by_res": generator_breakdown(G, 1),
           "modulated_conv_params": sum(m.weight.numel() for m in G.modulated_convs().values()),
           "gmm_rows": gmm_rows(G), "flops": st}
    floors = {}
    sharings = [k[len("gani_step["):-1] for k in st if k.startswith("gani_step[")]
    floors["pti"] = steps * st["pti_step"] / rate / batch
    for sh in sharings:
        floors[f"gani[{sh}]"] = (st["gani_setup"] + steps * st[f"gani_step[{sh}]"]) / rate / batch
    out["floor_s_per_image"] = floors
    return out


def resolution_table(sizes=(256, 512, 1024), **kw) -> dict:
    return {s: generator_breakdown(meta_generator(s, **kw), 1)["total"] for s in sizes}


def _g(x: float) -> str:
    return f"{x / 1e9:,.1f}"


def markdown(model: dict, nets_macs: Optional[dict] = None, res_table: Optional[dict] = None
             ) -> str:
    st = model["flops"]
    B = model["batch"]
    lines = [f"Counted by `python -m benchmarks.gpu.flops` (meta tensors, torch.utils.flop_counter formulas): "
             f"{model['size']} px, batch {B}, {model['steps']} steps, rate "
             f"{model['rate_flops'] / 1e12:.0f} TFLOP/s. GMAC = 10⁹ multiply-accumulates "
             f"(2 FLOP).", ""]
    if res_table:
        lines += ["| generator | forward GMAC / image |", "|---|---|"]
        lines += [f"| {s} px | {_g(v)} |" for s, v in res_table.items()]
        lines.append("")
    br = model["generator_macs_by_res"]
    lines += [f"| resolution ({model['size']} px G) | forward GMAC |", "|---|---|"]
    lines += [f"| {r} | {_g(v)} |" for r, v in br.items() if r != "total"]
    lines += [f"| **total** | **{_g(br['total'])}** |", ""]
    lines += ["| GMM rows per C | rows | forward GMAC (2 blocks × 2 matmuls) |", "|---|---|---|"]
    blocks = 2
    for C, r in model["gmm_rows"].items():
        lines.append(f"| C = {C} | {r:,} | {_g(r * C * C * 2 * blocks)} |")
    lines.append("")
    if nets_macs:
        lines += ["| network | input | forward GMAC | fwd + input-bwd GMAC |", "|---|---|---|---|"]
        for n, v in nets_macs.items():
            fb = v.get("fwd_bwd_macs")
            lines.append(f"| {n} | {'×'.join(map(str, v['input']))} | {_g(v['forward_macs'])} | "
                         f"{'' if fb is None else _g(fb)} |")
        lines.append("")
    lines += [f"| per batch of {B} | GFLOP | GMAC | floor at {model['rate_flops'] / 1e12:.0f} "
              f"TFLOP/s (ms) |", "|---|---|---|---|"]
    for k, v in st.items():
        if k == "batch":
            continue
        lines.append(f"| {k} | {v / 1e9:,.1f} | {v / 2e9:,.1f} | "
                     f"{v / model['rate_flops'] * 1e3:.3f} |")
    lines += ["", f"| floor per image, {model['steps']} steps | s |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in model["floor_s_per_image"].items()]
    return "\n".join(lines) + "\n"


def op_model(size: int = 1024, profile: str = "ffhq", loss_nets: bool = True,
             batches=(1, 8)) -> dict:
    """Kernel-running ops per step (PTI, GANI reparam per sharing, the GMMs, GANI's setup),
    at each batch size: they hardly depend on B, which is why a batch amortises them."""
    from gani.config import load_settings

    from . import ROOT

    tune = load_settings(ROOT / "params.yaml", profile).tune
    G = meta_generator(size)
    nets = meta_loss_nets() if loss_nets else None
    return {"size": size, "profile": profile, "loss_nets": bool(loss_nets),
            "ops": {B: step_flops(G, tune, B, nets, count_flops=count_ops) for B in batches}}


def ops_markdown(model: dict) -> str:
    ops = model["ops"]
    bs = list(ops)
    keys = [k for k in ops[bs[0]] if k != "batch"]
    L = [f"Kernel-running aten ops per step, {model['size']} px, profile {model['profile']}"
         f"{'' if model['loss_nets'] else ' (no loss networks)'}:", "",
         "| piece | " + " | ".join(f"B = {b}" for b in bs) + " |",
         "|---|" + "---|" * len(bs)]
    L += [f"| {k} | " + " | ".join(str(ops[b][k]) for b in bs) + " |" for k in keys]
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--profile", default="ffhq")
    ap.add_argument("--no-loss-nets", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--ops", action="store_true",
                    help="count kernel-running ops per step instead of FLOPs")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.ops:
        print(ops_markdown(op_model(args.size, profile=args.profile,
                                    loss_nets=not args.no_loss_nets)))
        return
    model = flop_model(args.size, args.batch, profile=args.profile,
                       loss_nets=not args.no_loss_nets)
    nets = network_macs(meta_loss_nets())
    res = resolution_table()
    print(markdown(model, nets, res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": model, "networks": nets, "generator_by_size": res}, f, indent=1,
                      default=str)
    assert math.isfinite(model["floor_s_per_image"]["pti"])


if __name__ == "__main__":
    main()
