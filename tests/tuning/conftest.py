"""Tiny seeded generators and targets for the tuning tests (32 px, C = 16, 1 thread)."""
from __future__ import annotations

import pytest
import torch

from tuning_helpers import tiny_generator


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def G():
    return tiny_generator()


@pytest.fixture(scope="session")
def w0(G):
    with torch.no_grad():
        wm = G.mean_latent(512, generator=torch.Generator().manual_seed(1))
    return wm.unsqueeze(1).repeat(2, G.n_latent, 1)


@pytest.fixture(scope="session")
def targets(G):
    """Two targets: an out-of-range smooth colour image and a near-range one (the same
    generator with 5 % weight noise at a perturbed latent)."""
    gen = torch.Generator().manual_seed(3)
    low = torch.rand(1, 3, 4, 4, generator=gen) * 1.6 - 0.8
    far = torch.nn.functional.interpolate(low, size=(32, 32), mode="bicubic",
                                          align_corners=False).clamp(-1, 1)
    with torch.no_grad():
        wm = G.mean_latent(512, generator=torch.Generator().manual_seed(1))
        w = (wm + 0.3 * torch.randn(1, G.style_dim, generator=gen)).unsqueeze(1)
        deltas = {k: 0.05 * torch.randn(m.weight.shape[1:], generator=gen)
                  * m.weight.detach().std() for k, m in G.modulated_convs().items()}
        near = G.synthesis(w.repeat(1, G.n_latent, 1), weight_deltas=deltas).clamp(-1, 1)
    return torch.cat([far, near])
