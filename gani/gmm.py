"""Gradient Modification Modules (paper Eqs. 2–4; DESIGN §2.3; reasoning in docs/method.md).

A modulated-conv weight θ_l of shape [out, in, k, k] and its gradient g_l are viewed as
out·k·k *rows* of length C = in (`to_rows`). A module M_C maps each row to a row:

    z_0 = prenorm(g_row)                      pre_norm: none | sn | in
    z_b = z_{b-1} + W₂ᵇ · σ(postnorm(W₁ᵇ · z_{b-1} + bᵇ)),   b = 1..B (blocks)
                                              post_norm: none | sn | in;  σ = LeakyReLU(0.2)
    correction = z_B − z_0        (identity_path = false: only the residual branches)
               = z_B              (identity_path = true: the literal θ' = θ + M_C(g))

ScaleNorm (SN) is x · s / ‖x‖ with one learned scalar s, initialised to √C; IN is the row
standardised over its C entries (no affine). Both use eps 1e-12: gradient rows have norms
~1e-3, so the usual 1e-5 would swamp them. W₁, W₂ are Kaiming-normal (LeakyReLU 0.2 gain) ×
`init_scale`; W₂ is zero when `zero_init_last` (with identity_path false this is an exact
identity start: θ' = θ at step 0); the bias b is zero or U(±1/√C).

**Sharing**: one module per channel count C, shared by every layer whose weight rows have
length C (paper: "networks assigned to convolutional layers with the number of channels C
share the same parameters"). **Batching**: a `GMMBank` holds B independent copies (one per
image) stacked on dim 0 of every parameter, applied with batched matmuls; all copies start
from the same seeded initialisation, so image i of a batch equals a run of image i alone.

Variant (ours, off by default): `row_scale: grad_norm` multiplies each correction row by
‖g_row‖ / mean‖g_row‖ over its layer, so rows the loss does not touch are not moved
(SN otherwise makes every row's correction the same size whatever its gradient).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from gani.config.schema import GMMSection

NORM_EPS = 1e-12
LRELU_SLOPE = 0.2


def to_rows(w: torch.Tensor) -> torch.Tensor:
    """[..., out, in, k, k] → [..., out·k·k, in] (rows of length C = in)."""
    *lead, o, c, kh, kw = w.shape
    return w.permute(*range(len(lead)), -4, -2, -1, -3).reshape(*lead, o * kh * kw, c)


def from_rows(rows: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of `to_rows` for a weight of shape [out, in, k, k] (leading dims kept)."""
    o, c, kh, kw = shape
    lead = rows.shape[:-2]
    w = rows.reshape(*lead, o, kh, kw, c)
    n = len(lead)
    return w.permute(*range(n), n, n + 3, n + 1, n + 2)


def scale_norm(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x · s / ‖x‖ over the last dim (s broadcasts)."""
    return x * (s / (x.norm(dim=-1, keepdim=True) + NORM_EPS))


def instance_norm(x: torch.Tensor) -> torch.Tensor:
    """Standardise over the last dim (no affine)."""
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + NORM_EPS)


def _norm(kind: str, x: torch.Tensor, s: Optional[torch.Tensor]) -> torch.Tensor:
    if kind == "none":
        return x
    if kind == "sn":
        return scale_norm(x, s)
    if kind == "in":
        return instance_norm(x)
    raise ValueError(f"unknown norm {kind!r}")


class GMM(nn.Module):
    """The module M_C for one channel count C, B independent copies on dim 0.

    Parameters: w1, w2 [B, blocks, C, C]; b [B, blocks, C]; s_post [B, blocks] (post-norm
    SN), s_pre [B] (pre-norm SN).
    """

    def __init__(self, channels: int, cfg: GMMSection, batch: int = 1,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        C, nb = int(channels), int(cfg.blocks)
        self.channels, self.cfg, self.batch = C, cfg, batch
        gain = math.sqrt(2.0 / (1.0 + LRELU_SLOPE ** 2))  # Kaiming (He) for LeakyReLU 0.2
        std = gain / math.sqrt(C) * cfg.init_scale

        def randn(*shape):
            return torch.randn(*shape, generator=generator)

        w1 = randn(nb, C, C) * std
        w2 = torch.zeros(nb, C, C) if cfg.zero_init_last else randn(nb, C, C) * std
        if cfg.bias == "uniform":
            b = (torch.rand(nb, C, generator=generator) * 2 - 1) / math.sqrt(C)
        else:
            b = torch.zeros(nb, C)
        rep = lambda t: t.unsqueeze(0).repeat(batch, *([1] * t.dim())).contiguous()  # noqa: E731
        self.w1 = nn.Parameter(rep(w1))
        self.b = nn.Parameter(rep(b))
        self.w2 = nn.Parameter(rep(w2))
        self.s_post = nn.Parameter(torch.full((batch, nb), math.sqrt(C))) \
            if cfg.post_norm == "sn" else None
        self.s_pre = nn.Parameter(torch.full((batch,), math.sqrt(C))) \
            if cfg.pre_norm == "sn" else None

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """rows [B, R, C] (gradient rows) → corrections [B, R, C]."""
        cfg = self.cfg
        s_pre = None if self.s_pre is None else self.s_pre.view(-1, 1, 1)
        z0 = _norm(cfg.pre_norm, rows, s_pre)
        z = z0
        for k in range(cfg.blocks):
            h = torch.baddbmm(self.b[:, k].unsqueeze(1), z, self.w1[:, k].transpose(1, 2))
            s = None if self.s_post is None else self.s_post[:, k].view(-1, 1, 1)
            h = F.leaky_relu(_norm(cfg.post_norm, h, s), LRELU_SLOPE)
            z = z + torch.bmm(h, self.w2[:, k].transpose(1, 2))
        return z if cfg.identity_path else z - z0


class GradientRows:
    """Gradients of a batch, regrouped per channel count: rows[C] = [B, ΣR, C] in layer order,
    with the slices that give each layer back (and the optional per-row scales)."""

    def __init__(self, grads: Mapping[str, torch.Tensor], row_scale: str = "none"):
        by_c: dict[int, list] = OrderedDict()
        self.layout: dict[str, tuple[int, int, int, tuple]] = OrderedDict()
        offsets: dict[int, int] = {}
        for name, g in grads.items():
            if g.dim() != 5:
                raise ValueError(f"gradient of {name} must be [B, out, in, k, k], got "
                                 f"{tuple(g.shape)}")
            shape = tuple(g.shape[1:])
            r = to_rows(g)
            C = r.shape[-1]
            start = offsets.get(C, 0)
            self.layout[name] = (C, start, start + r.shape[1], shape)
            offsets[C] = start + r.shape[1]
            by_c.setdefault(C, []).append(r)
        self.rows = {C: torch.cat(rs, 1) for C, rs in by_c.items()}
        self.scales: Optional[dict[str, torch.Tensor]] = None
        if row_scale == "grad_norm":
            self.scales = {}
            for name, (C, a, b, _) in self.layout.items():
                n = self.rows[C][:, a:b].norm(dim=-1, keepdim=True)
                self.scales[name] = n / n.mean(1, keepdim=True).clamp_min(1e-30)
        elif row_scale != "none":
            raise ValueError(f"unknown row_scale {row_scale!r}")

    @property
    def batch(self) -> int:
        return next(iter(self.rows.values())).shape[0]

    def channels(self) -> list[int]:
        return list(self.rows)


class GMMBank(nn.Module):
    """All modules {C: M_C} for a generator's modulated convs, for B images.

    `layer_channels` maps each modulated-conv name to its C (= in-channels); `forward(rows)`
    returns weight deltas {name: [B, out, in, k, k]} ready for `G.synthesis(weight_deltas=)`.
    """

    def __init__(self, layer_channels: Mapping[str, int], cfg: GMMSection, batch: int = 1,
                 seed: int = 0):
        super().__init__()
        self.cfg, self.batch = cfg, int(batch)
        self.layer_channels = OrderedDict(layer_channels)
        channels = sorted(set(self.layer_channels.values()))
        gen = torch.Generator().manual_seed(int(seed))
        self.modules_by_c = nn.ModuleDict(
            {str(C): GMM(C, cfg, batch, gen) for C in channels})

    @classmethod
    def for_generator(cls, G, cfg: GMMSection, batch: int = 1, seed: int = 0) -> "GMMBank":
        chans = {name: int(m.weight.shape[2]) for name, m in G.modulated_convs().items()}
        return cls(chans, cfg, batch, seed)

    def module(self, channels: int) -> GMM:
        return self.modules_by_c[str(int(channels))]

    def forward(self, grads: GradientRows) -> "OrderedDict[str, torch.Tensor]":
        if grads.batch != self.batch:
            raise ValueError(f"gradients for {grads.batch} images, modules for {self.batch}")
        out_rows = {C: self.module(C)(rows) for C, rows in grads.rows.items()}
        deltas = OrderedDict()
        for name, (C, a, b, shape) in grads.layout.items():
            r = out_rows[C][:, a:b]
            if grads.scales is not None:
                r = r * grads.scales[name]
            deltas[name] = from_rows(r, shape)
        return deltas

    def param_groups(self, lr: float, lr_scaling: str = "none") -> list[dict]:
        """Optimizer groups, one per C; lr_scaling 'fan_in' gives lr·512/C (lr is the rate of
        a C = 512 module; a module's output moves ∝ C·lr under Adam, see docs/method.md)."""
        groups = []
        for key, m in self.modules_by_c.items():
            C = int(key)
            g_lr = lr * 512.0 / C if lr_scaling == "fan_in" else lr
            groups.append({"params": [p for p in m.parameters()], "lr": g_lr, "channels": C})
        return groups

    def image_state(self, i: int) -> dict[str, torch.Tensor]:
        """Image i's module parameters (a plain state dict, batch dim removed)."""
        return {k: v[i].detach().clone() for k, v in self.state_dict().items()}

    def load_image_state(self, i: int, state: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in self.state_dict().items():
                v[i].copy_(state[k])
