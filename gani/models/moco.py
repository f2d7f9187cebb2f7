"""MoCo v2 ResNet-50 feature extractor, the ID network for non-face domains
(docs/checkpoints.md#moco-v2-resnet-50).

Backbone: torchvision ``resnet50(weights=None)`` without its fc; the state-dict keys are
torchvision's (``conv1``, ``bn1``, ``layer1..4``), so the official file's
``module.encoder_q.*`` entries minus ``fc.*`` load strictly once the prefix is stripped.

Features (e4e/HyperStyle MocoLoss): nearest resize to 224×224 of the raw [−1, 1] image
(no ImageNet normalisation), conv1…layer4 + global average pool, L2-normalise over the
2048 channels → [B, 2048]. Unlike the reference, batch 1 keeps its batch dimension.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._state import TolerantBNLoading, read_checkpoint

MOCO_PREFIX = "module.encoder_q."


class MocoResNet50(TolerantBNLoading, nn.Module):
    """ResNet-50 trunk (no fc) → [B, 2048] unit-norm features."""

    input_size = 224

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                     "layer4", "avgpool"):
            setattr(self, name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=self.input_size)  # nearest, as the reference
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return F.normalize(x, dim=1)


def moco_state_dict(ckpt: Any) -> dict:
    """``module.encoder_q.*`` minus ``fc.*``, prefix stripped (from the checkpoint dict or
    its ``state_dict``). Raises if the file has no query-encoder keys."""
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ValueError("not a MoCo checkpoint: expected a dict with 'state_dict'")
    out = {k[len(MOCO_PREFIX):]: v for k, v in sd.items()
           if k.startswith(MOCO_PREFIX) and not k.startswith(MOCO_PREFIX + "fc")}
    if not out:
        raise ValueError(f"not a MoCo checkpoint: no '{MOCO_PREFIX}*' keys")
    return out


def load_moco(path_or_dict: Any) -> MocoResNet50:
    """MoCo v2 features from ``moco_v2_800ep_pretrain.pth.tar`` (path or dict), strict,
    eval mode."""
    net = MocoResNet50()
    net.load_state_dict(moco_state_dict(read_checkpoint(path_or_dict)), strict=True)
    return net.eval()
