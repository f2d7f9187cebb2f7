"""StyleGAN2 training for the testbed generator (our rosinality-layout Generator + our D).

As in StyleGAN2 (config F without path-length regularisation by default):
- non-saturating logistic loss: D: softplus(D(G(z))) + softplus(−D(x)); G: softplus(−D(G(z)));
- lazy R1 on reals every ``d_reg_every`` steps, weighted γ/2 · d_reg_every;
- style mixing with probability ``mixing`` (a random crossover layer in W+);
- Adam(lr · ratio, betas (0, 0.99^ratio)) with ratio = k/(k+1) for a lazily regularised net;
- g_ema: EMA of G with half-life ``ema_kimg`` thousand images, ramped up over the first
  ``ema_rampup`` fraction of the images seen (StyleGAN2-ADA's rule).

Resumable: ``Trainer.save(path)`` writes G, D, g_ema, both optimizers, the step, images seen,
elapsed time and every RNG state (torch CPU, data sampler, mixing) atomically
(gani.io.write_bytes); ``Trainer.load(path)`` restores them so training continues from the
saved step.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from gani.io import write_bytes
from .discriminator import Discriminator
from gani.testbed.faces import render_split, save_grid, to_tensor, to_uint8


@dataclass
class TrainConfig:
    size: int = 32
    style_dim: int = 256
    n_mlp: int = 4
    channel_max: int = 128
    channel_multiplier: int = 2
    lr_mlp: float = 0.01
    d_channel_max: int = 128
    # per-resolution channel tables {res: C} (JSON: str keys); None = the capped official
    # table. d_channels None with channels set = D mirrors G's table.
    channels: Optional[dict] = None
    d_channels: Optional[dict] = None
    batch: int = 16
    lr: float = 0.002
    r1_gamma: float = 0.05
    d_reg_every: int = 16
    mixing: float = 0.5
    ema_kimg: float = 2.0
    ema_rampup: float = 0.05
    n_train: int = 20_000
    data_seed: int = 0
    seed: int = 0
    n_sample: int = 32               # images in each sample grid (fixed z)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def build_generator(cfg: TrainConfig):
    from gani.models.stylegan2 import Generator
    return Generator(cfg.size, style_dim=cfg.style_dim, n_mlp=cfg.n_mlp,
                     channel_multiplier=cfg.channel_multiplier, lr_mlp=cfg.lr_mlp,
                     channel_max=cfg.channel_max, channels=cfg.channels)


def build_discriminator(cfg: TrainConfig) -> Discriminator:
    d_ch = cfg.d_channels if cfg.d_channels is not None else cfg.channels
    return Discriminator(cfg.size, cfg.channel_multiplier, cfg.d_channel_max, channels=d_ch)


def d_logistic_loss(real_pred, fake_pred):
    return F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()


def g_nonsaturating_loss(fake_pred):
    return F.softplus(-fake_pred).mean()


def r1_penalty(D, real):
    real = real.detach().requires_grad_(True)
    pred = D(real)
    (grad,) = torch.autograd.grad(pred.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean(), pred


def _atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(str(path), buf.getvalue())


def save_g_ema_safetensors(g_ema, path: Path) -> None:
    """g_ema's state dict (official `g_ema` keys) as safetensors, atomically."""
    from safetensors.torch import save
    sd = {k: v.detach().cpu().contiguous() for k, v in g_ema.state_dict().items()}
    write_bytes(str(path), save(sd))


class Trainer:
    def __init__(self, cfg: TrainConfig, device: str = "cpu", real_images: Optional[torch.Tensor] = None):
        self.cfg, self.device = cfg, torch.device(device)
        torch.manual_seed(cfg.seed)
        self.G = build_generator(cfg).to(self.device).train()
        self.D = build_discriminator(cfg).to(self.device)
        self.g_ema = copy.deepcopy(self.G).eval()
        for p in self.g_ema.parameters():
            p.requires_grad_(False)
        k = cfg.d_reg_every
        d_ratio = k / (k + 1)
        self.g_optim = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
        self.d_optim = torch.optim.Adam(self.D.parameters(), lr=cfg.lr * d_ratio,
                                        betas=(0.0, 0.99 ** d_ratio))
        if real_images is None:
            imgs, _ = render_split(cfg.data_seed, "train", cfg.n_train, cfg.size)
            real_images = to_tensor(imgs)
        self.real = real_images
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.mix_rng = random.Random(cfg.seed + 2)
        self.sample_z = torch.randn(cfg.n_sample, cfg.style_dim,
                                    generator=torch.Generator().manual_seed(1234))
        self.step = 0
        self.nimg = 0
        self.elapsed_s = 0.0
        self.last: dict = {}

    # ---- pieces ---------------------------------------------------------------------
    @property
    def n_latent(self) -> int:
        return int(self.G.n_latent)

    def real_batch(self) -> torch.Tensor:
        idx = torch.randint(0, self.real.shape[0], (self.cfg.batch,), generator=self.data_gen)
        return self.real[idx].to(self.device)

    def make_wplus(self, G, batch: int) -> torch.Tensor:
        n, sd = self.n_latent, self.cfg.style_dim
        z = torch.randn(batch, sd, device=self.device)
        w = G.mapping(z)
        wplus = w.unsqueeze(1).repeat(1, n, 1)
        if self.cfg.mixing > 0 and self.mix_rng.random() < self.cfg.mixing:
            w2 = G.mapping(torch.randn(batch, sd, device=self.device))
            cut = self.mix_rng.randint(1, n - 1)
            wplus = torch.cat([wplus[:, :cut], w2.unsqueeze(1).repeat(1, n - cut, 1)], 1)
        return wplus

    def generate(self, G, batch: int) -> torch.Tensor:
        return G.synthesis(self.make_wplus(G, batch), noise_mode="random")

    def d_step(self, real: torch.Tensor, regularize: bool = False) -> dict:
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad():
            fake = self.generate(self.G, real.shape[0])
        real_pred, fake_pred = self.D(real), self.D(fake)
        d_loss = d_logistic_loss(real_pred, fake_pred)
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        out = {"d_loss": d_loss.item(), "real_score": real_pred.detach().mean().item(),
               "fake_score": fake_pred.detach().mean().item()}
        if regularize and self.cfg.r1_gamma > 0:
            r1, pred = r1_penalty(self.D, real)
            reg = self.cfg.r1_gamma / 2 * r1 * self.cfg.d_reg_every + 0 * pred[0, 0]
            self.d_optim.zero_grad(set_to_none=True)
            reg.backward()
            self.d_optim.step()
            out["r1"] = r1.item()
        return out

    def g_step(self) -> dict:
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        fake = self.generate(self.G, self.cfg.batch)
        g_loss = g_nonsaturating_loss(self.D(fake))
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        self.D.requires_grad_(True)
        return {"g_loss": g_loss.item()}

    @torch.no_grad()
    def update_ema(self) -> float:
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup:
            ema_nimg = min(ema_nimg, max(self.nimg, 1) * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        for pe, p in zip(self.g_ema.parameters(), self.G.parameters()):
            pe.copy_(p.lerp(pe, beta))
        for be, b in zip(self.g_ema.buffers(), self.G.buffers()):
            be.copy_(b)
        return beta

    def train_step(self) -> dict:
        real = self.real_batch()
        stats = self.d_step(real, regularize=(self.step % self.cfg.d_reg_every == 0))
        stats.update(self.g_step())
        self.nimg += self.cfg.batch
        stats["ema_beta"] = self.update_ema()
        self.step += 1
        self.last = stats
        return stats

    # ---- samples / state ---------------------------------------------------------------
    @torch.no_grad()
    def samples(self, G=None, noise_mode: str = "const") -> torch.Tensor:
        G = self.g_ema if G is None else G
        z = self.sample_z.to(self.device)
        w = G.mapping(z).unsqueeze(1).repeat(1, self.n_latent, 1)
        return G.synthesis(w, noise_mode=noise_mode).cpu()

    def write_samples(self, path: Path, scale: int = 3) -> None:
        save_grid(to_uint8(self.samples()), path, ncol=8, scale=scale)

    def state_dict(self) -> dict:
        return {
            "g": self.G.state_dict(), "d": self.D.state_dict(), "g_ema": self.g_ema.state_dict(),
            "g_optim": self.g_optim.state_dict(), "d_optim": self.d_optim.state_dict(),
            "step": self.step, "nimg": self.nimg, "elapsed_s": self.elapsed_s,
            "config": json.dumps(dataclasses.asdict(self.cfg)),
            "rng_torch": torch.get_rng_state(), "rng_data": self.data_gen.get_state(),
            "rng_mix": json.dumps(self.mix_rng.getstate()),
        }

    def save(self, path: Path) -> None:
        _atomic_torch_save(self.state_dict(), path)

    def load_state_dict(self, sd: dict) -> None:
        self.G.load_state_dict(sd["g"])
        self.D.load_state_dict(sd["d"])
        self.g_ema.load_state_dict(sd["g_ema"])
        self.g_optim.load_state_dict(sd["g_optim"])
        self.d_optim.load_state_dict(sd["d_optim"])
        self.step, self.nimg = int(sd["step"]), int(sd["nimg"])
        self.elapsed_s = float(sd["elapsed_s"])
        torch.set_rng_state(sd["rng_torch"])
        self.data_gen.set_state(sd["rng_data"])
        st = json.loads(sd["rng_mix"])
        self.mix_rng.setstate((st[0], tuple(st[1]), st[2]))

    @staticmethod
    def config_from_checkpoint(path: Path) -> TrainConfig:
        from gani.safeload import load_torch_file
        return TrainConfig.from_dict(json.loads(load_torch_file(path)["config"]))

    def load(self, path: Path) -> None:
        from gani.safeload import load_torch_file
        self.load_state_dict(load_torch_file(path))


def train(trainer: Trainer, run_dir: Path, minutes: Optional[float] = None,
          max_steps: Optional[int] = None, ckpt_every: int = 200, sample_every: int = 200,
          log_every: int = 10, progress: bool = True) -> dict:
    """Train until `minutes` of wall time (this call) or `max_steps` total steps.

    Writes `run_dir/checkpoint.pt` (resume state) and `run_dir/g_ema.safetensors` every
    `ckpt_every` steps and at the end, `samples/step_XXXXXX.png` every `sample_every` steps,
    and a JSON line to `log.jsonl` every `log_every` steps.
    """
    run_dir = Path(run_dir)
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    log_f = open(run_dir / "log.jsonl", "a")
    deadline = time.time() + minutes * 60 if minutes else None
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=max_steps, initial=trainer.step, file=sys.stderr, mininterval=10,
                       dynamic_ncols=False, ncols=100)
        except ImportError:
            bar = None
    t_last = time.time()
    if trainer.step == 0:
        trainer.write_samples(run_dir / "samples" / "step_000000.png")

    def checkpoint():
        trainer.save(run_dir / "checkpoint.pt")
        save_g_ema_safetensors(trainer.g_ema, run_dir / "g_ema.safetensors")

    try:
        while True:
            if max_steps is not None and trainer.step >= max_steps:
                break
            if deadline is not None and time.time() >= deadline:
                break
            t0 = time.time()
            stats = trainer.train_step()
            dt = time.time() - t0
            trainer.elapsed_s += dt
            if bar is not None:
                bar.update(1)
                bar.set_postfix(d=f"{stats['d_loss']:.3f}", g=f"{stats['g_loss']:.3f}",
                                refresh=False)
            if trainer.step % log_every == 0:
                now = time.time()
                rec = {"step": trainer.step, "kimg": trainer.nimg / 1000,
                       "train_s": round(trainer.elapsed_s, 1),
                       "s_per_step": round((now - t_last) / log_every, 3),
                       **{k: round(v, 5) for k, v in stats.items()}}
                t_last = now
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
            if trainer.step % sample_every == 0:
                trainer.write_samples(run_dir / "samples" / f"step_{trainer.step:06d}.png")
            if trainer.step % ckpt_every == 0:
                checkpoint()
    finally:
        checkpoint()
        trainer.write_samples(run_dir / "samples" / "latest.png")
        if bar is not None:
            bar.close()
        log_f.close()
    return {"step": trainer.step, "kimg": trainer.nimg / 1000, "train_s": trainer.elapsed_s}
