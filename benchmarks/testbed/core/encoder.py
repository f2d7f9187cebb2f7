"""A small e4e for the testbed generator, so the judgement can start from an encoder's latent.

The encoder is our ``E4EEncoder`` (gani.models.e4e, the official key layout) with
``width_div`` 8 and ``n_styles`` = G.n_latent, reading the 32-px image bilinearly upsampled
to ``input_size`` 64 (e4e reads 256 px for a 1024-px generator; the style blocks' stride-2
chains still end at 1×1 from 64 px). Its W+ code is ``E(x) + latent_avg``
(start_from_latent_avg).

Trained as e4e trains (Tov et al. 2021, §3.3–3.4), minus the terms that need weights:
- pixel L2 between G(ŵ) (const noise, as every method renders) and x;
- delta regularisation λ_d · Σ_i ‖Δ_i‖₂, Δ_i = ŵ_i − ŵ_0 (e4e: λ_d = 2e-4);
- progressive training: entry i's delta is used from step i · ``progressive_every`` on
  (before that ŵ_i = ŵ_0; e4e adds one entry every 2 000 steps).
Testbed-only differences, said plainly: no LPIPS / identity term (no weights here) and no
latent discriminator; instead half of each batch are generated samples whose true W is
known, with a latent term λ_w · mean (ŵ − w)² — it keeps the codes in W's region (what e4e's
discriminator and delta term are for) and lets a small encoder learn in CPU minutes.
The other half are procedural training faces (image loss only).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from gani.io import write_bytes, write_json
from gani.models.e4e import E4EEncoder
from gani.testbed.encoder import encode, encode_images, encoder_input, load_encoder  # noqa: F401
from gani.testbed.faces import render_split, to_tensor


@dataclass
class EncoderConfig:
    width_div: int = 8
    input_size: int = 64
    batch: int = 32                  # half generated samples, half training faces
    lr: float = 2e-4
    lambda_delta: float = 2e-4
    lambda_w: float = 1.0
    progressive_every: int = 150
    n_train: int = 10_000            # procedural training faces (the generator's train split)
    data_seed: int = 0
    seed: int = 0


def delta_mask(step: int, n_styles: int, every: int) -> torch.Tensor:
    """[n_styles] of 0/1: entry i's delta is active from step i · every on (entry 0 has none)."""
    if every <= 0:
        return torch.ones(n_styles)
    return (torch.arange(n_styles) * every <= step).float()


class EncoderTrainer:
    """Trains an E4EEncoder for a frozen generator G (the module doc)."""

    def __init__(self, G, cfg: EncoderConfig, faces: Optional[torch.Tensor] = None,
                 device: str = "cpu"):
        """device: where G, the encoder and the faces live; the random draws stay on the
        CPU generator, so a run's data order does not depend on the device."""
        self.device = torch.device(device)
        self.G, self.cfg = G.eval().requires_grad_(False), cfg
        torch.manual_seed(cfg.seed)
        self.E = E4EEncoder(n_styles=G.n_latent, style_dim=G.style_dim, width_div=cfg.width_div)
        self.latent_avg = G.mean_latent(10000, generator=torch.Generator().manual_seed(0))
        self.latent_avg = self.latent_avg.reshape(1, -1).repeat(G.n_latent, 1)
        self.G, self.E = self.G.to(self.device), self.E.to(self.device)
        self.latent_avg = self.latent_avg.to(self.device)
        self.opt = torch.optim.Adam(self.E.parameters(), lr=cfg.lr)
        if faces is None:
            imgs, _ = render_split(cfg.data_seed, "train", cfg.n_train, G.size)
            faces = to_tensor(imgs)
        self.faces = faces.to(self.device)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step, self.elapsed = 0, 0.0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [B, 3, H, W], true W [B//2, D] of the generated first half)."""
        h = self.cfg.batch // 2
        z = torch.randn(h, self.G.style_dim, generator=self.gen).to(self.device)
        with torch.no_grad():
            w = self.G.mapping(z)
            fake = self.G.synthesis(w.unsqueeze(1).repeat(1, self.G.n_latent, 1),
                                    noise_mode="const").clamp(-1, 1)
        idx = torch.randint(0, self.faces.shape[0], (self.cfg.batch - h,), generator=self.gen)
        return torch.cat([fake, self.faces[idx.to(self.device)]]), w

    def train_step(self) -> dict:
        cfg, t0 = self.cfg, time.perf_counter()
        x, w_true = self.batch()
        mask = delta_mask(self.step, self.G.n_latent, cfg.progressive_every).to(self.device)
        w_hat, deltas = encode(self.E, self.latent_avg, x, cfg.input_size, mask)
        rec = (self.G.synthesis(w_hat, noise_mode="const") - x).square().mean()
        lat = (w_hat[: w_true.shape[0]] - w_true[:, None]).square().mean()
        dreg = deltas[:, 1:].norm(dim=2).sum(1).mean()
        loss = rec + cfg.lambda_w * lat + cfg.lambda_delta * dreg
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        self.elapsed += time.perf_counter() - t0
        return {"step": self.step, "loss": loss.item(), "rec": rec.item(), "lat": lat.item(),
                "delta": dreg.item(), "active": int(mask.sum())}

    def train(self, max_steps: int, minutes: float = float("inf"), log_every: int = 50,
              on_log: Optional[Callable[[dict], None]] = None) -> None:
        t_end = time.perf_counter() + 60 * minutes
        self.E.train()
        while self.step < max_steps and time.perf_counter() < t_end:
            rec = self.train_step()
            if on_log and (self.step % log_every == 0 or self.step == 1):
                on_log({**rec, "elapsed_s": round(self.elapsed, 1)})
        self.E.eval()

    # ------------------------------------------------------------------ files
    def state(self) -> dict:
        """The resume state, copied (it does not change as training goes on)."""
        return copy.deepcopy({
            "encoder": self.E.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
            "elapsed_s": self.elapsed, "rng": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(), "config": dataclasses.asdict(self.cfg)})

    def load_state(self, st: dict) -> None:
        self.E.load_state_dict(st["encoder"], strict=True)
        self.opt.load_state_dict(st["opt"])
        self.step, self.elapsed = int(st["step"]), float(st["elapsed_s"])
        self.gen.set_state(st["rng"])
        torch.set_rng_state(st["torch_rng"])

    def save_state(self, path: Path) -> None:
        """The resume state (``state()``), written atomically."""
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        write_bytes(str(path), buf.getvalue())

    def save_encoder(self, path: Path) -> None:
        """encoder weights + latent_avg as safetensors, config as JSON next to it."""
        save_encoder(self.E, self.latent_avg, self.cfg, path,
                     extra={"step": self.step, "train_s": round(self.elapsed, 1)})


def save_encoder(E: E4EEncoder, latent_avg: torch.Tensor, cfg: EncoderConfig, path: Path,
                 extra: Optional[dict] = None) -> None:
    from safetensors.torch import save

    path = Path(path)
    sd = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in E.state_dict().items()}
    sd["latent_avg"] = latent_avg.detach().cpu().contiguous()
    write_bytes(str(path), save(sd))
    write_json(str(path.with_suffix(".json")), {
        "n_styles": E.n_styles, "style_dim": E.style_dim, **dataclasses.asdict(cfg),
        **(extra or {})})
