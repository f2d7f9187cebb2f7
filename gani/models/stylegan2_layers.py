"""The layers of the StyleGAN2 generator, in the rosinality parameter layout
(docs/checkpoints.md#stylegan2-generator).

A ladder of small modules, each with exactly the parameters and buffers the official
checkpoints carry, and the numerics of docs/checkpoints.md#layer-numerics:

- ``PixelNorm``      x · rsqrt(mean_c x² + 1e-8)
- ``EqualLinear``    equalised learning rate: W·lr_mul/√in, b·lr_mul; optional fused lrelu
- ``FusedLeakyReLU`` leaky_relu(x + b, 0.2)·√2
- ``ModulatedConv2d`` modulation, demodulation (eps 1e-8), grouped per-sample conv,
                     transposed conv + blur for 2× up-sampling; accepts per-sample
                     additive weight corrections (the GANI / PTI tuned weights)
- ``NoiseInjection``, ``StyledConv``, ``ToRGB``, ``ConstantInput``
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .upfirdn2d import Blur, Upsample

SQRT2 = math.sqrt(2.0)


class PixelNorm(nn.Module):
    """Normalise each sample's vector to unit RMS over dim 1 (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """leaky_relu(x + bias, slope)·scale; ``bias`` broadcasts on dim 1."""
    shape = (1, bias.shape[0]) + (1,) * (x.dim() - 2)
    return F.leaky_relu(x + bias.view(shape), negative_slope=negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU (0.2) + √2 gain; one parameter ``bias`` [channels]."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate.

    Stored ``weight`` [out, in] (initialised N(0,1)/lr_mul) and ``bias`` [out]; at run time
    the weight is scaled by lr_mul/√in and the bias by lr_mul. ``activation="fused_lrelu"``
    applies ``fused_leaky_relu`` with the scaled bias.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: Optional[str] = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.activation = activation
        self.scale = (1.0 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, self.bias * self.lr_mul)
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, self.weight * self.scale, bias=bias)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (stored ``weight`` [1, out, in, k, k]).

    For each sample b: W_b = scale · (W + Δ_b) · s_b[in], scale = 1/√(in·k²), s = modulation(w);
    with ``demodulate`` each output filter is divided by √(Σ W_b² + 1e-8). The B filters run
    as one grouped convolution. ``upsample`` uses a stride-2 transposed conv followed by
    ``Blur`` (pad (1, 1)), as the official up-sampling convs do.

    ``delta`` (optional) is an additive correction to the stored weight, shaped
    [B, out, in, k, k] (one per sample), [1, out, in, k, k] or [out, in, k, k] (shared).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channel, self.out_channel = in_channel, out_channel
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, "
                f"demodulate={self.demodulate}, upsample={self.upsample}")

    def modulated_weight(self, style: torch.Tensor,
                         delta: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The per-sample effective weight [B, out, in, k, k] (after scale, mod, demod)."""
        batch = style.shape[0]
        weight = self.weight
        if delta is not None:
            if delta.dim() == 4:
                delta = delta.unsqueeze(0)
            if delta.shape[1:] != weight.shape[1:] or delta.shape[0] not in (1, batch):
                raise ValueError(
                    f"weight delta of shape {tuple(delta.shape)} does not fit weight "
                    f"{tuple(weight.shape[1:])} with batch {batch}")
            weight = weight + delta
        s = self.modulation(style).view(batch, 1, self.in_channel, 1, 1)
        weight = self.scale * weight * s
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
        return weight

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                delta: Optional[torch.Tensor] = None) -> torch.Tensor:
        batch, in_ch, height, width = x.shape
        k = self.kernel_size
        weight = self.modulated_weight(style, delta)
        x = x.reshape(1, batch * in_ch, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_ch, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.view(batch, self.out_channel, out.shape[-2], out.shape[-1])
            return self.blur(out)
        weight = weight.reshape(batch * self.out_channel, in_ch, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.view(batch, self.out_channel, out.shape[-2], out.shape[-1])


class NoiseInjection(nn.Module):
    """x + weight·noise; noise [B or 1, 1, H, W]; ``None`` draws fresh N(0, 1)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class StyledConv(nn.Module):
    """ModulatedConv2d → noise → FusedLeakyReLU (keys ``conv.*``, ``noise.weight``,
    ``activate.bias``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim,
                                    demodulate=demodulate, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: Optional[torch.Tensor] = None,
                delta: Optional[torch.Tensor] = None, add_noise: bool = True) -> torch.Tensor:
        out = self.conv(x, style, delta)
        if add_noise:
            out = self.noise(out, noise)
        return self.activate(out)


class ToRGB(nn.Module):
    """1×1 modulated conv without demodulation + ``bias`` [1, 3, 1, 1], plus the
    FIR-up-sampled skip from the previous resolution (``upsample.kernel`` buffer)."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: Optional[torch.Tensor] = None,
                delta: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.conv(x, style, delta) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learned 4×4 constant (key ``input``), repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)
