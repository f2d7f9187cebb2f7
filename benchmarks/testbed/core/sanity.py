"""A Fréchet-distance sanity figure for the testbed generator (an FID stand-in, not FID).

FD(A, B) = ‖μ_A − μ_B‖² + tr(Σ_A + Σ_B − 2 (Σ_A Σ_B)^{1/2}) on features of two image sets.
Two feature extractors, both fixed and small (no downloads):

- ``regressor``: the 128-d penultimate features of the attribute regressor trained on the
  procedural data (``benchmarks.testbed.core.attributes``) — semantically tuned to this
  distribution;
- ``randconv``: a fixed, seeded random conv net (3 conv layers, LeakyReLU, avg-pool; 4×4
  spatial pooling of the last 32 channels plus global pooling of all three → 176-d) —
  depends on nothing trained, so it is comparable across sessions.

The figure is only interpretable next to its reference points: the same FD for an untrained
(random-init) generator, and for held-out test data vs the training data (the floor that
finite samples give).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class RandomConvFeatures(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        chans = [(3, 32, 1), (32, 64, 2), (64, 32, 2)]
        self.weights = nn.ParameterList()
        self.strides = []
        for cin, cout, s in chans:
            w = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (cin * 9)) ** 0.5
            self.weights.append(nn.Parameter(w, requires_grad=False))
            self.strides.append(s)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        h = x
        for w, s in zip(self.weights, self.strides):
            h = F.leaky_relu(F.conv2d(h, w, stride=s, padding=1), 0.2)
            feats.append(h.mean([2, 3]))
        feats.append(F.adaptive_avg_pool2d(h, 2).flatten(1))
        return torch.cat(feats, 1)


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    fa = np.asarray(fa, np.float64)
    fb = np.asarray(fb, np.float64)
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    sa, sb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    # tr sqrt(Σa Σb) = Σ sqrt(eig(Σa Σb)); the eigenvalues are real and ≥ 0 up to rounding
    eig = np.linalg.eigvals(sa @ sb)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * tr_sqrt)


@torch.no_grad()
def features(extractor, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    if hasattr(extractor, "embed_batched"):
        return extractor.embed_batched(images, batch).numpy()
    return torch.cat([extractor(images[i:i + batch]) for i in range(0, len(images), batch)]).numpy()


@torch.no_grad()
def generate_images(G, n: int, seed: int = 0, batch: int = 128, truncation: float = 1.0,
                    noise_mode: str = "const") -> torch.Tensor:
    """n images of G from seeded z (W repeated over layers), CPU tensor in [−1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    dev = next(G.parameters()).device
    w_avg = G.mean_latent(4096) if truncation != 1.0 else None
    out = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = torch.randn(b, G.style_dim, generator=gen).to(dev)
        w = G.mapping(z)
        if w_avg is not None:
            w = w_avg.view(1, -1) + truncation * (w - w_avg.view(1, -1))
        wp = w.unsqueeze(1).repeat(1, G.n_latent, 1)
        out.append(G.synthesis(wp, noise_mode=noise_mode).clamp(-1, 1).cpu())
    return torch.cat(out)
