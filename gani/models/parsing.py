"""MaskGAN face-parsing U-Net (CelebAMask-HQ ``face_parsing/unet.py``;
docs/checkpoints.md#maskgan-face-parser).

``unet(feature_scale=4, n_classes=19, is_deconv=True, is_batchnorm=True)``: filters
16/32/64/128/256; every ``unetConv2`` is two [Conv3×3 (bias) → BN → ReLU]; the expanding
path up-samples with ConvTranspose2d(k2, s2), concatenates [skip, up] and applies another
unetConv2 (with BN). Keys match the released ``model.pth`` (no ``module.`` prefix).

``contracting_features(x)`` returns the 5 contracting-path maps (conv1..conv4, center,
before pooling) used by GANI's parsing loss; ``forward`` gives the 19-class logits.
Reference input: 512×512, RGB normalised to [−1, 1].
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._state import TolerantBNLoading, read_checkpoint

LABELS = ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow",
          "l_ear", "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l",
          "neck", "cloth")


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU())


class UNetConv2(nn.Module):
    """Two Conv3×3 → BN → ReLU stages (keys ``conv1.{0,1}``, ``conv2.{0,1}``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _conv_bn_relu(cin, cout)
        self.conv2 = _conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UNetUp(nn.Module):
    """ConvTranspose2d(in→out, 2, 2) of the deeper map, pad the skip by the size offset,
    concat [skip, up], UNetConv2(in→out) (keys ``up``, ``conv``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = UNetConv2(cin, cout)
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)

    def forward(self, skip: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
        up = self.up(deeper)
        offset = up.shape[2] - skip.shape[2]
        if offset:
            skip = F.pad(skip, 2 * [offset // 2, offset // 2])
        return self.conv(torch.cat([skip, up], 1))


class FaceParsingUNet(TolerantBNLoading, nn.Module):
    """The MaskGAN parser; ``feature_scale`` divides the filters [64..1024] (4 = official)."""

    def __init__(self, feature_scale: int = 4, n_classes: int = 19, in_channels: int = 3):
        super().__init__()
        f = [int(c / feature_scale) for c in (64, 128, 256, 512, 1024)]
        self.filters = f
        self.conv1 = UNetConv2(in_channels, f[0])
        self.maxpool1 = nn.MaxPool2d(2)
        self.conv2 = UNetConv2(f[0], f[1])
        self.maxpool2 = nn.MaxPool2d(2)
        self.conv3 = UNetConv2(f[1], f[2])
        self.maxpool3 = nn.MaxPool2d(2)
        self.conv4 = UNetConv2(f[2], f[3])
        self.maxpool4 = nn.MaxPool2d(2)
        self.center = UNetConv2(f[3], f[4])
        self.up_concat4 = UNetUp(f[4], f[3])
        self.up_concat3 = UNetUp(f[3], f[2])
        self.up_concat2 = UNetUp(f[2], f[1])
        self.up_concat1 = UNetUp(f[1], f[0])
        self.final = nn.Conv2d(f[0], n_classes, 1)

    def contracting_features(self, x: torch.Tensor) -> list:
        """[conv1, conv2, conv3, conv4, center] (before pooling; at 512 input
        16×512², 32×256², 64×128², 128×64², 256×32²)."""
        c1 = self.conv1(x)
        c2 = self.conv2(self.maxpool1(c1))
        c3 = self.conv3(self.maxpool2(c2))
        c4 = self.conv4(self.maxpool3(c3))
        center = self.center(self.maxpool4(c4))
        return [c1, c2, c3, c4, center]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3, c4, center = self.contracting_features(x)
        up = self.up_concat4(c4, center)
        up = self.up_concat3(c3, up)
        up = self.up_concat2(c2, up)
        up = self.up_concat1(c1, up)
        return self.final(up)


def load_face_parser(path_or_dict: Any) -> FaceParsingUNet:
    """The parser from MaskGAN's ``model.pth`` (path or state dict), strict, eval mode.
    A ``module.`` prefix (DataParallel save) is stripped."""
    sd = read_checkpoint(path_or_dict)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    net = FaceParsingUNet()
    net.load_state_dict(sd, strict=True)
    return net.eval()
