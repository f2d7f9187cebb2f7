"""Compact per-image tuning artifacts (safetensors), far smaller than a tuned generator.

Three layouts, chosen by `mode` ("auto" picks the first that applies):

- **modules** (GANI, gradient_source original): the image's module parameters φ, the latent
  and the aligned target image. The deltas are a deterministic function of them:
  Δ = correction_φ(∇_θ L_sim(x, G(w; θ))), so `load_artifact(...).result(G, loss)` recomputes
  the gradient once (one forward + backward) and applies the modules. The target is stored
  as uint8 when that is lossless (the usual case: an image read from disk and normalised
  with ToTensor + Normalize(0.5, 0.5)), else as float32. Needs the same G and the same loss
  networks (the active terms are recorded and checked).
  Size: Σ_C (2·blocks·C² + …) floats + H·W·3 bytes — for FFHQ 1024 with 2 blocks ≈ 5.6 MB
  of modules + 3 MB of target, against 94 MB for the fp32 deltas (121 MB for the generator).
- **deltas** (PTI, GANI with gradient_source current): the weight deltas themselves, fp32
  or fp16 (`dtype="fp16"`: half the size; the deltas are small, ~1e-3 of the weights, so the
  rounding error is ~1e-3 of the delta, far below the tuning's effect).
- **latent** (projection, e4e): the latent (+ the projector's noise maps).

Tolerance (tested in tests/tuning/test_artifact.py): modules and fp32 deltas reload to the
same rendered image within 1e-4 max-abs on CPU (the gradient is recomputed with a batch of
one, so float reductions may reorder); fp16 deltas within 1e-2.

Files are written atomically (temporary file + rename).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from gani.config.schema import GMMSection

from .result import TunedImage

FORMAT = "gani-tuned/1"


def encode_target(x: torch.Tensor) -> tuple[torch.Tensor, str]:
    """[3, H, W] in [−1, 1] → (tensor, encoding): uint8 when it round-trips exactly."""
    x = x.detach().float().cpu().reshape(x.shape[-3:])
    u8 = ((x * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)
    if torch.equal(decode_target(u8, "u8_normalize"), x):
        return u8, "u8_normalize"
    return x.contiguous(), "f32"


def decode_target(t: torch.Tensor, encoding: str) -> torch.Tensor:
    if encoding == "u8_normalize":  # torchvision ToTensor + Normalize(0.5, 0.5), bit for bit
        return (t.float() / 255 - 0.5) / 0.5
    if encoding == "f32":
        return t.float()
    raise ValueError(f"unknown target encoding {encoding!r}")


def _atomic_save(tensors: dict, meta: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(path, result: TunedImage, target: Optional[torch.Tensor] = None, *,
                  mode: str = "auto", dtype: str = "fp32",
                  generator_info: Optional[dict] = None) -> Path:
    """Write `result` to `path` (.safetensors); returns the path. See the module doc."""
    path = Path(path)
    gmm = result.meta.get("gmm")
    can_modules = (result.method == "gani" and bool(result.state) and target is not None
                   and gmm is not None and gmm.get("gradient_source") == "original")
    if mode == "auto":
        mode = "modules" if can_modules else ("deltas" if result.deltas else "latent")
    if mode == "modules" and not can_modules:
        raise ValueError("mode 'modules' needs a GANI result (gradient_source original) with "
                         "its module state, and the target image")
    if mode == "deltas" and not result.deltas:
        raise ValueError("this result has no weight deltas; use mode 'latent'")
    if dtype not in ("fp32", "fp16"):
        raise ValueError("dtype must be fp32 or fp16")
    tensors = {"latent": result.latent.float().cpu()}
    meta = {"format": FORMAT, "method": result.method, "mode": mode,
            "loss_curve": json.dumps(result.loss_curve), "error": result.error or "",
            "seconds": repr(float(result.seconds)),
            "generator": json.dumps(generator_info or {})}
    if mode == "modules":
        for k, v in result.state.items():
            tensors[f"gmm.{k}"] = v.float().cpu()
        tensors["target"], meta["target_encoding"] = encode_target(target)
        meta["gmm"] = json.dumps(gmm)
        meta["active_terms"] = json.dumps(result.meta.get("active_terms", []))
        meta["lambdas"] = json.dumps(result.meta.get("lambdas", {}))
        meta["rec"] = result.meta.get("rec", "l2")
    elif mode == "deltas":
        dt = torch.float16 if dtype == "fp16" else torch.float32
        for k, v in result.deltas.items():
            tensors[f"delta.{k}"] = v.to(dt).cpu()
        meta["dtype"] = dtype
    if result.noise is not None:
        for i, n in enumerate(result.noise):
            tensors[f"noise.{i}"] = n.float().cpu()
    _atomic_save(tensors, meta, path)
    return path


@dataclass
class TunedArtifact:
    """A loaded artifact; `result(G, loss)` turns it back into a `TunedImage`."""

    method: str
    mode: str
    latent: torch.Tensor
    meta: dict
    state: dict = field(default_factory=dict)
    deltas: dict = field(default_factory=dict)
    noise: Optional[list] = None
    target: Optional[torch.Tensor] = None

    def result(self, G=None, loss=None) -> TunedImage:
        deltas = {k: v.float() for k, v in self.deltas.items()}
        if self.mode == "modules":
            if G is None or loss is None:
                raise ValueError("a 'modules' artifact needs the generator and the similarity "
                                 "loss it was tuned with to rebuild its deltas")
            want = json.loads(self.meta.get("active_terms", "[]"))
            if sorted(loss.active_terms()) != sorted(want):
                raise ValueError(f"artifact was tuned with loss terms {want}; the given loss "
                                 f"has {loss.active_terms()}")
            from .gani import rebuild_gani_deltas

            gmm = GMMSection(**json.loads(self.meta["gmm"]))
            deltas = rebuild_gani_deltas(G, self.target, self.latent, self.state, gmm, loss)
        err = self.meta.get("error") or None
        return TunedImage(method=self.method, latent=self.latent, deltas=deltas,
                          loss_curve=json.loads(self.meta.get("loss_curve", "[]")), error=err,
                          seconds=float(self.meta.get("seconds", "0")), noise=self.noise,
                          state=self.state, meta={"artifact": self.meta})


def load_artifact(path) -> TunedArtifact:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} artifact (format={meta.get('format')!r})")
    t = load_file(str(path))
    state = {k[4:]: v for k, v in t.items() if k.startswith("gmm.")}
    deltas = {k[6:]: v for k, v in t.items() if k.startswith("delta.")}
    noise_keys = sorted((int(k[6:]) for k in t if k.startswith("noise.")))
    noise = [t[f"noise.{i}"] for i in noise_keys] or None
    target = decode_target(t["target"], meta["target_encoding"]) if "target" in t else None
    return TunedArtifact(method=meta["method"], mode=meta["mode"], latent=t["latent"],
                         meta=meta, state=state, deltas=deltas, noise=noise, target=target)
