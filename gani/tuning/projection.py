"""W / W+ projection: the StyleGAN2 projector (rosinality projector.py) as a tuner.

Optimises the latent (one W vector repeated over layers, or a full W+ code) and, when
`optimize_noise`, the per-layer noise maps, with the generator fixed, for T = `tune.steps`
steps:

    lr_t    = lr · ramp(t/T):  cosine ramp-down over the last `lr_rampdown`, linear ramp-up
              over the first `lr_rampup`
    w_t     = w + ε · σ_w · latent_noise · max(0, 1 − (t/T)/noise_ramp)²   (σ_w: std of W)
    L       = L_sim(x, G(w_t; noises)) + noise_regularize · Σ multiscale autocorrelation²
    after each Adam step every noise map is normalised to zero mean, unit std.

Differences from the reference, on purpose: it starts from the given latent (e4e's, so step 0
is the e4e image) instead of the mean latent, and from G's stored noise (noise_init const)
instead of fresh noise; the image loss is the configured L_sim (the reference uses LPIPS
only). Random draws (ε, random noise init) are made once for the batch from a seeded
generator, so a batched run equals single runs.
"""
from __future__ import annotations

import math
import time
from typing import Optional

import torch

from gani.config.schema import TuneSection
from gani.losses import SimilarityLoss

from .common import ProgressFn, Tracker, autocast, device_of, synth
from .result import TunedImage


def projector_lr(t: float, lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """The reference schedule at progress t ∈ [0, 1]."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp = ramp * min(1.0, t / rampup)
    return lr * ramp


def noise_regularize(noises) -> torch.Tensor:
    """Per-image multiscale autocorrelation penalty of the noise maps [B, 1, R, R] → [B]."""
    total = 0.0
    for noise in noises:
        size = noise.shape[2]
        while True:
            total = total + (noise * torch.roll(noise, 1, dims=3)).mean((1, 2, 3)).pow(2) \
                + (noise * torch.roll(noise, 1, dims=2)).mean((1, 2, 3)).pow(2)
            if size <= 8:
                break
            noise = noise.reshape(-1, 1, size // 2, 2, size // 2, 2).mean([3, 5])
            size //= 2
    return total


@torch.no_grad()
def noise_normalize_(noises) -> None:
    for noise in noises:
        mean = noise.mean((1, 2, 3), keepdim=True)
        std = noise.std(dim=(1, 2, 3), keepdim=True)
        noise.sub_(mean).div_(std)


@torch.no_grad()
def latent_std(G, n: int, seed: int) -> float:
    z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed))
    w = G.mapping(z.to(device_of(G)))
    return float(((w - w.mean(0)) ** 2).sum() / n) ** 0.5


def tune_projection(G, targets: torch.Tensor, w_init: torch.Tensor, cfg: TuneSection,
                    loss: SimilarityLoss, w_plus: bool = True,
                    progress: Optional[ProgressFn] = None, verbose: bool = False,
                    first_index: int = 0) -> list[TunedImage]:
    t0 = time.perf_counter()
    pc = cfg.projection
    B, T = targets.shape[0], cfg.steps
    dev = targets.device
    gen = torch.Generator().manual_seed(cfg.seed)
    sigma = latent_std(G, pc.n_mean_latent, cfg.seed)
    start = w_init.detach().to(dev).float()
    latent = torch.nn.Parameter(start.clone() if w_plus else start.mean(1, keepdim=True))
    if pc.noise_init == "random":
        noises = [torch.randn(n.shape, generator=gen).to(dev).repeat(B, 1, 1, 1)
                  for n in G.noise_buffers()]
    else:
        noises = [n.detach().clone().repeat(B, 1, 1, 1) for n in G.noise_buffers()]
    noises = [torch.nn.Parameter(n, requires_grad=pc.optimize_noise) for n in noises]
    params = [latent] + (noises if pc.optimize_noise else [])
    opt = torch.optim.Adam(params, lr=pc.lr)
    name = "wplus_projection" if w_plus else "w_projection"
    track = Tracker([latent] + noises, B, T, name, progress, verbose, cfg.log_every,
                    first_index)
    with autocast(G, cfg.precision):
        target = loss.prepare(targets)
    for t in range(T + 1):
        frac = t / max(T, 1)
        for group in opt.param_groups:
            group["lr"] = projector_lr(frac, pc.lr, pc.lr_rampdown, pc.lr_rampup)
        strength = sigma * pc.latent_noise * max(0.0, 1.0 - frac / pc.noise_ramp) ** 2
        eps = torch.randn((1,) + tuple(latent.shape[1:]), generator=gen).to(dev)
        w = (latent + eps * strength).expand(B, G.n_latent, -1)
        with autocast(G, cfg.precision):
            l_sim, parts = loss(synth(G, w, noise=noises), target)
        total = l_sim
        if pc.optimize_noise and pc.noise_regularize > 0:
            n_loss = noise_regularize(noises)
            total = total + pc.noise_regularize * n_loss
            parts = dict(parts, noise=n_loss)
        track.record(t, total, parts)
        if t == T or not track.any_active:
            break
        opt.zero_grad(set_to_none=True)
        track.loss_to_backprop(total).backward()
        track.zero_stopped_grads(params)
        opt.step()
        if pc.optimize_noise:
            noise_normalize_(noises)
        track.freeze()
    track.freeze()
    track.close()
    seconds = (time.perf_counter() - t0) / B
    final = latent.detach().float().expand(B, G.n_latent, -1)
    return [TunedImage(method=name, latent=final[i].cpu().clone(), deltas={},
                       loss_curve=track.curves[i], error=track.errors[i], seconds=seconds,
                       noise=[n[i:i + 1].detach().float().cpu() for n in noises]
                       if pc.optimize_noise or pc.noise_init == "random" else None,
                       parts=track.parts[i], meta={"projection": pc.model_dump()})
            for i in range(B)]
