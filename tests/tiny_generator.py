"""A tiny stand-in generator with the gani.models.Generator interface that editing and metrics
use (mapping, synthesis with weight deltas, mean_latent); the `tiny_g` fixture of
tests/conftest.py builds one."""
import torch
import torch.nn.functional as F


class TinyGenerator(torch.nn.Module):
    """mapping: MLP; synthesis: linear map of the flattened W+ to an image, tanh.

    `weight_deltas` is a {parameter name: delta} dict added to the synthesis weights, the
    way a tuned generator is the same G plus deltas.
    """

    def __init__(self, size=32, style_dim=8, n_latent=6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.size, self.style_dim, self.n_latent = size, style_dim, n_latent
        self.map1 = torch.nn.Parameter(torch.randn(style_dim, style_dim, generator=g))
        self.map2 = torch.nn.Parameter(torch.randn(style_dim, style_dim, generator=g))
        self.synth = torch.nn.Parameter(
            torch.randn(3 * size * size, n_latent * style_dim, generator=g) * 0.3)

    def mapping(self, z):
        return F.leaky_relu(z @ self.map1.T, 0.2) @ self.map2.T

    def synthesis(self, wplus, noise_mode="const", weight_deltas=None):
        w = self.synth
        if weight_deltas is not None:
            w = w + weight_deltas["synth"]
        x = torch.tanh(wplus.flatten(1) @ w.T)
        return x.view(-1, 3, self.size, self.size)

    def mean_latent(self, n):
        return self.mapping(torch.randn(n, self.style_dim)).mean(0, keepdim=True)
