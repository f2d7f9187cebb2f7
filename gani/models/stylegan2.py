"""StyleGAN2 generator in the rosinality layout (docs/checkpoints.md#stylegan2-generator), and
its checkpoint loader.

``Generator(size, ...)`` has exactly the state-dict keys of the official ``g_ema``
(``style.{j}``, ``input.input``, ``conv1``, ``to_rgb1``, ``convs.{n}``, ``to_rgbs.{k}``,
``noises.noise_{l}``, blur/upsample kernel buffers), so
``G.load_state_dict(ckpt["g_ema"])`` is strict.

W+ index → layer (docs/checkpoints.md#latent-indexing-and-noise): conv1 ← w[:, 0],
to_rgb1 ← w[:, 1]; at resolution 2^(k+3): convs.{2k} ← w[:, 2k+1], convs.{2k+1} ← w[:, 2k+2],
to_rgbs.{k} ← w[:, 2k+3].
Noise: noise_0 → conv1, noise_{2k+1} → convs.{2k}, noise_{2k+2} → convs.{2k+1}.

Per-sample weights: ``synthesis(..., weight_deltas={name: Δ})`` adds Δ to the stored weight
of the named modulated conv (names from ``modulated_convs()``), per sample when Δ has a
batch dimension B, so B differently-tuned generators render in one batched pass.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from ._state import read_checkpoint
from .stylegan2_layers import ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB

NOISE_MODES = ("const", "random", "none")

# channel table before the channel multiplier: res ≤ 32 → 512 (no m)
# (docs/checkpoints.md#hyper-parameters-and-channel-table)
_BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32,
                  1024: 16}


def channel_table(size: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict:
    """Channels per resolution 4..size, each capped at ``channel_max``."""
    table = {}
    for res, base in _BASE_CHANNELS.items():
        if res > size:
            break
        ch = base if res <= 32 else base * channel_multiplier
        table[res] = int(min(ch, channel_max))
    return table


def as_channel_table(channels: Mapping, size: int) -> dict:
    """A per-resolution channel mapping (keys int or str, e.g. from JSON) as
    {res: channels} for exactly the resolutions 4, 8, .., size, checked."""
    table = {int(r): int(c) for r, c in channels.items()}
    want = [2 ** i for i in range(2, int(math.log2(size)) + 1)]
    if sorted(table) != want:
        raise ValueError(f"channels must have exactly the resolutions {want}, got {sorted(table)}")
    bad = {r: c for r, c in table.items() if c <= 0}
    if bad:
        raise ValueError(f"channels must be positive, got {bad}")
    return {r: table[r] for r in want}


class Generator(nn.Module):
    """rosinality's StyleGAN2 ``Generator`` (config-f), pure PyTorch.

    size: output resolution, a power of two in 32..1024. ``channel_max`` caps the channel
    table (512 = official; testbeds use less). ``channels`` (optional, resolution → channels
    for every resolution 4..size, int or str keys) replaces the table, so the channel count
    can vary freely with resolution; ``channel_multiplier`` and ``channel_max`` are then
    unused. Without it the table is ``channel_table(size, channel_multiplier, channel_max)``,
    the official one. Attributes: ``size``, ``style_dim``,
    ``log_size``, ``n_latent`` (= 2·log2(size) − 2), ``num_layers`` (noise maps),
    ``channels`` (resolution → channels).
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8,
                 channel_multiplier: int = 2, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 lr_mlp: float = 0.01, channel_max: int = 512,
                 channels: Optional[Mapping] = None):
        super().__init__()
        log_size = int(math.log2(size))
        if 2 ** log_size != size or not 32 <= size <= 1024:
            raise ValueError(f"size must be a power of two in 32..1024, got {size}")
        self.size, self.style_dim, self.n_mlp = size, style_dim, n_mlp
        self.channel_multiplier, self.channel_max, self.lr_mlp = (
            channel_multiplier, channel_max, lr_mlp)
        self.blur_kernel = tuple(blur_kernel)
        self.log_size = log_size
        self.num_layers = (log_size - 2) * 2 + 1
        self.n_latent = log_size * 2 - 2
        self.custom_channels = channels is not None
        self.channels = (as_channel_table(channels, size) if channels is not None
                         else channel_table(size, channel_multiplier, channel_max))

        layers = [PixelNorm()]
        for _ in range(n_mlp):
            layers.append(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp,
                                      activation="fused_lrelu"))
        self.style = nn.Sequential(*layers)

        ch4 = self.channels[4]
        self.input = ConstantInput(ch4)
        self.conv1 = StyledConv(ch4, ch4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch4, style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res))

        in_ch = ch4
        for i in range(3, log_size + 1):
            out_ch = self.channels[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch

    # ------------------------------------------------------------------ config
    def config(self) -> dict:
        """Constructor kwargs that rebuild this architecture (``channels`` only when the
        table was given explicitly)."""
        cfg = dict(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp,
                   channel_multiplier=self.channel_multiplier,
                   blur_kernel=self.blur_kernel, lr_mlp=self.lr_mlp,
                   channel_max=self.channel_max)
        if self.custom_channels:
            cfg["channels"] = dict(self.channels)
        return cfg

    def modulated_convs(self) -> "OrderedDict[str, nn.Module]":
        """name → ModulatedConv2d, ordered conv1, to_rgb1, then per resolution
        convs.{2k}, convs.{2k+1}, to_rgbs.{k}. The weight of ``name`` is the checkpoint
        key ``{name}.conv.weight``."""
        out = OrderedDict()
        out["conv1"] = self.conv1.conv
        out["to_rgb1"] = self.to_rgb1.conv
        for k, to_rgb in enumerate(self.to_rgbs):
            out[f"convs.{2 * k}"] = self.convs[2 * k].conv
            out[f"convs.{2 * k + 1}"] = self.convs[2 * k + 1].conv
            out[f"to_rgbs.{k}"] = to_rgb.conv
        return out

    def noise_buffers(self) -> list:
        """The stored noise maps noise_0 .. noise_{num_layers−1}."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    # ------------------------------------------------------------------ mapping
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, style_dim] → w [B, style_dim] (PixelNorm + n_mlp EqualLinear+lrelu)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Mean of mapping(z) over n samples z ~ N(0, I) → [1, style_dim]."""
        p = self.input.input
        if generator is None:
            z = torch.randn(n, self.style_dim, device=p.device)
        else:
            z = torch.randn(n, self.style_dim, generator=generator, device=generator.device)
        return self.mapping(z.to(device=p.device, dtype=p.dtype)).mean(0, keepdim=True)

    # ------------------------------------------------------------------ synthesis
    def _noise_list(self, noise_mode: str, noise: Optional[Sequence]) -> list:
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
            return list(noise)
        if noise_mode == "const":
            return self.noise_buffers()
        if noise_mode in ("random", "none"):
            return [None] * self.num_layers
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")

    def synthesis(self, wplus: torch.Tensor, noise_mode: str = "const",
                  weight_deltas: Optional[Mapping[str, torch.Tensor]] = None,
                  noise: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """W+ latents [B, n_latent, style_dim] (or [B, style_dim], repeated) → [B, 3, H, W].

        noise_mode: "const" (stored buffers), "random" (fresh N(0,1)), "none" (zeros).
        ``noise`` (optional) overrides it with an explicit list of ``num_layers`` maps.
        weight_deltas: {modulated-conv name: Δ} added to the stored weights (see module doc).
        Output is not clamped (nominal range [−1, 1]).
        """
        if wplus.dim() == 2:
            wplus = wplus.unsqueeze(1).repeat(1, self.n_latent, 1)
        if wplus.dim() != 3 or wplus.shape[1] != self.n_latent:
            raise ValueError(f"expected W+ of shape [B, {self.n_latent}, {self.style_dim}], "
                             f"got {tuple(wplus.shape)}")
        deltas = dict(weight_deltas or {})
        unknown = set(deltas) - set(self.modulated_convs())
        if unknown:
            raise KeyError(f"unknown modulated-conv names in weight_deltas: {sorted(unknown)}")
        noises = self._noise_list(noise_mode, noise)
        add_noise = noise is not None or noise_mode != "none"

        out = self.input(wplus.shape[0])
        out = self.conv1(out, wplus[:, 0], noise=noises[0], delta=deltas.get("conv1"),
                         add_noise=add_noise)
        skip = self.to_rgb1(out, wplus[:, 1], delta=deltas.get("to_rgb1"))
        i = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            up, conv = self.convs[2 * k], self.convs[2 * k + 1]
            out = up(out, wplus[:, i], noise=noises[2 * k + 1],
                     delta=deltas.get(f"convs.{2 * k}"), add_noise=add_noise)
            out = conv(out, wplus[:, i + 1], noise=noises[2 * k + 2],
                       delta=deltas.get(f"convs.{2 * k + 1}"), add_noise=add_noise)
            skip = to_rgb(out, wplus[:, i + 2], skip, delta=deltas.get(f"to_rgbs.{k}"))
            i += 2
        return skip

    # ------------------------------------------------------------------ forward
    def forward(self, styles, input_is_latent: bool = False, truncation: float = 1.0,
                truncation_latent: Optional[torch.Tensor] = None, noise_mode: str = "const",
                inject_index: Optional[int] = None,
                weight_deltas: Optional[Mapping[str, torch.Tensor]] = None) -> torch.Tensor:
        """rosinality-style convenience forward; returns the image only.

        styles: a tensor or a list of one or two tensors ([B, style_dim] z or w, or
        [B, n_latent, style_dim] W+ when ``input_is_latent``). Two styles mix at
        ``inject_index`` (random in 1..n_latent−1 when None). Truncation (ψ < 1) needs
        ``truncation_latent``.
        """
        if torch.is_tensor(styles):
            styles = [styles]
        styles = list(styles)
        if not input_is_latent:
            styles = [self.mapping(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. G.mean_latent(4096))")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        def as_wplus(s: torch.Tensor) -> torch.Tensor:
            return s if s.dim() == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1)

        if len(styles) == 1:
            latent = as_wplus(styles[0])
        elif len(styles) == 2:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, ()).item())
            a, b = as_wplus(styles[0]), as_wplus(styles[1])
            latent = torch.cat([a[:, :inject_index], b[:, inject_index:]], 1)
        else:
            raise ValueError("styles must hold one or two tensors")
        return self.synthesis(latent, noise_mode=noise_mode, weight_deltas=weight_deltas)


# ---------------------------------------------------------------------- checkpoints
def generator_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """Infer Generator kwargs (size, style_dim, n_mlp, channel_multiplier, channel_max)
    from the shapes of a rosinality ``g_ema`` state dict. A channel table that no
    (multiplier, cap) pair produces is returned as ``channels`` instead (with
    ``channel_max`` = its largest count)."""
    try:
        style_dim = int(sd["style.1.weight"].shape[1])
        n_mlp = sum(1 for k in sd if re.fullmatch(r"style\.\d+\.weight", k))
        n_rgbs = sum(1 for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k))
        log_size = n_rgbs + 2
        size = 2 ** log_size
        chans = {4: int(sd["input.input"].shape[1])}
        for k in range(n_rgbs):
            chans[2 ** (k + 3)] = int(sd[f"convs.{2 * k}.conv.weight"].shape[1])
    except KeyError as exc:
        raise ValueError(f"not a rosinality StyleGAN2 generator state dict: missing {exc}") from None
    cmax = max(chans.values())
    mult = 2
    uncapped = [r for r in chans if r >= 64 and chans[r] < cmax]
    if uncapped:
        r = uncapped[0]
        mult = chans[r] // _BASE_CHANNELS[r]
    elif size >= 64:
        mult = max(2, math.ceil(cmax / _BASE_CHANNELS[size]))
    cfg = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=mult,
               channel_max=cmax)
    if channel_table(size, mult, cmax) != chans:
        cfg = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_max=cmax,
                   channels=chans)
    return cfg


def _state_dict_from(obj: Any, key: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and key in obj:
        return obj[key]
    raise ValueError(f"checkpoint has no '{key}' entry (keys: {sorted(obj)[:10]})"
                     if isinstance(obj, Mapping) else "checkpoint is not a dict")


def load_stylegan2_checkpoint(path_or_dict: Any, key: str = "g_ema",
                              latent_avg_samples: int = 10000) -> tuple:
    """Load a rosinality ``stylegan2-*.pt`` (file path or the loaded dict).

    Returns (Generator in eval mode, latent_avg [style_dim]). The architecture is inferred
    from the state-dict shapes and the weights loaded strictly. A checkpoint without
    ``latent_avg`` gets mean_latent(latent_avg_samples) with a fixed seed (as e4e does).
    """
    ckpt = read_checkpoint(path_or_dict)
    sd = _state_dict_from(ckpt, key)
    G = Generator(**generator_config_from_state_dict(sd))
    G.load_state_dict(sd, strict=True)
    G.eval()
    latent_avg = ckpt.get("latent_avg") if isinstance(ckpt, Mapping) else None
    if latent_avg is None:
        latent_avg = G.mean_latent(latent_avg_samples,
                                   generator=torch.Generator().manual_seed(0))
    latent_avg = torch.as_tensor(latent_avg).detach().float().cpu().reshape(-1, G.style_dim)[0]
    return G, latent_avg


def rosinality_checkpoint(G: Generator, latent_avg: Optional[torch.Tensor] = None) -> dict:
    """The dict ``{"g_ema": state_dict, "latent_avg": [style_dim]}`` that
    ``torch.save`` turns into a rosinality-format file."""
    out = {"g_ema": {k: v.detach().cpu() for k, v in G.state_dict().items()}}
    if latent_avg is not None:
        out["latent_avg"] = latent_avg.detach().cpu().reshape(-1)[: G.style_dim].clone()
    return out
