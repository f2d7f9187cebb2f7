"""The testbed e4e encoder at run time: load its file, encode images (the trainer is in
``benchmarks/testbed/core/encoder.py``).

The encoder is our ``E4EEncoder`` (gani.models.e4e, the official key layout) with
``width_div`` 8 and ``n_styles`` = G.n_latent, reading the 32-px image bilinearly upsampled
to ``input_size`` 64. Its W+ code is ``E(x) + latent_avg`` (start_from_latent_avg). File
format: ``<name>.safetensors`` holds ``encoder.*`` weights and ``latent_avg`` [L, D];
``<name>.json`` next to it holds ``n_styles``, ``style_dim``, ``width_div``, ``input_size``
and the training record.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from gani.models.e4e import E4EEncoder


def encoder_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images [B, 3, h, w] in [−1, 1] → the encoder's input size (bilinear)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def encode(E: E4EEncoder, latent_avg: torch.Tensor, x: torch.Tensor, input_size: int,
           mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W+ [B, L, D], deltas [B, L, D]); masked deltas are dropped (ŵ_i = ŵ_0)."""
    w = E(encoder_input(x, input_size))
    deltas = w - w[:, :1]
    if mask is not None:
        deltas = deltas * mask.to(w)[None, :, None]
    return w[:, :1] + deltas + latent_avg.to(w), deltas


def load_encoder(path: Path) -> tuple[E4EEncoder, torch.Tensor, dict]:
    """(encoder in eval mode, latent_avg [L, D], its JSON config) from save_encoder's files;
    the config gets ``sha256`` of the weights file, hashed from the bytes that were loaded."""
    from safetensors.torch import load

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    raw = path.read_bytes()
    meta["sha256"] = hashlib.sha256(raw).hexdigest()
    sd = load(raw)
    E = E4EEncoder(n_styles=meta["n_styles"], style_dim=meta["style_dim"],
                   width_div=meta["width_div"])
    E.load_state_dict({k[len("encoder."):]: v for k, v in sd.items()
                       if k.startswith("encoder.")}, strict=True)
    return E.eval().requires_grad_(False), sd["latent_avg"], meta


@torch.no_grad()
def encode_images(E: E4EEncoder, latent_avg: torch.Tensor, x: torch.Tensor, input_size: int,
                  batch: int = 64) -> torch.Tensor:
    """W+ codes [N, L, D] of images [N, 3, H, W] in [−1, 1] (all deltas active)."""
    return torch.cat([encode(E, latent_avg, x[i:i + batch], input_size)[0]
                      for i in range(0, x.shape[0], batch)])
