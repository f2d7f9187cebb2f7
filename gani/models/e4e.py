"""e4e encoder (``Encoder4Editing(50, 'ir_se')``, docs/checkpoints.md#e4e-encoder) and its
checkpoint loader.

IR-SE50 body (units from gani.models.irse), taps after units 6 / 20 / 23 (c1, c2, c3),
one GradualStyleBlock per W+ entry (spatial 16 for i < 3, 32 for i < 7, else 64), FPN
merge with bilinear align_corners=True. ``E(x)`` returns w0 repeated plus the per-entry
deltas, i.e. W+ BEFORE ``latent_avg`` is added (docs/output-contract.md#python-api).

``width_div`` divides every channel count for small demo networks (8 → body depths
8/16/32/64, style-block channels 64); 1 is the official layout.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._state import TolerantBNLoading, read_checkpoint, strip_prefix
from .irse import make_body, make_input_layer
from .stylegan2 import Generator, generator_config_from_state_dict
from .stylegan2_layers import EqualLinear

COARSE_IND, MIDDLE_IND = 3, 7
TAPS = {6: "c1", 20: "c2", 23: "c3"}


class GradualStyleBlock(nn.Module):
    """log2(spatial) × [3×3 stride-2 conv (bias) → LeakyReLU(0.01)] → flatten →
    EqualLinear (keys ``convs.{2j}``, ``linear``)."""

    def __init__(self, in_c: int, out_c: int, spatial: int, style_dim: int | None = None):
        super().__init__()
        self.out_c = out_c
        n_pools = int(np.log2(spatial))
        mods = [nn.Conv2d(in_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        for _ in range(n_pools - 1):
            mods += [nn.Conv2d(out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*mods)
        self.linear = EqualLinear(out_c, style_dim or out_c, lr_mul=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"style block ended at {tuple(x.shape[-2:])}, expected 1×1: "
                             "input resolution does not fit the encoder")
        return self.linear(x.reshape(x.shape[0], self.out_c))


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of x to y's H×W (align_corners=True), plus y."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class E4EEncoder(TolerantBNLoading, nn.Module):
    """Encoder4Editing: image [B, 3, H, W] in [−1, 1] → W+ deltas [B, n_styles, style_dim].

    Works for 256×256 faces and 192×256 cars (any size whose stride-2 chains end at 1×1).
    """

    def __init__(self, n_styles: int = 14, style_dim: int = 512, width_div: int = 1):
        super().__init__()
        if n_styles < 1:
            raise ValueError("n_styles must be positive")
        self.n_styles, self.style_dim, self.width_div = n_styles, style_dim, width_div
        c = 512 // width_div
        self.input_layer = make_input_layer(width_div)
        self.body = make_body(50, "ir_se", width_div)
        self.styles = nn.ModuleList()
        for i in range(n_styles):
            spatial = 16 if i < COARSE_IND else 32 if i < MIDDLE_IND else 64
            self.styles.append(GradualStyleBlock(c, c, spatial, style_dim))
        self.latlayer1 = nn.Conv2d(256 // width_div, c, 1, 1, 0)
        self.latlayer2 = nn.Conv2d(128 // width_div, c, 1, 1, 0)

    def features(self, x: torch.Tensor) -> dict:
        """Body taps c1 (after unit 6), c2 (unit 20), c3 (unit 23)."""
        x = self.input_layer(x)
        taps = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in TAPS:
                taps[TAPS[i]] = x
        return taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.features(x)
        c1, c2, c3 = t["c1"], t["c2"], t["c3"]
        w0 = self.styles[0](c3)
        w = w0.unsqueeze(1).repeat(1, self.n_styles, 1)
        deltas = [torch.zeros_like(w0)]
        feats = c3
        p2 = None
        for i in range(1, self.n_styles):
            if i == COARSE_IND:
                p2 = upsample_add(c3, self.latlayer1(c2))
                feats = p2
            elif i == MIDDLE_IND:
                feats = upsample_add(p2, self.latlayer2(c1))
            deltas.append(self.styles[i](feats))
        return w + torch.stack(deltas, 1)


def _opts_dict(opts: Any) -> dict:
    if opts is None:
        return {}
    if isinstance(opts, Mapping):
        return dict(opts)
    return dict(vars(opts))


def encoder_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """Infer (n_styles, style_dim, width_div) from an encoder state dict (no prefix)."""
    try:
        width_div = 64 // int(sd["input_layer.0.weight"].shape[0])
        n_styles = sum(1 for k in sd if re.fullmatch(r"styles\.\d+\.linear\.weight", k))
        style_dim = int(sd["styles.0.linear.weight"].shape[0])
    except KeyError as exc:
        raise ValueError(f"not an e4e encoder state dict: missing {exc}") from None
    return dict(n_styles=n_styles, style_dim=style_dim, width_div=width_div)


def _latent_avg_rows(latent_avg: Any, n: int, style_dim: int) -> torch.Tensor:
    la = torch.as_tensor(latent_avg).detach().float().cpu()
    la = la.reshape(-1, style_dim)
    if la.shape[0] == 1:
        return la.repeat(n, 1)
    if la.shape[0] < n:
        raise ValueError(f"latent_avg has {la.shape[0]} rows, the encoder needs {n}")
    return la[:n].clone()


def load_e4e_checkpoint(path_or_dict: Any) -> tuple:
    """Load an ``e4e_*_encode.pt`` (path or loaded dict).

    Returns (E4EEncoder, decoder Generator, latent_avg [n_styles, style_dim]), both networks
    strictly loaded, in eval mode. Sizes come from ``opts['stylegan_size']`` and are checked
    against the state-dict shapes; ``encoder.opts`` keeps the opts dict. latent_avg may be
    stored as [512], [1, 512] or [N, 512]; when absent it is the decoder's
    mean_latent(10000) with a fixed seed, as the reference code computes it.
    """
    ckpt = read_checkpoint(path_or_dict)
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ValueError("not an e4e checkpoint: no 'state_dict' entry")
    sd = ckpt["state_dict"]
    enc_sd, dec_sd = strip_prefix(sd, "encoder."), strip_prefix(sd, "decoder.")
    if not enc_sd or not dec_sd:
        raise ValueError("e4e state_dict needs both 'encoder.' and 'decoder.' keys")
    opts = _opts_dict(ckpt.get("opts"))

    g_cfg = generator_config_from_state_dict(dec_sd)
    size = opts.get("stylegan_size")
    if size is not None and int(size) != g_cfg["size"]:
        raise ValueError(f"opts.stylegan_size={size} but the decoder is {g_cfg['size']} px")
    decoder = Generator(**g_cfg)
    decoder.load_state_dict(dec_sd, strict=True)
    decoder.eval()

    e_cfg = encoder_config_from_state_dict(enc_sd)
    expected = 2 * int(math.log2(g_cfg["size"])) - 2
    if e_cfg["n_styles"] not in (expected, 18):
        raise ValueError(f"encoder has {e_cfg['n_styles']} style blocks; a "
                         f"{g_cfg['size']}-px decoder needs {expected}")
    encoder = E4EEncoder(**e_cfg)
    encoder.load_state_dict(enc_sd, strict=True)
    encoder.eval()
    encoder.opts = opts

    latent_avg = ckpt.get("latent_avg")
    if latent_avg is None:
        latent_avg = decoder.mean_latent(10000, generator=torch.Generator().manual_seed(0))
    latent_avg = _latent_avg_rows(latent_avg, e_cfg["n_styles"], e_cfg["style_dim"])
    return encoder, decoder, latent_avg


def e4e_checkpoint(encoder: E4EEncoder, decoder: Generator, latent_avg: torch.Tensor,
                   opts: Mapping | None = None) -> dict:
    """The e4e file layout: {'state_dict' (encoder./decoder. prefixes), 'opts',
    'latent_avg'}; ``opts['stylegan_size']`` is set from the decoder."""
    sd = {f"encoder.{k}": v.detach().cpu() for k, v in encoder.state_dict().items()}
    sd.update({f"decoder.{k}": v.detach().cpu() for k, v in decoder.state_dict().items()})
    opts = dict(opts or {})
    opts.setdefault("stylegan_size", decoder.size)
    opts.setdefault("encoder_type", "Encoder4Editing")
    opts.setdefault("start_from_latent_avg", True)
    return {"state_dict": sd, "opts": opts, "latent_avg": latent_avg.detach().cpu().clone()}
