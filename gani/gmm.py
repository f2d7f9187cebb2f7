"""Gradient Modification Modules (paper Eqs. 2–4; reasoning in docs/method.md).

A modulated-conv weight θ_l of shape [out, in, k, k] and its gradient g_l are viewed as
out·k·k *rows* of length C = in (`to_rows`). A module M maps each row to a row:

    z_0 = prenorm(g_row)                      pre_norm: none | sn | in
    h_b = σ(a_l ⊙ postnorm(W₁ᵇ · z_{b-1} + bᵇ) + o_l)      post_norm: none | sn | in
    z_b = z_{b-1} + W₂ᵇ · h_b,   b = 1..B (blocks);        σ = LeakyReLU(0.2)
    M(g) = z_B − z_0              (identity_path = false: only the residual branches)
         = z_B                    (identity_path = true: the literal residual output)

**Sign (Eq. 2).** M maps a gradient to a gradient-like *update direction*, which is
subtracted, as PTI's "regular gradient step" θ − η·g is:

    θ' = θ + Δ,   Δ = −M(g)

so the literal reading (identity path, zero W₂, no pre-norm) starts at θ − g, a descent
step. (Until issue 13 the code added +M(g): with the identity path that is gradient
*ascent*.) With identity_path false and zero W₂ the start is exact, Δ = 0, and the sign only
mirrors what the branches learn.

ScaleNorm (SN) is x · s / ‖x‖ with one learned scalar s, initialised to √C; IN is the row
standardised over its C entries (no affine). Both use eps 1e-12: gradient rows have norms
~1e-3, so the usual 1e-5 would swamp them. W₁, W₂ are Kaiming-normal (LeakyReLU 0.2 gain) ×
`init_scale`; W₂ is zero when `zero_init_last` (with identity_path false this is an exact
identity start: θ' = θ at step 0); the bias b is zero or U(±1/√C).

**Sharing** (`sharing`):

- `channels` (paper): one module M_C per channel count C, shared by every layer whose rows
  have length C ("networks assigned to convolutional layers with the number of channels C
  share the same parameters"); a_l = 1, o_l = 0 (absent).
- `layer`: one module M_l per modulated conv (no sharing); a_l = 1, o_l = 0.
- `channels_affine` (MEND-style): M_C shared per C as above, plus a learned per-layer gain
  a_l ∈ R^C and offset o_l ∈ R^C per block, initialised to 1 and 0 (so it starts as
  `channels` does, exactly).

**Optimizer reading** (`reading: optimizer`, gani/tuning/learned_optimizer.py): the same
modules transform the gradient g_t of the *current* weights each step,

    M_opt(g_t) = g_t + ‖g_row‖ · (z_B − z_0)(g_t)      (per row; `GMMBank.direction`)

and M_opt(g_t) replaces the gradient in PTI's Adam update of the weight deltas.

**Batching**: a `GMMBank` holds B independent copies (one per image) stacked on dim 0 of
every parameter, applied with batched matmuls; all copies start from the same seeded
initialisation, so image i of a batch equals a run of image i alone.

Variant (ours, off by default): `row_scale: grad_norm` multiplies each row of M(g) by
‖g_row‖ / mean‖g_row‖ over its layer, so rows the loss does not touch are not moved
(SN otherwise makes every row's correction the same size whatever its gradient).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gani.config.schema import GMMSection

NORM_EPS = 1e-12
LRELU_SLOPE = 0.2
SHARINGS = ("channels", "layer", "channels_affine")


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
    """One module M (shared by a channel count, or one layer's own), B copies on dim 0.

    Parameters: w1, w2 [B, blocks, C, C]; b [B, blocks, C]; s_post [B, blocks] (post-norm
    SN), s_pre [B] (pre-norm SN); with `n_layers` > 0 (sharing channels_affine) the per-layer
    gain a [B, n_layers, blocks, C] (init 1) and offset o (init 0).
    """

    def __init__(self, channels: int, cfg: GMMSection, batch: int = 1,
                 generator: Optional[torch.Generator] = None, n_layers: int = 0):
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
        self.a = nn.Parameter(torch.ones(batch, n_layers, nb, C)) if n_layers else None
        self.o = nn.Parameter(torch.zeros(batch, n_layers, nb, C)) if n_layers else None

    def _affine(self, h: torch.Tensor, k: int, segments: Optional[Sequence[tuple[int, int]]]):
        """a_l ⊙ h + o_l per row; `segments` lists (slot l, row count) of the consecutive row
        blocks of h, in order. Each block is scaled by its layer's [C] gain and offset
        broadcast over its rows: nothing of h's size is gathered, and the gradient of a_l
        is a plain sum over its rows (deterministic on CUDA, unlike an index_add)."""
        if self.a is None:
            return h
        if segments is None:
            raise ValueError("a module with per-layer gains needs each row block's layer slot")
        sizes = [n for _, n in segments]
        if sum(sizes) != h.shape[1]:
            raise ValueError(f"segments cover {sum(sizes)} rows, the input has {h.shape[1]}")
        a, o = self.a[:, :, k].unbind(1), self.o[:, :, k].unbind(1)  # per slot: [B, C]
        return torch.cat([p * a[l].unsqueeze(1) + o[l].unsqueeze(1)
                          for p, (l, _) in zip(h.split(sizes, dim=1), segments)], dim=1)

    def forward(self, rows: torch.Tensor,
                segments: Optional[Sequence[tuple[int, int]]] = None,
                identity_path: Optional[bool] = None) -> torch.Tensor:
        """rows [B, R, C] (gradient rows) → M(g) [B, R, C]: z_B, or z_B − z_0 when
        `identity_path` (default cfg.identity_path) is false. `segments` (per-layer gains
        only): (layer slot, row count) of the consecutive row blocks of `rows`."""
        affine = None if self.a is None else (lambda h, k: self._affine(h, k, segments))
        return residual_mlp(self.cfg, rows, self.w1, self.b, self.w2, self.s_post, self.s_pre,
                            affine, identity_path)


def residual_mlp(cfg: GMMSection, rows: torch.Tensor, w1: torch.Tensor, b: torch.Tensor,
                 w2: torch.Tensor, s_post: Optional[torch.Tensor] = None,
                 s_pre: Optional[torch.Tensor] = None, affine=None,
                 identity_path: Optional[bool] = None) -> torch.Tensor:
    """The module's equations (module docstring) for N copies stacked on dim 0: rows
    [N, R, C], w1 / w2 [N, blocks, C, C], b [N, blocks, C], s_post [N, blocks], s_pre [N];
    `affine(h, k)` applies block k's a_l ⊙ h + o_l (identity when None)."""
    ident = cfg.identity_path if identity_path is None else identity_path
    z0 = _norm(cfg.pre_norm, rows, None if s_pre is None else s_pre.view(-1, 1, 1))
    z = z0
    for k in range(cfg.blocks):
        h = torch.baddbmm(b[:, k].unsqueeze(1), z, w1[:, k].transpose(1, 2))
        h = _norm(cfg.post_norm, h, None if s_post is None else s_post[:, k].view(-1, 1, 1))
        if affine is not None:
            h = affine(h, k)
        z = z + torch.bmm(F.leaky_relu(h, LRELU_SLOPE), w2[:, k].transpose(1, 2))
    return z if ident else z - z0


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

    def layers_of(self, channels: int) -> list[str]:
        return [n for n, (C, *_) in self.layout.items() if C == channels]


def _key(name: str) -> str:
    """A layer name as a ModuleDict key (no dots)."""
    return name.replace(".", "_")


class GMMBank(nn.Module):
    """All modules of a generator's modulated convs, for B images, shared per `cfg.sharing`.

    `layer_channels` maps each modulated-conv name to its C (= in-channels). `forward(rows)`
    returns the reparametrisation's weight deltas Δ = −M(g) {name: [B, out, in, k, k]}, ready
    for `G.synthesis(weight_deltas=)`; `direction(rows)` the optimizer reading's M_opt(g).
    """

    # sharing `layer`: run the layers of one weight shape as one stacked matmul per block
    # (`_layer_rows`); the class default is what `tune_images` gets (benchmarks flip it)
    FUSE_LAYERS = False

    def __init__(self, layer_channels: Mapping[str, int], cfg: GMMSection, batch: int = 1,
                 seed: int = 0, fuse: Optional[bool] = None):
        super().__init__()
        self.fuse = type(self).FUSE_LAYERS if fuse is None else bool(fuse)
        if cfg.sharing not in SHARINGS:
            raise ValueError(f"unknown sharing {cfg.sharing!r}; one of {SHARINGS}")
        self.cfg, self.batch = cfg, int(batch)
        self.layer_channels = OrderedDict(layer_channels)
        gen = torch.Generator().manual_seed(int(seed))
        # per-C slot of each layer (its index among the layers of its C, in layer order)
        self.slot: dict[str, int] = {}
        counts: dict[int, int] = {}
        for name, C in self.layer_channels.items():
            self.slot[name] = counts.get(C, 0)
            counts[C] = self.slot[name] + 1
        if cfg.sharing == "layer":
            self.modules_by_layer = nn.ModuleDict(
                {_key(n): GMM(C, cfg, batch, gen) for n, C in self.layer_channels.items()})
        else:
            affine = cfg.sharing == "channels_affine"
            self.modules_by_c = nn.ModuleDict(
                {str(C): GMM(C, cfg, batch, gen, counts[C] if affine else 0)
                 for C in sorted(counts)})

    @classmethod
    def for_generator(cls, G, cfg: GMMSection, batch: int = 1, seed: int = 0,
                      fuse: Optional[bool] = None) -> "GMMBank":
        chans = {name: int(m.weight.shape[2]) for name, m in G.modulated_convs().items()}
        return cls(chans, cfg, batch, seed, fuse)

    def module(self, channels: int) -> GMM:
        """The module shared by channel count C (sharing channels / channels_affine)."""
        if self.cfg.sharing == "layer":
            raise ValueError("sharing 'layer' has one module per layer: use module_of(name)")
        return self.modules_by_c[str(int(channels))]

    def module_of(self, name: str) -> GMM:
        """The module that serves layer `name`."""
        if self.cfg.sharing == "layer":
            return self.modules_by_layer[_key(name)]
        return self.module(self.layer_channels[name])

    def _segments(self, grads: GradientRows, C: int) -> list[tuple[int, int]]:
        """(slot, row count) of each layer of channel count C, in the order of grads.rows[C]."""
        return [(self.slot[n], b - a) for n, (c, a, b, _) in grads.layout.items() if c == C]

    def _module_rows(self, grads: GradientRows, identity_path: Optional[bool]) -> dict:
        """M(g) per layer as rows {name: [B, R_l, C]}."""
        if grads.batch != self.batch:
            raise ValueError(f"gradients for {grads.batch} images, modules for {self.batch}")
        out = OrderedDict()
        if self.cfg.sharing == "layer":
            return self._layer_rows(grads, identity_path)
        for C, rows in grads.rows.items():
            seg = (self._segments(grads, C)
                   if self.cfg.sharing == "channels_affine" else None)
            m = self.module(C)(rows, seg, identity_path)
            for name in grads.layers_of(C):
                _, a, b, _ = grads.layout[name]
                out[name] = m[:, a:b]
        return out

    def _layer_rows(self, grads: GradientRows, identity_path: Optional[bool]) -> dict:
        """Sharing `layer`: each layer's own module. Unfused, one module call per layer;
        fused, the layers of one weight shape (same C and row count) run as one stacked
        computation: their rows and parameters concatenated on dim 0 ([L·B, …]), so each
        block is one batched matmul for the group instead of L (same arithmetic per image
        and layer; fewer kernel launches)."""
        groups: dict[tuple, list[str]] = OrderedDict()
        for name, (C, a, b, shape) in grads.layout.items():
            groups.setdefault(shape if self.fuse else (name,), []).append(name)
        out: dict[str, torch.Tensor] = {}
        for names in groups.values():
            C = grads.layout[names[0]][0]
            rows = [grads.rows[C][:, a:b] for (_, a, b, _) in map(grads.layout.get, names)]
            if len(names) == 1:
                out[names[0]] = self.module_of(names[0])(rows[0], identity_path=identity_path)
                continue
            mods = [self.module_of(n) for n in names]

            def cat(attr):
                first = getattr(mods[0], attr)
                return None if first is None else torch.cat([getattr(m, attr) for m in mods])

            z = residual_mlp(self.cfg, torch.cat(rows), cat("w1"), cat("b"), cat("w2"),
                             cat("s_post"), cat("s_pre"), None, identity_path)
            for n, part in zip(names, z.split(self.batch)):
                out[n] = part
        return OrderedDict((n, out[n]) for n in grads.layout)

    def forward(self, grads: GradientRows) -> "OrderedDict[str, torch.Tensor]":
        """Reparametrisation reading: Δ_l = −M(g_l) (× row scales), as weights."""
        deltas = OrderedDict()
        for name, r in self._module_rows(grads, None).items():
            if grads.scales is not None:
                r = r * grads.scales[name]
            deltas[name] = -from_rows(r, grads.layout[name][3])
        return deltas

    def direction(self, grads: GradientRows) -> "OrderedDict[str, torch.Tensor]":
        """Optimizer reading: M_opt(g) = g + ‖g_row‖ · (z_B − z_0)(g), as weights.

        With W₂ = 0 the branch term is an exact 0, so M_opt(g) = g bit for bit."""
        out = OrderedDict()
        for name, r in self._module_rows(grads, False).items():
            C, a, b, shape = grads.layout[name]
            g = grads.rows[C][:, a:b]
            out[name] = from_rows(g + g.norm(dim=-1, keepdim=True) * r, shape)
        return out

    def _named_modules_with_c(self):
        if self.cfg.sharing == "layer":
            for name, C in self.layer_channels.items():
                yield self.modules_by_layer[_key(name)], C
        else:
            for key, m in self.modules_by_c.items():
                yield m, int(key)

    def param_groups(self, lr: float, lr_scaling: str = "none") -> list[dict]:
        """Optimizer groups, one per module; lr_scaling 'fan_in' gives lr·512/C (lr is the
        rate of a C = 512 module; a module's output moves ∝ C·lr under Adam, see
        docs/method.md)."""
        groups = []
        for m, C in self._named_modules_with_c():
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
