"""MS-SSIM exactly as HyperStyle's `criteria/ms_ssim.py` computes it
(docs/protocols.md#ms-ssim).

That file (from jorge-pessoa/pytorch-msssim) differs from the textbook MS-SSIM, and the
published tables carry its quirks, so we keep them:

- Gaussian window of 11 taps, σ = 1.5, built in float32 and applied depthwise per channel
  with NO padding ("valid" convolution); at a scale smaller than 11 px the window shrinks
  to the image size (σ stays 1.5).
- 5 scales with weights [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]; 2×2 average pooling
  between scales; result = Π_{s<4} cs_s^{w_s} · ssim_4^{w_4}, each a mean over the whole
  map (all channels, all pixels).
- The dynamic range L is guessed from img1 *at every scale* (the guess runs inside the
  per-scale SSIM): max_val = 255 if max(img1) > 128 else 1; min_val = −1 if
  min(img1) < −0.5 else 0; L = max_val − min_val; C1 = (0.01 L)², C2 = (0.03 L)².
  Quirk: a [−1, 1] image whose minimum is ≥ −0.5 (a bright image, or a coarse scale where
  pooling lifted the minimum) gets L = 1 instead of 2, which changes C1/C2 fourfold.
- A negative contrast term raised to a fractional weight is NaN; the reference keeps the
  NaN per image and drops NaN images when averaging (`nanmean_dropping`).

HyperStyle calls it as loss(result, gt), so img1 is the reconstruction.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int = 11, sigma: float = 1.5, channels: int = 3) -> torch.Tensor:
    """[channels, 1, size, size] float32 window, built the way the reference builds it."""
    g = torch.tensor([math.exp(-(x - size // 2) ** 2 / float(2 * sigma ** 2))
                      for x in range(size)], dtype=torch.float32)
    g = g / g.sum()
    w2 = g.unsqueeze(1).mm(g.unsqueeze(1).t()).float()
    return w2.expand(channels, 1, size, size).contiguous()


def guess_dynamic_range(img1: torch.Tensor) -> float:
    """The reference's L from img1 alone (see the module doc)."""
    max_val = 255 if float(img1.max()) > 128 else 1
    min_val = -1 if float(img1.min()) < -0.5 else 0
    return float(max_val - min_val)


def ssim_and_cs(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11,
                val_range: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast sensitivity of one scale (valid conv, whole-tensor mean)."""
    L = guess_dynamic_range(img1) if val_range is None else float(val_range)
    _, channels, height, width = img1.shape
    real = min(window_size, height, width)
    window = gaussian_window(real, 1.5, channels).to(img1.device, img1.dtype)

    mu1 = F.conv2d(img1, window, padding=0, groups=channels)
    mu2 = F.conv2d(img2, window, padding=0, groups=channels)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = F.conv2d(img1 * img1, window, padding=0, groups=channels) - mu1_sq
    sigma2_sq = F.conv2d(img2 * img2, window, padding=0, groups=channels) - mu2_sq
    sigma12 = F.conv2d(img1 * img2, window, padding=0, groups=channels) - mu1_mu2

    c1 = (0.01 * L) ** 2
    c2 = (0.03 * L) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma1_sq + sigma2_sq + c2
    cs = v1 / v2
    ssim_map = ((2 * mu1_mu2 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)
    return ssim_map.mean(), cs.mean()


def ms_ssim_one(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11,
                val_range: Optional[float] = None) -> torch.Tensor:
    """MS-SSIM of one pair [1, C, H, W] (a 0-d tensor; may be NaN, as in the reference)."""
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float32, device=img1.device)
    ssims, mcs = [], []
    for _ in range(len(MS_SSIM_WEIGHTS)):
        sim, cs = ssim_and_cs(img1, img2, window_size, val_range)
        ssims.append(sim)
        mcs.append(cs)
        img1 = F.avg_pool2d(img1, (2, 2))
        img2 = F.avg_pool2d(img2, (2, 2))
    ssims_t = torch.stack(ssims)
    mcs_t = torch.stack(mcs)
    pow1 = mcs_t ** weights
    pow2 = ssims_t ** weights
    return torch.prod(pow1[:-1]) * pow2[-1]


@torch.no_grad()
def ms_ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11,
            val_range: Optional[float] = None) -> torch.Tensor:
    """Per-image MS-SSIM for batches [B, C, H, W] → [B] (each image on its own, like the
    reference's one-at-a-time loop, so the range guess is per image)."""
    if img1.shape != img2.shape or img1.dim() != 4:
        raise ValueError(f"ms_ssim needs two [B, C, H, W] tensors of one shape; got "
                         f"{tuple(img1.shape)} and {tuple(img2.shape)}")
    img1 = img1.float()
    img2 = img2.float()
    return torch.stack([ms_ssim_one(img1[i:i + 1], img2[i:i + 1], window_size, val_range)
                        for i in range(img1.shape[0])])


def nanmean_dropping(values: Iterable[Optional[float]]) -> Optional[float]:
    """Mean over values that are neither None nor NaN (the reference drops NaN images)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(kept) / len(kept) if kept else None
