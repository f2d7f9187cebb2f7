"""Build the networks a run needs from `Settings.models`: real checkpoints or demo nets.

`checkpoint: demo` builds seeded, randomly initialised networks of the official
architectures (docs/checkpoints.md#demo-networks), so the whole pipeline runs with nothing
downloaded; everything else is a registry name whose file must be under `data/checkpoints/`
(a clear error names the file, the profile and where to get it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..config.schema import ModelsSection
from ..safeload import CheckpointLoadError
from .registry import get_spec
from .store import require, require_verified

DEMO = "demo"
# the testbed's files that need a config file next to them (gani/testbed, issue 14)
TESTBED_CONFIGS = {"testbed-generator": "testbed-generator-config",
                   "testbed-e4e": "testbed-e4e-config"}


def _refit(path: Path, what: str, load):
    """Run `load()`; a checkpoint that reads but does not fit the architecture (a missing,
    unexpected or wrongly sized tensor, an unknown layout) becomes a CheckpointLoadError
    naming the file, instead of a bare RuntimeError/KeyError from load_state_dict."""
    try:
        return load()
    except CheckpointLoadError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[:4])[:600] or type(exc).__name__
        raise CheckpointLoadError(
            f"{path}: not a usable {what} checkpoint (wrong architecture or layout): "
            f"{detail}") from None
NONE_NAMES = {None, "", "none", "null"}


@dataclass
class SimilarityNets:
    """Optional networks of the similarity loss and metrics (None = that term is skipped)."""

    lpips: Optional[Any] = None
    identity: Optional[Any] = None
    identity_kind: Optional[str] = None  # arcface | curricularface | moco
    parser: Optional[Any] = None



def build_generator(models: ModelsSection, data_dir: str | Path = "data",
                    profile: str | None = None):
    """(Generator in eval mode, latent_avg [style_dim])."""
    from ..models.stylegan2 import Generator, load_stylegan2_checkpoint

    spec = models.generator
    if spec.checkpoint == DEMO:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            G = Generator(spec.size, style_dim=spec.style_dim, n_mlp=spec.n_mlp,
                          channel_multiplier=spec.channel_multiplier,
                          channel_max=spec.channel_max).eval()
        with torch.no_grad():
            latent_avg = G.mean_latent(4096, generator=torch.Generator().manual_seed(spec.seed))
        return G, latent_avg[0]
    if spec.checkpoint in TESTBED_CONFIGS:
        from ..testbed.load import load_generator

        path = require_verified(spec.checkpoint, data_dir, profile)
        cfg = require_verified(TESTBED_CONFIGS[spec.checkpoint], data_dir, profile)
        G, latent_avg = _refit(path, "testbed generator", lambda: load_generator(path, cfg))
        if G.size != spec.size:
            raise CheckpointLoadError(
                f"{path}: generator is {G.size} px but models.generator.size is {spec.size}; "
                f"fix params.yaml")
        return G, latent_avg
    path = require(spec.checkpoint, data_dir, profile)
    if get_spec(spec.checkpoint).kind == "encoder":  # the decoder inside an e4e file
        from ..models.e4e import load_e4e_checkpoint

        _, G, latent_avg = _refit(path, "e4e", lambda: load_e4e_checkpoint(path))
        return G.eval(), latent_avg.reshape(-1, G.style_dim)[0]
    G, latent_avg = _refit(path, "StyleGAN2 generator", lambda: load_stylegan2_checkpoint(path))
    if G.size != spec.size:
        raise CheckpointLoadError(
            f"{path}: generator is {G.size} px but models.generator.size is {spec.size}; "
            f"fix params.yaml or the checkpoint")
    return G, latent_avg


def build_encoder(models: ModelsSection, G, data_dir: str | Path = "data",
                  profile: str | None = None):
    """(E4EEncoder in eval mode, latent_avg [n_styles, style_dim]) or (None, None)."""
    from ..models.e4e import E4EEncoder, load_e4e_checkpoint

    spec = models.encoder
    if spec.checkpoint in NONE_NAMES:
        return None, None
    if spec.checkpoint == DEMO:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            enc = E4EEncoder(n_styles=G.n_latent, style_dim=G.style_dim,
                             width_div=spec.width_div).eval()
            # An untrained encoder's deltas are noise of unit scale; shrink its last layers
            # so the demo starts near the generator's average face, as a trained e4e does.
            with torch.no_grad():
                for block in enc.styles:
                    block.linear.weight.mul_(0.05)
                    block.linear.bias.zero_()
        with torch.no_grad():
            avg = G.mean_latent(4096, generator=torch.Generator().manual_seed(spec.seed))
        return enc, avg.repeat(G.n_latent, 1)
    if spec.checkpoint in TESTBED_CONFIGS:
        from ..testbed.load import load_encoder

        path = require_verified(spec.checkpoint, data_dir, profile)
        cfg = require_verified(TESTBED_CONFIGS[spec.checkpoint], data_dir, profile)
        enc, latent_avg = _refit(path, "testbed e4e", lambda: load_encoder(path, cfg))
        if enc.n_styles != G.n_latent:
            raise CheckpointLoadError(f"{path}: encoder has {enc.n_styles} styles, the "
                                      f"generator {G.n_latent}")
        return enc, latent_avg
    path = require(spec.checkpoint, data_dir, profile)
    enc, _, latent_avg = _refit(path, "e4e encoder", lambda: load_e4e_checkpoint(path))
    return enc.eval(), latent_avg


def build_similarity_nets(models: ModelsSection, data_dir: str | Path = "data",
                          profile: str | None = None) -> SimilarityNets:
    """LPIPS, identity and parser networks named in params (missing files are errors)."""
    nets = SimilarityNets()
    if models.lpips_backbone not in NONE_NAMES:
        from ..models.lpips_net import load_lpips

        nets.lpips = load_lpips(require(models.lpips_backbone, data_dir, profile))
    if models.id_net not in NONE_NAMES:
        kind = get_spec(models.id_net).name
        path = require(models.id_net, data_dir, profile)
        from ..safeload import load_torch_file

        if kind == "moco":
            from ..models.moco import load_moco

            nets.identity = load_moco(path).eval()
        else:
            from ..models.irse import IR101, IRSE50

            net = IR101() if kind == "curricularface" else IRSE50()
            state = load_torch_file(path)
            _refit(path, kind, lambda: net.load_state_dict(state, strict=True))
            nets.identity = net.eval()
        nets.identity_kind = kind
    if models.parser not in NONE_NAMES:
        from ..models.parsing import load_face_parser

        nets.parser = load_face_parser(require(models.parser, data_dir, profile)).eval()
    for net in (nets.lpips, nets.identity, nets.parser):
        if net is not None:
            net.requires_grad_(False)
    return nets
