"""Helpers shared by the tuning tests (a uniquely named module: test dirs are not packages)."""
from __future__ import annotations

import torch

from gani.config.schema import TuneSection
from gani.losses import SimilarityLoss


def tiny_generator(seed: int = 0):
    from gani.models.stylegan2 import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(32, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16).eval()
    G.requires_grad_(False)
    return G


def cfg_for(steps: int = 12, **over) -> TuneSection:
    """A small TuneSection (GANI's default reading): `over` maps dotted keys ('gmm.blocks')
    to values."""
    cfg = TuneSection(steps=steps, batch_size=2, log_every=1)
    cfg.projection.n_mean_latent = 256
    cfg.optimizer.lr = 3e-5  # fan_in scaling: 3e-5 · 512/16 ≈ 1e-3 for the tiny G's C = 16
    for key, value in over.items():
        obj = cfg
        *path, last = key.split(".")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, value)
    return cfg


def reparam_cfg(steps: int = 12, **over) -> TuneSection:
    """cfg_for in the reparam reading (θ' = θ − M_φ(g), paper Eq. 2), for the tests of it:
    the default reading is the optimizer one (tests of it: test_learned_optimizer.py)."""
    return cfg_for(steps, **{"gmm.reading": "reparam", **over})


def pixel_loss(cfg: TuneSection) -> SimilarityLoss:
    return SimilarityLoss(cfg.loss)
