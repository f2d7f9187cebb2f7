"""Small state-dict helpers shared by the model loaders."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from gani.safeload import load_torch_file


def read_checkpoint(path_or_obj: Any) -> Any:
    """A path goes through the safe reader (gani.safeload); anything else is returned."""
    if isinstance(path_or_obj, (str, Path)):
        return load_torch_file(path_or_obj)
    return path_or_obj


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict:
    """Keys that start with ``prefix``, with it removed; the others are dropped."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def with_bn_counters(module: nn.Module, sd: Mapping[str, torch.Tensor]) -> dict:
    """Copy of ``sd`` with any missing BatchNorm ``num_batches_tracked`` filled in from
    ``module`` (old checkpoints predate the counter; its value does not affect eval)."""
    sd = dict(sd)
    for name, buf in module.named_buffers():
        if name.endswith("num_batches_tracked") and name not in sd:
            sd[name] = buf.detach().clone()
    return sd


class TolerantBNLoading:
    """Mixin: ``load_state_dict`` stays strict but accepts files without
    ``num_batches_tracked`` entries."""

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return nn.Module.load_state_dict(self, with_bn_counters(self, state_dict),
                                         strict=strict, assign=assign)
