"""The testbed's networks from their registry files (paths given by
``gani.checkpoints.store.require_verified``, which has checked their sha256)."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def load_generator(weights: str | Path, config: str | Path):
    """(Generator in eval mode, latent_avg [style_dim]) from ``g_ema.safetensors`` (official
    g_ema keys) and ``generator.json`` (the constructor's arguments). latent_avg is the mean
    of 10 000 mapped z (seed 0), as the testbed's encoder was trained with."""
    from safetensors.torch import load

    from gani.models.stylegan2 import Generator

    cfg = json.loads(Path(config).read_text())
    cfg["blur_kernel"] = tuple(cfg.get("blur_kernel", (1, 3, 3, 1)))
    G = Generator(**cfg)
    G.load_state_dict(load(Path(weights).read_bytes()), strict=True)
    G = G.eval().requires_grad_(False)
    with torch.no_grad():
        latent_avg = G.mean_latent(10000, generator=torch.Generator().manual_seed(0))
    return G, latent_avg.reshape(-1)[: G.style_dim]


def load_encoder(weights: str | Path, config: str | Path):
    """(E4EEncoder in eval mode with ``input_size`` set, latent_avg [n_styles, style_dim]).
    The encode stage resizes each aligned image to ``E.input_size`` (64 px)."""
    from .encoder import load_encoder as _load

    weights = Path(weights)
    if Path(config).resolve() != weights.with_suffix(".json").resolve():
        raise ValueError(f"{config}: the encoder's config must sit next to it as "
                         f"{weights.with_suffix('.json').name}")
    E, latent_avg, meta = _load(weights)
    E.input_size = int(meta["input_size"])
    return E, latent_avg


def load_directions(path: str | Path) -> dict[str, torch.Tensor]:
    """{attribute: unit direction [1, style_dim]}."""
    from gani.safeload import load_torch_file

    dirs = load_torch_file(path)
    if not isinstance(dirs, dict):
        raise ValueError(f"{path}: expected a dict of directions, got {type(dirs).__name__}")
    return {str(k): torch.as_tensor(v).float().reshape(1, -1) for k, v in dirs.items()}
