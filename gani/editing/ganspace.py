"""GANSpace edits: PCA directions of the mapping network's output
(docs/protocols.md#ganspace).

PCA dict format (the e4e/HyperStyle files and `compute_ganspace_pca` alike):
``{"mean": [1, D], "comp": [K, 1, D], "std": [K]}``.

An edit is a tuple (component, start, end, strength). Applied to a W+ latent L [N, D]
exactly as e4e's `editings/ganspace.py` does:

    coord = <L[0] − mean, comp[idx]> / std[idx]          (layer 0 only)
    delta = (strength − coord) · comp[idx] · std[idx]
    L[start:end] += delta                                 (end exclusive; other rows unchanged)

so `strength` is the absolute target coordinate along the component in std units, not an
increment. With unit-norm components the edited row 0 (when start = 0) sits exactly at
`strength`; the published files' components are not unit norm (0.85–1.09), and we keep
their formula unchanged so results match the published ones.

Generators with fewer layers: `end` is clipped to n_latent (an edit whose `start` is past
the last layer changes nothing and warns).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import torch

from gani.safeload import load_torch_file


class GANSpaceDirection(NamedTuple):
    component: int
    start: int
    end: int      # exclusive
    strength: float


# e4e notebook (taken from GANSpace), confirmed by HyperStyle; docs/protocols.md#ganspace
FFHQ_GANSPACE_EDITS: dict[str, GANSpaceDirection] = {
    "eye_openness": GANSpaceDirection(54, 7, 8, 20),
    "smile": GANSpaceDirection(46, 4, 5, -20),
    "trimmed_beard": GANSpaceDirection(58, 7, 9, 20),
    "white_hair": GANSpaceDirection(57, 7, 10, -24),
    "lipstick": GANSpaceDirection(34, 10, 11, 20),
}

CARS_GANSPACE_EDITS: dict[str, GANSpaceDirection] = {
    "viewpoint_1": GANSpaceDirection(0, 0, 5, 2),
    "viewpoint_2": GANSpaceDirection(0, 0, 5, -2),
    "cube": GANSpaceDirection(16, 3, 6, 25),
    "color": GANSpaceDirection(22, 9, 11, -8),
    "grass": GANSpaceDirection(41, 9, 11, -18),
}

DEFAULT_GANSPACE_EDITS: dict[str, dict[str, GANSpaceDirection]] = {
    "ffhq": FFHQ_GANSPACE_EDITS,
    "cars": CARS_GANSPACE_EDITS,
}

PCA = dict  # {"mean": Tensor[1,D], "comp": Tensor[K,1,D], "std": Tensor[K]}


def validate_pca(pca: PCA, style_dim: Optional[int] = None) -> PCA:
    """Check keys and shapes; return float32 CPU copies."""
    missing = [k for k in ("mean", "comp", "std") if k not in pca]
    if missing:
        raise ValueError(f"GANSpace PCA lacks {missing}; has {list(pca)}")
    mean = torch.as_tensor(pca["mean"]).detach().to("cpu", torch.float32)
    comp = torch.as_tensor(pca["comp"]).detach().to("cpu", torch.float32)
    std = torch.as_tensor(pca["std"]).detach().to("cpu", torch.float32)
    if mean.dim() == 1:
        mean = mean.unsqueeze(0)
    if comp.dim() == 2:
        comp = comp.unsqueeze(1)
    if mean.shape[0] != 1 or comp.dim() != 3 or comp.shape[1] != 1 or std.dim() != 1 \
            or comp.shape[0] != std.shape[0] or comp.shape[2] != mean.shape[1]:
        raise ValueError(f"GANSpace PCA shapes must be mean [1,D], comp [K,1,D], std [K]; got "
                         f"{tuple(mean.shape)}, {tuple(comp.shape)}, {tuple(std.shape)}")
    if style_dim is not None and mean.shape[1] != style_dim:
        raise ValueError(f"PCA width {mean.shape[1]} != generator style_dim {style_dim}: "
                         f"it was computed for a different generator")
    return {"mean": mean, "comp": comp, "std": std}


def load_pca(path: Union[str, Path]) -> PCA:
    """Read a GANSpace PCA file (weights-only torch load, CPU)."""
    obj = load_torch_file(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict with mean/comp/std, got {type(obj).__name__}")
    return validate_pca(obj)


def _as_direction(edit) -> GANSpaceDirection:
    if isinstance(edit, GANSpaceDirection):
        return edit
    if hasattr(edit, "component"):  # e.g. the pydantic config model
        return GANSpaceDirection(int(edit.component), int(edit.start), int(edit.end),
                                 float(edit.strength))
    idx, start, end, strength = edit
    return GANSpaceDirection(int(idx), int(start), int(end), float(strength))


def ganspace_coordinate(wplus: torch.Tensor, pca: PCA, component: int) -> torch.Tensor:
    """<L[0] − mean, comp[idx]> / std[idx] for each latent in the batch → [B] (or scalar)."""
    squeeze = wplus.dim() == 2
    w = wplus.unsqueeze(0) if squeeze else wplus
    mean = pca["mean"].to(w.device, w.dtype).reshape(-1)
    comp = pca["comp"][component].to(w.device, w.dtype).reshape(-1)
    std = pca["std"][component].to(w.device, w.dtype)
    coord = ((w[:, 0] - mean) * comp).sum(-1) / std
    return coord[0] if squeeze else coord


def ganspace_delta(wplus: torch.Tensor, pca: PCA, edit) -> torch.Tensor:
    """The per-row delta [B, N, D] (zeros outside start..end−1) that `apply_ganspace` adds."""
    e = _as_direction(edit)
    squeeze = wplus.dim() == 2
    w = wplus.unsqueeze(0) if squeeze else wplus
    if w.dim() != 3:
        raise ValueError(f"wplus must be [B, N, D] or [N, D], got {tuple(wplus.shape)}")
    pca = validate_pca(pca, style_dim=w.shape[2])
    k = pca["comp"].shape[0]
    if not 0 <= e.component < k:
        raise ValueError(f"GANSpace component {e.component} out of range (PCA has {k})")
    n = w.shape[1]
    start, end = max(e.start, 0), min(e.end, n)
    delta = torch.zeros_like(w)
    if start >= end:
        warnings.warn(f"GANSpace edit {tuple(e)} touches no layer of a {n}-layer W+; unchanged")
        return delta.squeeze(0) if squeeze else delta
    coord = ganspace_coordinate(w, pca, e.component)                       # [B]
    comp = pca["comp"][e.component].to(w.device, w.dtype).reshape(1, -1)   # [1, D]
    std = pca["std"][e.component].to(w.device, w.dtype)
    row = (e.strength - coord).unsqueeze(-1) * comp * std                  # [B, D]
    delta[:, start:end] = row.unsqueeze(1)
    return delta.squeeze(0) if squeeze else delta


def apply_ganspace(wplus: torch.Tensor, pca: PCA, edit) -> torch.Tensor:
    """Apply one GANSpace edit (component, start, end, strength); returns a new tensor."""
    return wplus + ganspace_delta(wplus, pca, edit)


@torch.no_grad()
def compute_ganspace_pca(G, n_samples: int = 10_000, n_components: int = 80, seed: int = 0,
                         batch_size: int = 1000, device: Optional[Union[str, torch.device]] = None
                         ) -> PCA:
    """PCA of G's mapping outputs w = G.mapping(z), z ~ N(0, I) seeded: the GANSpace recipe.

    Returns the file format above: orthonormal components (rows of Vᵀ, sign fixed so each
    component's largest-magnitude entry is positive) and std = singular value / √(n − 1),
    i.e. the standard deviation of w along each component. K = min(n_components, n_samples,
    style_dim).
    """
    style_dim = int(G.style_dim)
    if n_samples < 2:
        raise ValueError("n_samples must be ≥ 2")
    if device is None:
        try:
            device = next(G.parameters()).device
        except (AttributeError, StopIteration):
            device = torch.device("cpu")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    ws = []
    for i in range(0, n_samples, batch_size):
        b = min(batch_size, n_samples - i)
        z = torch.randn(b, style_dim, generator=gen)
        ws.append(G.mapping(z.to(device)).detach().to("cpu", torch.float64))
    w = torch.cat(ws)
    mean = w.mean(0, keepdim=True)
    x = w - mean
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(int(n_components), vh.shape[0])
    comp = vh[:k]
    idx = comp.abs().argmax(dim=1)
    signs = torch.sign(comp[torch.arange(k), idx])
    signs[signs == 0] = 1
    comp = comp * signs.unsqueeze(1)
    std = s[:k] / math.sqrt(n_samples - 1)
    return {"mean": mean.float(), "comp": comp.float().unsqueeze(1), "std": std.float()}


def edits_for_domain(domain: str) -> dict[str, GANSpaceDirection]:
    """The published GANSpace edit list for a domain ({} where none was published)."""
    return dict(DEFAULT_GANSPACE_EDITS.get(domain, {}))


def named_edits(edits: Union[dict, Sequence]) -> dict[str, GANSpaceDirection]:
    """Normalise {name: tuple} / [config models with .name] into {name: GANSpaceDirection}."""
    if isinstance(edits, dict):
        return {str(k): _as_direction(v) for k, v in edits.items()}
    return {str(e.name): _as_direction(e) for e in edits}
