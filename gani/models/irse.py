"""IR / IR-SE residual units and the face-recognition ``Backbone``
(docs/checkpoints.md#face-identity-backbones).

- ``IRSE50()``: ArcFace IR-SE50 (TreB1eN / pSp ``model_ir_se50.pth``), output BN1d affine.
- ``IR101()``: CurricularFace IR-101 (``CurricularFace_Backbone.pth``), plain IR units
  3/13/30/3, output BN1d without affine.
Both take [B, 3, 112, 112] RGB in [−1, 1] and return [B, 512] L2-normalised embeddings
(x / ‖x‖₂, no eps, as the references do).

The same unit code builds the e4e encoder body (gani.models.e4e). ``width_div`` divides
every channel count (demo/test networks); 1 is the official layout.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._state import TolerantBNLoading, read_checkpoint

STAGE_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
STAGE_DEPTHS = (64, 128, 256, 512)


class UnitSpec(NamedTuple):
    in_channel: int
    depth: int
    stride: int


def body_specs(num_layers: int, width_div: int = 1) -> list:
    """Per-unit (in, depth, stride): each stage opens with a stride-2 unit."""
    specs, in_c = [], 64 // width_div
    for n_units, depth in zip(STAGE_UNITS[num_layers], STAGE_DEPTHS):
        depth //= width_div
        specs.append(UnitSpec(in_c, depth, 2))
        specs.extend(UnitSpec(depth, depth, 1) for _ in range(n_units - 1))
        in_c = depth
    return specs


class SEModule(nn.Module):
    """Squeeze-excitation: avg pool → fc1 (1×1) → ReLU → fc2 (1×1) → sigmoid → scale."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, mid, 1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(mid, channels, 1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * s


class BottleneckIR(nn.Module):
    """IR unit: BN → 3×3 conv → PReLU → 3×3 conv (stride) → BN [→ SE], plus the shortcut
    (1×1-stride max pool when channels match, else 1×1 conv + BN). No post-activation."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool = False):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        layers = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def BottleneckIRSE(in_channel: int, depth: int, stride: int) -> BottleneckIR:
    """IR unit with squeeze-excitation (``res_layer.5``)."""
    return BottleneckIR(in_channel, depth, stride, se=True)


def make_body(num_layers: int, mode: str, width_div: int = 1) -> nn.Sequential:
    """The flat ``body.{i}`` sequence of units."""
    if mode not in ("ir", "ir_se"):
        raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
    return nn.Sequential(*[BottleneckIR(s.in_channel, s.depth, s.stride, se=(mode == "ir_se"))
                           for s in body_specs(num_layers, width_div)])


def make_input_layer(width_div: int = 1) -> nn.Sequential:
    """Conv3×3(3→64, no bias) → BN → PReLU (keys ``input_layer.{0,1,2}``)."""
    c = 64 // width_div
    return nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.PReLU(c))


def l2_norm(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """x / ‖x‖₂ (no epsilon, as in the reference code)."""
    return x / torch.norm(x, 2, dim, True)


class Backbone(TolerantBNLoading, nn.Module):
    """Face-recognition backbone: input_layer → body → output_layer → L2 norm.

    output_layer: BN2d → Dropout → Flatten → Linear(C·7·7, C) → BN1d(C, affine).
    Input must be 112×112. Strict loading tolerates missing ``num_batches_tracked``.
    """

    def __init__(self, input_size: int = 112, num_layers: int = 50, mode: str = "ir_se",
                 drop_ratio: float = 0.4, affine: bool = True, width_div: int = 1):
        super().__init__()
        if input_size != 112:
            raise ValueError("only input_size 112 is supported")
        self.input_size = input_size
        c = 512 // width_div
        self.input_layer = make_input_layer(width_div)
        self.body = make_body(num_layers, mode, width_div)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(c), nn.Dropout(drop_ratio), nn.Flatten(),
            nn.Linear(c * 7 * 7, c), nn.BatchNorm1d(c, affine=affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"expected {self.input_size}×{self.input_size} input, "
                             f"got {tuple(x.shape[-2:])}")
        x = self.output_layer(self.body(self.input_layer(x)))
        return l2_norm(x)


def IRSE50(width_div: int = 1) -> Backbone:
    """ArcFace IR-SE50 as used by pSp/e4e's ID loss (drop 0.6, BN1d affine)."""
    return Backbone(112, 50, "ir_se", drop_ratio=0.6, affine=True, width_div=width_div)


def IR101(width_div: int = 1) -> Backbone:
    """CurricularFace IR-101 as used by HyperStyle's ID metric (drop 0.4, BN1d no affine)."""
    return Backbone(112, 100, "ir", drop_ratio=0.4, affine=False, width_div=width_div)


def id_crop_pool(img: torch.Tensor) -> torch.Tensor:
    """pSp/e4e ID-loss input: [B, 3, S, S] in [−1, 1] → [B, 3, 112, 112]
    (docs/checkpoints.md#id-crop).

    Non-256 inputs (e.g. 1024 generator output) are first average-pooled to 256 (pSp's
    face_pool); then rows 35:223, cols 32:220 are cropped and adaptive-avg-pooled to 112.
    """
    if img.shape[-2:] != (256, 256):
        img = F.adaptive_avg_pool2d(img, (256, 256))
    return F.adaptive_avg_pool2d(img[:, :, 35:223, 32:220], (112, 112))


def _load_backbone(net: Backbone, path_or_dict: Any) -> Backbone:
    sd = read_checkpoint(path_or_dict)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if any(k.startswith("module.") for k in sd):
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    net.load_state_dict(sd, strict=True)
    return net.eval()


def load_irse50(path_or_dict: Any) -> Backbone:
    """IR-SE50 from ``model_ir_se50.pth`` (path or state dict), strict, eval mode."""
    return _load_backbone(IRSE50(), path_or_dict)


def load_ir101(path_or_dict: Any) -> Backbone:
    """IR-101 from ``CurricularFace_Backbone.pth`` (path or state dict), strict, eval mode."""
    return _load_backbone(IR101(), path_or_dict)
