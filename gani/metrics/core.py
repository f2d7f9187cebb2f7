"""Reconstruction, identity and locality metrics; `compute_metrics` for one image.

All image metrics run on the HyperStyle-protocol tensors of `preprocess.metric_tensor`
(uint8 truncation, 256 × 256 PIL-bilinear resize, [−1, 1]), one image at a time.

- l2: `torch.nn.MSELoss` (mean over C·H·W) on the [−1, 1] tensors.
- ms_ssim: `ms_ssim.ms_ssim(recon, target)` with the reference's quirks; a NaN result is
  reported as None (the reference drops NaN images from its mean; so does our summary).
- lpips: the LPIPS network passed in (alex, v0.1, inputs in [−1, 1]); None when absent
  (its AlexNet trunk weights are a separate download).
- id: cosine similarity of identity embeddings (`identity.py`), None when no network is
  configured or (template protocol) no face is found in either image. Faces (IR-101
  CurricularFace or IR-SE50): HyperStyle's 5-point ArcFace-template alignment with dlib
  points in place of MTCNN's (default), or the pSp/e4e ID crop (`id_protocol="crop"`).
  Other domains (MoCo v2 ResNet-50): nearest resize to 224, features L2-normalised.
- locality_l2 / locality_lpips: how far the tuned generator G(·; θ') drifts from
  G(·; θ) on n fixed random W latents (seeded), through the same preprocessing; 0.0 when
  there are no weight deltas (θ' = θ).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .identity import _module_device, id_similarity
from .ms_ssim import ms_ssim
from .preprocess import METRIC_SIZE, ImageLike, metric_batch, metric_tensor

# What the images look like: the same on every machine for the same inputs and settings,
# so these go into metrics.json (hashed by DVC, compared by `dvc metrics diff`).
QUALITY_KEYS = ("l2", "ms_ssim", "lpips", "id", "locality_l2", "locality_lpips")
# What the tuning cost: machine- and load-dependent, so the pipeline keeps them apart from the
# results (per image in `timing.json`, docs/output-contract.md#timingjson).
TIMING_KEYS = ("seconds", "peak_mem_bytes")
METRIC_KEYS = QUALITY_KEYS + TIMING_KEYS


def l2(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image MSE [B] on [−1, 1] tensors (MSELoss mean over C·H·W for each image)."""
    return ((recon.float() - target.float()) ** 2).flatten(1).mean(1)


@torch.no_grad()
def lpips_distance(lpips_net: Optional[Callable], recon: torch.Tensor,
                   target: torch.Tensor) -> Optional[torch.Tensor]:
    """Per-image LPIPS [B] with the given network, or None when there is none."""
    if lpips_net is None:
        return None
    dev = _module_device(lpips_net, recon.device)
    d = lpips_net(recon.to(dev), target.to(dev))
    d = torch.as_tensor(d).detach().float().cpu()
    if d.dim() == 0:
        if recon.shape[0] != 1:
            raise ValueError("the LPIPS network returned a batch mean; pass one image at a time")
        return d.reshape(1)
    return d.reshape(d.shape[0], -1).mean(1)


def _synth(G, wplus: torch.Tensor, weight_deltas=None) -> torch.Tensor:
    if weight_deltas is None:
        return G.synthesis(wplus, noise_mode="const")
    return G.synthesis(wplus, noise_mode="const", weight_deltas=weight_deltas)


def locality_latents(G, n: int = 8, seed: int = 1234) -> torch.Tensor:
    """The fixed W latents of the locality metric: w = G.mapping(z), z ~ N(0, I) from
    torch.Generator(seed), repeated over layers → [n, n_latent, style_dim] (CPU float32)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    z = torch.randn(int(n), int(G.style_dim), generator=gen)
    dev = _module_device(G, torch.device("cpu"))
    with torch.no_grad():
        w = G.mapping(z.to(dev)).float().cpu()
    return w.unsqueeze(1).repeat(1, int(G.n_latent), 1)


@torch.no_grad()
def locality(G, weight_deltas=None, *, n: int = 8, seed: int = 1234,
             lpips_net: Optional[Callable] = None, tuned_G=None, batch_size: int = 4,
             size: int = METRIC_SIZE, domain: Optional[str] = None
             ) -> tuple[float, Optional[float]]:
    """(L2, LPIPS) between G(w; θ) and G(w; θ') averaged over n seeded W latents.

    θ' is `G` with `weight_deltas`, or a separate `tuned_G`. Without either the two
    generators are the same and the result is (0.0, 0.0 or None).
    """
    if weight_deltas is None and tuned_G is None:
        return 0.0, (0.0 if lpips_net is not None else None)
    latents = locality_latents(G, n, seed)
    dev = _module_device(G, torch.device("cpu"))
    l2s, lps = [], []
    for i in range(0, latents.shape[0], batch_size):
        w = latents[i:i + batch_size].to(dev)
        a = _synth(G, w)
        b = _synth(tuned_G, w) if tuned_G is not None else _synth(G, w, weight_deltas)
        if domain is not None:
            from gani.alignment.domains import crop_generated
            a, b = crop_generated(a, domain), crop_generated(b, domain)
        a, b = metric_batch(a, size), metric_batch(b, size)
        l2s.append(l2(b, a))
        if lpips_net is not None:
            lps.append(lpips_distance(lpips_net, b, a))
    l2v = float(torch.cat(l2s).mean())
    lpv = float(torch.cat(lps).mean()) if lps else None
    return l2v, lpv


def _scalar(t: Optional[torch.Tensor]) -> Optional[float]:
    if t is None:
        return None
    v = float(t.reshape(-1)[0])
    return None if math.isnan(v) else v


def compute_metrics(target: ImageLike, recon: ImageLike, *, lpips_net: Optional[Callable] = None,
                    id_net: Optional[Callable] = None, id_kind: str = "face",
                    id_protocol: str = "template", G=None,
                    weight_deltas=None, tuned_G=None, locality_n: int = 8,
                    locality_seed: int = 1234, seconds: Optional[float] = None,
                    peak_mem_bytes: Optional[int] = None, meter=None,
                    domain: Optional[str] = None, size: int = METRIC_SIZE
                    ) -> dict[str, Optional[float]]:
    """All per-image metrics as the `metrics.json` contract: exactly `METRIC_KEYS`.

    target: the prepared input image (PIL / uint8 array / [−1, 1] tensor); recon: the
    reconstruction (a [−1, 1] generator output tensor or an image). For cars (`domain`),
    a square generator output is first cropped to its content rows. G (+ weight_deltas or
    tuned_G) enables locality; without G it is None. seconds / peak_mem_bytes come from the
    caller's `ResourceMeter` (pass `meter=`) or directly. Values are None where a network
    or input is absent, never invented.
    """
    if domain is not None and isinstance(recon, torch.Tensor) and recon.shape[-1] == \
            recon.shape[-2]:
        from gani.alignment.domains import crop_generated
        recon = crop_generated(recon, domain)
    y = metric_tensor(target, size)
    x = metric_tensor(recon, size)
    out: dict[str, Optional[float]] = dict.fromkeys(METRIC_KEYS)
    out["l2"] = _scalar(l2(x, y))
    out["ms_ssim"] = _scalar(ms_ssim(x, y))
    out["lpips"] = _scalar(lpips_distance(lpips_net, x, y))
    out["id"] = _scalar(id_similarity(id_net, x, y, kind=id_kind, protocol=id_protocol))
    if G is not None:
        loc_l2, loc_lp = locality(G, weight_deltas, n=locality_n, seed=locality_seed,
                                  lpips_net=lpips_net, tuned_G=tuned_G, size=size,
                                  domain=domain)
        out["locality_l2"], out["locality_lpips"] = loc_l2, loc_lp
    if meter is not None:
        seconds = meter.seconds if seconds is None else seconds
        peak_mem_bytes = meter.peak_mem_bytes if peak_mem_bytes is None else peak_mem_bytes
    out["seconds"] = None if seconds is None else float(seconds)
    out["peak_mem_bytes"] = None if peak_mem_bytes is None else int(peak_mem_bytes)
    return out


def summarize(per_image: list[dict], keys: tuple[str, ...] = METRIC_KEYS
              ) -> dict[str, Optional[float]]:
    """Mean of each of `keys` over images, skipping None/NaN (HyperStyle drops NaN images)."""
    from .ms_ssim import nanmean_dropping

    return {k: nanmean_dropping(m.get(k) for m in per_image) for k in keys}

