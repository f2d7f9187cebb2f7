"""Editing against the project's real StyleGAN2 Generator (tiny, random weights)."""
from pathlib import Path

import pytest
import torch

models = pytest.importorskip("gani.models")

from gani.editing import (adapt_direction, apply_interfacegan, compute_ganspace_pca,  # noqa: E402
                          ganspace_edit, interfacegan_edit, load_direction,
                          render_edit_grid)

ASSETS = Path(__file__).resolve().parents[3] / "shared" / "assets" / "editings"


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    g = models.Generator(32, style_dim=512, n_mlp=2, channel_multiplier=1, channel_max=16)
    return g.eval()


def test_published_directions_on_a_smaller_generator(G):
    if not (ASSETS / "pose.pt").is_file():
        pytest.skip("shared editing assets not available")
    assert G.n_latent == 8
    pose = load_direction(ASSETS / "pose.pt")
    age = load_direction(ASSETS / "age.pt")
    assert adapt_direction(pose, G.n_latent, G.style_dim).shape == (1, 8, 512)
    w = G.mapping(torch.randn(2, 512)).unsqueeze(1).repeat(1, G.n_latent, 1)
    out = apply_interfacegan(w, pose, 3.0)
    assert torch.allclose(out - w, 3.0 * pose[:, :8].expand(2, 8, 512), atol=1e-5)
    assert apply_interfacegan(w, age, -2.0).shape == w.shape
    small = models.Generator(32, style_dim=64, n_mlp=1, channel_multiplier=1, channel_max=8)
    with pytest.raises(ValueError, match="style_dim"):
        apply_interfacegan(torch.zeros(1, small.n_latent, 64), age, 1.0)


def test_pca_and_tuned_grid_with_the_real_generator(G):
    pca = compute_ganspace_pca(G, n_samples=300, n_components=12, seed=0, batch_size=150)
    assert pca["mean"].shape == (1, 512) and pca["comp"].shape == (12, 1, 512)
    c = pca["comp"].squeeze(1)
    assert torch.allclose(c @ c.T, torch.eye(12), atol=1e-4)
    with torch.no_grad():
        w = G.mapping(torch.randn(1, 512)).unsqueeze(1).repeat(1, G.n_latent, 1)
    d = torch.nn.functional.normalize(torch.randn(1, 512), dim=1)
    deltas = {"conv1": 0.05 * torch.randn_like(G.conv1.conv.weight)}
    edits = [interfacegan_edit("d", d), ganspace_edit("pc0", pca, (0, 0, 4, 2.0))]
    plain = render_edit_grid(G, w, edits, [-3, 3], labels=False)
    tuned = render_edit_grid(G, w, edits, [-3, 3], weight_deltas=deltas, labels=False)
    assert plain.size == tuned.size == (3 * 32, 2 * 32)
    assert plain.tobytes() != tuned.tobytes()
    assert render_edit_grid(G, w, edits, [1], tile_size=64).size == (128, 128)
