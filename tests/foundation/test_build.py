"""Networks are built from Settings.models: demo nets seeded, real ones from files."""
import pytest
import torch

from gani.checkpoints import CheckpointMissingError
from gani.checkpoints.build import build_encoder, build_generator, build_similarity_nets
from gani.config import load_settings
from gani.models.stylegan2 import rosinality_checkpoint


def test_demo_nets_are_deterministic_and_consistent():
    s = load_settings("params.yaml", "demo_random")
    G1, avg1 = build_generator(s.models)
    G2, avg2 = build_generator(s.models)
    assert all(torch.equal(a, b) for a, b in zip(G1.state_dict().values(), G2.state_dict().values()))
    assert torch.equal(avg1, avg2) and avg1.shape == (G1.style_dim,)
    enc, lat = build_encoder(s.models, G1)
    assert lat.shape == (G1.n_latent, G1.style_dim)
    with torch.no_grad():
        d = enc(torch.zeros(1, 3, 256, 256))
    assert d.shape == (1, G1.n_latent, G1.style_dim)


def test_real_generator_loads_from_data_dir(tmp_path):
    s = load_settings("params.yaml", "demo_random", ["models.generator.checkpoint=stylegan2-church-config-f",
                                              "models.generator.size=64"])
    with pytest.raises(CheckpointMissingError, match="stylegan2-church-config-f.pt"):
        build_generator(s.models, tmp_path, profile="demo")
    G, _ = build_generator(load_settings("params.yaml", "demo_random").models)
    (tmp_path / "checkpoints").mkdir()
    torch.save(rosinality_checkpoint(G, torch.zeros(G.style_dim)),
               tmp_path / "checkpoints" / "stylegan2-church-config-f.pt")
    G2, avg = build_generator(s.models, tmp_path)
    assert G2.size == 64 and torch.equal(avg, torch.zeros(G.style_dim))


def test_missing_loss_network_is_a_clear_error(tmp_path):
    s = load_settings("params.yaml", "ffhq")
    with pytest.raises(CheckpointMissingError, match="alexnet-owt-7be5be79.pth"):
        build_similarity_nets(s.models, tmp_path, profile="ffhq")
    assert build_similarity_nets(load_settings("params.yaml", "demo_random").models).lpips is None
