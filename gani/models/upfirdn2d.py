"""upfirdn2d in pure PyTorch, and the two fixed FIR layers StyleGAN2 builds from it.

Per channel (docs/checkpoints.md#upfirdn2d): (1) upsample by inserting ``up − 1`` zeros
after every sample, (2) zero-pad (negative pads crop), (3) convolve with the kernel (a true
convolution: the kernel is flipped before the cross-correlation), (4) keep every
``down``-th sample.
Output size per axis: (size·up + pad0 + pad1 − k) // down + 1.

No compiled extension is involved, so it runs on CPU and GPU alike and autograd gives the
exact gradient.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A 1-D kernel becomes its outer product with itself; normalised to sum 1."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.dim() == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample, FIR-filter and downsample every channel of ``x`` [N, C, H, W].

    ``pad`` = (p0, p1) is applied before/after on both axes (rosinality's 2-tuple form).
    """
    n, c, h, w = x.shape
    p0, p1 = pad
    if up > 1:
        # sample i lands at i·up; up − 1 zeros follow it
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    # a symmetric, non-negative pad is the convolution's own zero padding (the same values:
    # no padded copy of x, nor its backward); otherwise pad explicitly (negative values crop)
    conv_pad = p0 if p0 == p1 and p0 >= 0 else 0
    if not conv_pad and (p0 or p1):
        x = F.pad(x, [p0, p1, p0, p1])
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device)
    weight = weight.view(1, 1, kh, kw).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, groups=c, padding=conv_pad)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


class Blur(nn.Module):
    """FIR low-pass used after the transposed up-conv (pad (1, 1) for the 4-tap kernel).

    The kernel (normalised, times ``upsample_factor``²) is a persistent buffer, because the
    official checkpoints store it as ``<prefix>.blur.kernel``.
    """

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2× FIR up-sampling of the ToRGB skip path (kernel·factor², pad (2, 1) for 4 taps)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * (factor ** 2)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)
