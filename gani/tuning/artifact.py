"""Compact per-image tuning artifacts (safetensors), far smaller than a tuned generator.

Three layouts, chosen by `mode` ("auto" picks the first that applies):

- **modules** (GANI, reading reparam, gradient_source original): the image's module
  parameters φ, the latent and the aligned target image. The deltas are a deterministic
  function of them: Δ = −M_φ(∇_θ L_sim(x, G(w; θ))), so `load_artifact(...).result(G, loss)` recomputes
  the gradient once (one forward + backward) and applies the modules. The target is stored
  as uint8 when that is lossless (the usual case: an image read from disk and normalised
  with ToTensor + Normalize(0.5, 0.5)), else as float32. Needs the same G and the same loss
  networks (the active terms are recorded and checked).
  Size: Σ_C (2·blocks·C² + …) floats + H·W·3 bytes — for FFHQ 1024 with 2 blocks ≈ 5.6 MB
  of modules + 3 MB of target, against 94 MB for the fp32 deltas (121 MB for the generator).
- **deltas** (PTI, GANI reading optimizer or gradient_source current): the weight deltas
  themselves, fp32 or fp16 (`dtype="fp16"`: half the size; the deltas are small, ~1e-3 of
  the weights, so the rounding error is ~1e-3 of the delta, far below the tuning's effect).
  `dtype=None` picks fp16 for GANI's optimizer reading (its deltas cannot be rebuilt from
  φ, so they are its artifact) and fp32 otherwise. `rank=r` stores each layer's delta,
  viewed as a matrix [out, in·k·k], as its best rank-r approximation U_r·S_r · V_rᵀ
  (truncated SVD; factors [out, r] and [r, in·k·k] in `dtype`), or in full where that is
  no larger: r·(out + in·k·k) < out·in·k·k. Lossy: the error is the discarded singular
  values, reported by `lowrank_error`.
- **latent** (projection, e4e): the latent (+ the projector's noise maps).

Tolerance (tested in tests/tuning/test_artifact.py): modules and fp32 deltas reload to the
same rendered image within 1e-4 max-abs on CPU (the gradient is recomputed with a batch of
one, so float reductions may reorder); fp16 deltas within 1e-2.

`artifact_nbytes(shapes, mode, ...)` is the tensor payload of an artifact for a generator
whose modulated convs have the given shapes (`modulated_conv_shapes(1024)`: the official
FFHQ architecture), the number docs/method.md reports per image at 1024 px.

Files are written atomically (temporary file + rename) and are a function of the result
alone: the same tensors and settings give the same bytes (the DVC pipeline hashes them).
So the header's JSON is written in a fixed order (`canonical_header`: safetensors' own
writer emits the metadata map in a random order per process), and the artifact holds no
timing (a loaded result's `seconds` is 0.0; the stage keeps the tuning time in
`timing.json`).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from collections import OrderedDict
from typing import Mapping, Optional

import torch
from safetensors.torch import load_file, save

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


def modulated_conv_shapes(size: int = 1024, channel_multiplier: int = 2,
                          channel_max: int = 512) -> "OrderedDict[str, tuple]":
    """{name: (out, in, k, k)} of a StyleGAN2 generator's modulated convs, in the order of
    `Generator.modulated_convs()`, without building it (config-f at 1024 by default)."""
    from gani.models.stylegan2 import channel_table

    ch = channel_table(size, channel_multiplier, channel_max)
    shapes = OrderedDict(conv1=(ch[4], ch[4], 3, 3), to_rgb1=(3, ch[4], 1, 1))
    in_ch, res, k = ch[4], 8, 0
    while res <= size:
        out = ch[res]
        shapes[f"convs.{2 * k}"] = (out, in_ch, 3, 3)
        shapes[f"convs.{2 * k + 1}"] = (out, out, 3, 3)
        shapes[f"to_rgbs.{k}"] = (3, out, 1, 1)
        in_ch, res, k = out, res * 2, k + 1
    return shapes


def _lowrank_kept(shape, rank: int) -> Optional[int]:
    """The rank stored for a delta of `shape` [out, in, k, k], or None when full is no larger."""
    o = shape[0]
    n = int(torch.Size(shape[1:]).numel())
    r = min(int(rank), o, n)
    return r if r * (o + n) < o * n else None


def lowrank_factors(delta: torch.Tensor, rank: int):
    """delta [out, in, k, k] → (U_r·S_r [out, r], V_rᵀ [r, in·k·k]), or None when storing it in
    full is no larger (see the module doc)."""
    r = _lowrank_kept(tuple(delta.shape), rank)
    if r is None:
        return None
    U, S, Vh = torch.linalg.svd(delta.detach().float().reshape(delta.shape[0], -1),
                                full_matrices=False)
    return U[:, :r] * S[:r], Vh[:r]


def lowrank_error(delta: torch.Tensor, rank: int) -> float:
    """‖Δ − Δ_r‖ / ‖Δ‖ of the stored rank-r approximation (0 when stored in full)."""
    f = lowrank_factors(delta, rank)
    if f is None:
        return 0.0
    approx = (f[0] @ f[1]).reshape(delta.shape)
    return float((delta - approx).norm() / delta.norm().clamp_min(1e-30))


_DTYPE_BYTES = {"fp32": 4, "fp16": 2}


def artifact_nbytes(shapes: Mapping[str, tuple], mode: str, *, dtype: str = "fp32",
                    rank: Optional[int] = None, gmm: Optional[GMMSection] = None,
                    image_size: Optional[int] = None, n_latent: Optional[int] = None,
                    style_dim: int = 512) -> int:
    """Tensor bytes of one image's artifact (safetensors adds a small JSON header):

        deltas:  Σ_l numel(Δ_l)·bytes(dtype)            (rank r: Σ_l min(r(out + in·k·k),
                                                          out·in·k·k)·bytes(dtype))
        modules: numel(φ)·4 + H·W·3 (uint8 target)       (φ of the GMMBank for `gmm`)
        + the fp32 latent, n_latent·style_dim·4 (n_latent from the shapes: one per conv and
          ToRGB but the last ToRGB, as StyleGAN2's W+ index).
    """
    n_lat = n_latent if n_latent is not None else len(shapes) - sum(
        1 for n in shapes if n.startswith("to_rgb")) + 1
    total = n_lat * style_dim * 4
    if mode == "deltas":
        per = _DTYPE_BYTES[dtype]
        for shape in shapes.values():
            full = int(torch.Size(shape).numel())
            r = None if rank is None else _lowrank_kept(shape, rank)
            total += per * (full if r is None else r * (shape[0] + full // shape[0]))
        return total
    if mode == "modules":
        from gani.gmm import GMMBank

        if gmm is None or image_size is None:
            raise ValueError("modules size needs the gmm settings and the image size")
        bank = GMMBank({n: s[1] for n, s in shapes.items()}, gmm, batch=1)
        return total + 4 * sum(p.numel() for p in bank.parameters()) + 3 * image_size ** 2
    raise ValueError(f"unknown mode {mode!r}")


def canonical_header(data: bytes) -> bytes:
    """The safetensors file `data` with its JSON header rewritten in a fixed order.

    Layout: 8 bytes little-endian header length N, N bytes of JSON (padded with spaces to a
    multiple of 8), then the tensor data, which the header's `data_offsets` index relative
    to its start. safetensors serialises `__metadata__` from a hash map, so its key order
    (and so the file's bytes) changes from one process to the next. Rewritten here:
    `__metadata__` first with its keys sorted, then the tensors in the order of their
    offsets, compact separators, padded to 8 bytes; the tensor data is kept as it is.
    Readers do not depend on the order (safetensors sorts by offset when loading)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered: dict = {}
    if meta is not None:
        ordered["__metadata__"] = dict(sorted(meta.items()))
    for name in sorted(header, key=lambda k: (header[k]["data_offsets"], k)):
        ordered[name] = header[name]
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def _atomic_save(tensors: dict, meta: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = canonical_header(save({k: v.contiguous() for k, v in tensors.items()},
                                 metadata=meta))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        Path(tmp).write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(path, result: TunedImage, target: Optional[torch.Tensor] = None, *,
                  mode: str = "auto", dtype: Optional[str] = None, rank: Optional[int] = None,
                  generator_info: Optional[dict] = None) -> Path:
    """Write `result` to `path` (.safetensors); returns the path. See the module doc."""
    path = Path(path)
    gmm = result.meta.get("gmm")
    can_modules = (result.method == "gani" and bool(result.state) and target is not None
                   and gmm is not None and gmm.get("gradient_source") == "original"
                   and gmm.get("reading", "reparam") == "reparam")
    if dtype is None:
        dtype = "fp16" if (gmm or {}).get("reading") == "optimizer" else "fp32"
    if rank is not None and int(rank) < 1:
        raise ValueError("rank must be ≥ 1 (or None for full deltas)")
    if mode == "auto":
        mode = "modules" if can_modules else ("deltas" if result.deltas else "latent")
    if mode == "modules" and not can_modules:
        raise ValueError("mode 'modules' needs a GANI result (reading reparam, gradient_source "
                         "original) with its module state, and the target image")
    if mode == "deltas" and not result.deltas:
        raise ValueError("this result has no weight deltas; use mode 'latent'")
    if dtype not in ("fp32", "fp16"):
        raise ValueError("dtype must be fp32 or fp16")
    tensors = {"latent": result.latent.float().cpu()}
    meta = {"format": FORMAT, "method": result.method, "mode": mode,
            "loss_curve": json.dumps(result.loss_curve), "error": result.error or "",
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
        shapes = {}
        for k, v in result.deltas.items():
            f = None if rank is None else lowrank_factors(v, rank)
            if f is None:
                tensors[f"delta.{k}"] = v.to(dt).cpu()
            else:
                tensors[f"delta_u.{k}"], tensors[f"delta_v.{k}"] = (x.to(dt).cpu() for x in f)
                shapes[k] = list(v.shape)
        meta["dtype"] = dtype
        meta["rank"] = "" if rank is None else str(int(rank))
        meta["lowrank_shapes"] = json.dumps(shapes)
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
    for k, shape in json.loads(meta.get("lowrank_shapes") or "{}").items():
        deltas[k] = (t[f"delta_u.{k}"].float() @ t[f"delta_v.{k}"].float()).reshape(shape)
    noise_keys = sorted((int(k[6:]) for k in t if k.startswith("noise.")))
    noise = [t[f"noise.{i}"] for i in noise_keys] or None
    target = decode_target(t["target"], meta["target_encoding"]) if "target" in t else None
    return TunedArtifact(method=meta["method"], mode=meta["mode"], latent=t["latent"],
                         meta=meta, state=state, deltas=deltas, noise=noise, target=target)
