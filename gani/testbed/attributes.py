"""A small CNN that regresses the procedural faces' attribute labels from pixels.

Trained on the procedural data (labels known exactly), it labels *generated* images for the
InterFaceGAN directions and measures edits. Targets are standardised per attribute (the
mean/std are buffers of the model, so ``predict`` returns label units). Quality is the
held-out R² per attribute: 1 − SSE/SST on the test split, where 0 is chance (predicting the
mean) and 1 is perfect.

Its 128-d penultimate features (global-average-pooled last conv) also serve as the feature
space of the testbed's Fréchet distance (the benchmarks' sanity figure, ``benchmarks/testbed/core/sanity.py``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .faces import ATTRIBUTES


def _block(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2))


class AttributeRegressor(nn.Module):
    def __init__(self, attributes: Sequence[str] = ATTRIBUTES, width: int = 32,
                 feat_dim: int = 128):
        super().__init__()
        self.attributes = tuple(attributes)
        w = width
        self.features = nn.Sequential(
            _block(3, w, 1), _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1),
            _block(2 * w, 4 * w, 2), _block(4 * w, feat_dim, 2))
        self.head = nn.Linear(feat_dim, len(self.attributes))
        self.register_buffer("label_mean", torch.zeros(len(self.attributes)))
        self.register_buffer("label_std", torch.ones(len(self.attributes)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, feat_dim] (images in [−1, 1])."""
        return self.features(x).mean([2, 3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised predictions [B, A]."""
        return self.head(self.embed(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Predictions in label units [B, A] (eval mode, batched)."""
        was = self.training
        self.eval()
        out = torch.cat([self(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
        self.train(was)
        return out * self.label_std + self.label_mean

    @torch.no_grad()
    def embed_batched(self, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
        was = self.training
        self.eval()
        out = torch.cat([self.embed(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
        self.train(was)
        return out


def r2_scores(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-column R² = 1 − SSE/SST."""
    sse = (pred - target).pow(2).sum(0)
    sst = (target - target.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    return 1 - sse / sst


def train_regressor(images: torch.Tensor, labels: torch.Tensor, steps: int = 1500,
                    batch: int = 64, lr: float = 2e-3, seed: int = 0,
                    attributes: Sequence[str] = ATTRIBUTES, width: int = 32,
                    log_every: int = 0) -> AttributeRegressor:
    """Adam + cosine decay on MSE of standardised labels; light augmentation (none that
    changes a label: only small brightness jitter, since flips would negate yaw/gaze)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = AttributeRegressor(attributes, width=width)
    model.label_mean.copy_(labels.mean(0))
    model.label_std.copy_(labels.std(0).clamp_min(1e-6))
    y_all = (labels - model.label_mean) / model.label_std
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    model.train()
    n = images.shape[0]
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        x, y = images[idx], y_all[idx]
        x = x + 0.03 * torch.randn(batch, 1, 1, 1, generator=gen)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and step % log_every == 0:
            print(f"regressor step {step}: loss {loss.item():.4f}", flush=True)
    model.eval()
    return model


def evaluate_regressor(model: AttributeRegressor, images: torch.Tensor,
                       labels: torch.Tensor) -> dict[str, float]:
    r2 = r2_scores(model.predict(images), labels)
    return {a: round(float(v), 4) for a, v in zip(model.attributes, r2)}


def save_regressor(model: AttributeRegressor, path: Path) -> None:
    torch.save({"state_dict": model.state_dict(), "attributes": json.dumps(model.attributes),
                "width": model.features[0][0].out_channels}, Path(path))


def load_regressor(path: Path) -> AttributeRegressor:
    from gani.safeload import load_torch_file
    sd = load_torch_file(path)
    model = AttributeRegressor(json.loads(sd["attributes"]), width=int(sd["width"]))
    model.load_state_dict(sd["state_dict"])
    return model.eval()
