"""Files in the official containers (rosinality .pt, e4e .pt) survive save → load unchanged."""
import argparse

import pytest
import torch

from gani.models import (E4EEncoder, Generator, e4e_checkpoint, generator_config_from_state_dict,
                         load_e4e_checkpoint, load_stylegan2_checkpoint, rosinality_checkpoint)


def tiny_g(size=64, seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"style_dim": 64, "n_mlp": 2, "channel_max": 32, **kw}
    return Generator(size, **kw).eval()


@pytest.mark.parametrize("cfg", [
    dict(size=64, style_dim=64, n_mlp=2, channel_multiplier=2, channel_max=32),
    dict(size=128, style_dim=32, n_mlp=4, channel_multiplier=1, channel_max=512),
    dict(size=256, style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=256),
    dict(size=512, style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=512),
    dict(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=512),
])
def test_generator_config_inferred_from_shapes(cfg):
    with torch.device("meta"):
        G = Generator(**cfg)
    got = generator_config_from_state_dict(G.state_dict())
    with torch.device("meta"):
        G2 = Generator(**got)
    assert got["size"] == cfg["size"] and got["style_dim"] == cfg["style_dim"]
    assert G2.channels == G.channels and got["n_mlp"] == cfg["n_mlp"]


def test_rosinality_file_round_trip(tmp_path):
    G = tiny_g()
    latent_avg = G.mean_latent(64)[0]
    ckpt = rosinality_checkpoint(G, latent_avg)
    ckpt["g"] = ckpt["g_ema"]  # converter/training extras are ignored
    ckpt["args"] = argparse.Namespace(size=64, channel_multiplier=2)
    path = tmp_path / "stylegan2-test-config-f.pt"
    torch.save(ckpt, path)

    G2, la2 = load_stylegan2_checkpoint(path)
    assert G2.config() == G.config() and not G2.training
    torch.testing.assert_close(la2, latent_avg)
    assert G2.state_dict().keys() == G.state_dict().keys()
    for k, v in G.state_dict().items():
        assert torch.equal(v, G2.state_dict()[k]), k
    w = torch.randn(2, G.n_latent, 64)
    with torch.no_grad():
        assert torch.equal(G.synthesis(w), G2.synthesis(w))


def test_rosinality_without_latent_avg_uses_seeded_mean_latent():
    G = tiny_g(32)
    ckpt = {"g_ema": G.state_dict()}
    _, a = load_stylegan2_checkpoint(ckpt, latent_avg_samples=500)
    _, b = load_stylegan2_checkpoint(ckpt, latent_avg_samples=500)
    assert a.shape == (64,) and torch.equal(a, b)
    with pytest.raises(ValueError, match="g_ema"):
        load_stylegan2_checkpoint({"state_dict": {}})


def _e4e_pair(size=64, seed=0):
    G = tiny_g(size, seed)
    torch.manual_seed(seed + 1)
    E = E4EEncoder(n_styles=G.n_latent, style_dim=64, width_div=8).eval()
    return E, G


@pytest.mark.parametrize("avg_shape", ["flat", "one_row", "rows"])
def test_e4e_file_round_trip(tmp_path, avg_shape):
    E, G = _e4e_pair()
    n = G.n_latent
    avg = torch.randn(64)
    stored = {"flat": avg, "one_row": avg[None], "rows": avg.repeat(n, 1)}[avg_shape]
    opts = {"dataset_type": "ffhq_encode", "encoder_type": "Encoder4Editing",
            "stylegan_size": 64, "start_from_latent_avg": True}
    ckpt = e4e_checkpoint(E, G, stored, opts)
    sd = ckpt["state_dict"]
    assert all(k.startswith(("encoder.", "decoder.")) for k in sd)
    assert sum(k.startswith("encoder.") for k in sd) == len(E.state_dict())
    assert sum(k.startswith("decoder.") for k in sd) == len(G.state_dict())
    path = tmp_path / "e4e_test_encode.pt"
    torch.save(ckpt, path)

    E2, G2, la = load_e4e_checkpoint(path)
    assert la.shape == (n, 64)
    torch.testing.assert_close(la, avg.repeat(n, 1))
    assert E2.opts["dataset_type"] == "ffhq_encode" and not E2.training and not G2.training
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(E(x), E2(x))
        w = E2(x) + la
        assert torch.equal(G.synthesis(w), G2.synthesis(w))


def test_e4e_loader_accepts_namespace_opts_and_checks_size():
    E, G = _e4e_pair(32)
    ckpt = e4e_checkpoint(E, G, torch.zeros(64))
    ckpt["opts"] = argparse.Namespace(stylegan_size=32, dataset_type="church_encode")
    E2, G2, la = load_e4e_checkpoint(ckpt)
    assert E2.n_styles == G2.n_latent == 8 and E2.opts["dataset_type"] == "church_encode"
    ckpt["opts"] = {"stylegan_size": 1024}
    with pytest.raises(ValueError, match="stylegan_size"):
        load_e4e_checkpoint(ckpt)
    bad = e4e_checkpoint(E, G, torch.zeros(64))
    bad["state_dict"] = {k: v for k, v in bad["state_dict"].items() if k != "encoder.latlayer1.bias"}
    with pytest.raises(RuntimeError, match="latlayer1.bias"):
        load_e4e_checkpoint(bad)
