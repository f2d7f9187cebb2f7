"""InterFaceGAN linear directions in W / W+ (docs/protocols.md#interfacegan).

An edit is w_edit = w + factor · d for every W+ row. Direction files are tensors of shape
[1, 512] (age, smile: one vector broadcast to all rows) or [1, 18, 512] (pose: one row per
FFHQ-1024 layer, saved on a CUDA device). They are read with `load_torch_file`
(map_location cpu, weights_only), so CUDA-saved files load on CPU machines.

Generators of another size: a per-layer direction keeps its first `n_latent` rows (the
coarse-to-fine order is the same at every resolution); a [1, D] direction broadcasts. A
direction of another width than the generator's `style_dim` is an error (it belongs to a
different network).
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from gani.safeload import load_torch_file


def load_direction(path: Union[str, Path]) -> torch.Tensor:
    """Read an InterFaceGAN direction file into a float32 CPU tensor ([1,D] or [1,N,D])."""
    obj = load_torch_file(path)
    if isinstance(obj, dict):  # tolerate {'direction': t} style wrappers
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise ValueError(f"{path}: expected a tensor, got a dict with keys {list(obj)}")
        obj = tensors[0]
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor, got {type(obj).__name__}")
    d = obj.detach().to("cpu", torch.float32)
    if d.dim() == 1:
        d = d.unsqueeze(0)
    if d.dim() not in (2, 3) or d.shape[0] != 1:
        raise ValueError(f"{path}: direction must be [1, D] or [1, N, D], got {tuple(d.shape)}")
    return d


def adapt_direction(direction: torch.Tensor, n_latent: int, style_dim: int) -> torch.Tensor:
    """Shape a direction for a generator: [1, 1, D] (broadcast) or [1, n_latent, D]."""
    d = torch.as_tensor(direction)
    if d.dim() == 1:
        d = d.view(1, 1, -1)
    elif d.dim() == 2:
        if d.shape[0] != 1:  # [N, D] per-layer without the batch axis
            d = d.unsqueeze(0)
        else:
            d = d.unsqueeze(1)
    if d.dim() != 3 or d.shape[0] != 1:
        raise ValueError(f"direction must be [D], [1, D], [N, D] or [1, N, D]; got "
                         f"{tuple(direction.shape)}")
    if d.shape[-1] != style_dim:
        raise ValueError(f"direction width {d.shape[-1]} != generator style_dim {style_dim}: "
                         f"it was made for a different generator")
    if d.shape[1] == 1:
        return d
    if d.shape[1] < n_latent:
        raise ValueError(f"per-layer direction has {d.shape[1]} rows but the generator has "
                         f"n_latent={n_latent}")
    return d[:, :n_latent]


def apply_interfacegan(wplus: torch.Tensor, direction: torch.Tensor,
                       factor: float) -> torch.Tensor:
    """w + factor · direction on every row of W+ ([B, N, D] or [N, D]); returns a new tensor."""
    squeeze = wplus.dim() == 2
    w = wplus.unsqueeze(0) if squeeze else wplus
    if w.dim() != 3:
        raise ValueError(f"wplus must be [B, N, D] or [N, D], got {tuple(wplus.shape)}")
    d = adapt_direction(direction, w.shape[1], w.shape[2]).to(w.device, w.dtype)
    out = w + float(factor) * d
    return out.squeeze(0) if squeeze else out
