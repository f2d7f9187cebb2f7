"""A StyleGAN2-style residual discriminator (equalised learning rate), written for the testbed.

Layout follows the StyleGAN2 paper's residual D (config E/F) as rosinality implements it:

    FromRGB (1×1 conv + bias + lrelu)
    ResBlock × log2(size/4):  conv3×3 → blur+conv3×3 stride 2 ; skip: blur + conv1×1 stride 2
                              out = (main + skip) / √2
    minibatch stddev (group ≤ 4, 1 feature) → conv3×3 → flatten → linear+lrelu → linear → 1

Every conv/linear weight is stored N(0, 1) and scaled at run time by 1/√fan_in (× lr_mul);
"lrelu" is leaky-ReLU(0.2) × √2 after adding the bias (FusedLeakyReLU). Blur uses the
[1, 3, 3, 1] kernel (normalised), with rosinality's padding rule for a downsampling conv.
Channels: ``min(channel_max, base[res] · channel_multiplier)`` with the official table, or
an explicit ``channels`` mapping (resolution → channels, as the Generator's) that replaces it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_BASE = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def d_channels(size: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    out = {}
    for res, c in _BASE.items():
        c = c if res <= 32 else c * channel_multiplier
        out[res] = int(min(c, channel_max))
    return {r: c for r, c in out.items() if r <= size}


def _lrelu(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.dim() - 2)))
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


class Blur(nn.Module):
    def __init__(self, kernel=(1, 3, 3, 1), pad=(0, 0)):
        super().__init__()
        k = torch.tensor(kernel, dtype=torch.float32)
        k = k[None, :] * k[:, None]
        k = k / k.sum()
        self.register_buffer("kernel", torch.flip(k, [0, 1])[None, None], persistent=False)
        self.pad = pad

    def forward(self, x):
        c = x.shape[1]
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        return F.conv2d(x, self.kernel.expand(c, 1, -1, -1), groups=c)


class EqualConv2d(nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.scale = 1 / math.sqrt(cin * k * k)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class EqualLinear(nn.Module):
    def __init__(self, din, dout, activation=False, lr_mul=1.0, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dout, din) / lr_mul)
        self.bias = nn.Parameter(torch.full((dout,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(din)
        self.lr_mul, self.activation = lr_mul, activation

    def forward(self, x):
        if self.activation:
            return _lrelu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class ConvLayer(nn.Module):
    """[blur →] equalised conv [→ bias + lrelu]; downsample = blur then stride-2 conv."""

    def __init__(self, cin, cout, k, downsample=False, blur_kernel=(1, 3, 3, 1), activate=True,
                 bias=True):
        super().__init__()
        self.blur = None
        if downsample:
            p = (len(blur_kernel) - 2) + (k - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
            stride, padding = 2, 0
        else:
            stride, padding = 1, k // 2
        self.conv = EqualConv2d(cin, cout, k, stride, padding, bias=bias and not activate)
        self.act_bias = nn.Parameter(torch.zeros(cout)) if (activate and bias) else None
        self.activate = activate

    def forward(self, x):
        if self.blur is not None:
            x = self.blur(x)
        x = self.conv(x)
        if self.activate:
            x = _lrelu(x, self.act_bias)
        return x


class ResBlock(nn.Module):
    def __init__(self, cin, cout, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(cin, cin, 3)
        self.conv2 = ConvLayer(cin, cout, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(cin, cout, 1, downsample=True, blur_kernel=blur_kernel,
                              activate=False, bias=False)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    def __init__(self, size: int, channel_multiplier: int = 2, channel_max: int = 512,
                 blur_kernel=(1, 3, 3, 1), stddev_group: int = 4, channels=None):
        super().__init__()
        log = int(math.log2(size))
        if 2 ** log != size or size < 8:
            raise ValueError(f"size must be a power of two ≥ 8, got {size}")
        if channels is not None:
            from gani.models.stylegan2 import as_channel_table
            ch = as_channel_table(channels, size)
        else:
            ch = d_channels(size, channel_multiplier, channel_max)
        self.channels = ch
        self.size = size
        self.from_rgb = ConvLayer(3, ch[size], 1)
        blocks = []
        cin = ch[size]
        for i in range(log, 2, -1):
            cout = ch[2 ** (i - 1)]
            blocks.append(ResBlock(cin, cout, blur_kernel))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.stddev_group, self.stddev_feat = stddev_group, 1
        self.final_conv = ConvLayer(cin + 1, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 4 * 4, ch[4], activation=True),
                                          EqualLinear(ch[4], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.from_rgb(x))
        b, c, h, w = out.shape
        group = min(b, self.stddev_group)
        while b % group:
            group -= 1
        y = out.view(group, -1, self.stddev_feat, c // self.stddev_feat, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        y = y.repeat(group, 1, h, w)
        out = self.final_conv(torch.cat([out, y], 1))
        return self.final_linear(out.flatten(1))
