"""LPIPS (v0.1, AlexNet trunk) through the ``lpips`` package, with nothing downloaded.

The package's own constructor would fetch torchvision's ImageNet AlexNet from the internet.
We build ``lpips.LPIPS(net='alex', pretrained=False, pnet_rand=True)`` (random trunk, no
linear heads loaded, no download) and then load
- the trunk from a LOCAL ``alexnet-owt-7be5be79.pth`` (torchvision layout,
  ``features.{0,3,6,8,10}.{weight,bias}``; the classifier is ignored), and
- the linear heads ``lin{0..4}.model.1.weight`` from the file shipped inside the package
  (``lpips/weights/v0.1/alex.pth``),
both read through gani.safeload (weights-only). Inputs RGB in [−1, 1]; output
[B, 1, 1, 1] as the package returns it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ._state import read_checkpoint

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
# torchvision features index → lpips slice holding it
_FEATURE_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
_LIN_CHANNELS = (64, 192, 384, 256, 256)


def package_lin_path() -> Path:
    """The v0.1 alex linear-head file inside the installed ``lpips`` package."""
    import lpips

    return Path(os.path.dirname(lpips.__file__)) / "weights" / "v0.1" / "alex.pth"


def alexnet_trunk_state(sd: Mapping[str, torch.Tensor]) -> dict:
    """torchvision alexnet keys → the lpips trunk keys ``net.slice{s}.{i}.*``."""
    out = {}
    for i, s in _FEATURE_SLICES.items():
        for p in ("weight", "bias"):
            key = f"features.{i}.{p}"
            if key not in sd:
                raise ValueError(f"AlexNet state dict lacks {key!r}: not torchvision's "
                                 f"{ALEXNET_FILE} layout")
            out[f"net.slice{s}.{i}.{p}"] = sd[key]
    return out


def _lin_state(sd: Mapping[str, torch.Tensor]) -> dict:
    out = {}
    for i, c in enumerate(_LIN_CHANNELS):
        key = f"lin{i}.model.1.weight"
        if key not in sd or tuple(sd[key].shape) != (1, c, 1, 1):
            raise ValueError(f"LPIPS linear-head file lacks {key!r} of shape [1,{c},1,1]")
        out[key] = sd[key]
    return out


class LPIPSAlex(nn.Module):
    """LPIPS(alex, v0.1) distance module; ``forward(x, y)`` → [B, 1, 1, 1].

    alexnet: path of the local ``alexnet-owt-7be5be79.pth`` (or its loaded state dict).
    lin: optional path/dict of the linear heads (default: the package's file).
    """

    def __init__(self, alexnet: Any, lin: Any = None):
        super().__init__()
        import lpips

        if isinstance(alexnet, (str, Path)) and not Path(alexnet).is_file():
            raise FileNotFoundError(
                f"LPIPS needs torchvision's ImageNet AlexNet weights, not found at "
                f"{alexnet}. Get {ALEXNET_FILE} from {ALEXNET_URL} on a machine with "
                f"network access and import it (`gani checkpoints import PATH`).")
        with warnings.catch_warnings():  # torchvision's `pretrained=` deprecation notice
            warnings.simplefilter("ignore", UserWarning)
            net = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True,
                              verbose=False)
        state = alexnet_trunk_state(read_checkpoint(alexnet))
        state.update(_lin_state(read_checkpoint(lin if lin is not None else package_lin_path())))
        result = net.load_state_dict(state, strict=False)
        # everything else is the fixed scaling layer or the `lins.*` aliases of `lin*`
        leftover = [k for k in result.missing_keys
                    if not k.startswith(("scaling_layer.", "lins."))]
        if leftover or result.unexpected_keys:
            raise RuntimeError(f"LPIPS load mismatch: missing {leftover}, "
                               f"unexpected {result.unexpected_keys}")
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """x, y in [−1, 1] (or [0, 1] with ``normalize=True``) → [B, 1, 1, 1]."""
        return self.net(x, y, normalize=normalize)


def load_lpips(alexnet_path: Any, lin: Any = None) -> LPIPSAlex:
    """LPIPSAlex from the local AlexNet file; clear FileNotFoundError when it is absent."""
    return LPIPSAlex(alexnet_path, lin)
