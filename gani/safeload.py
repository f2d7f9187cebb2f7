"""Safe reading of checkpoint files: never unpickles arbitrary objects.

A leaf module (torch and safetensors only): the networks in `gani.models` read their files
through it, and so do `gani.checkpoints` (which builds those networks) and `gani.editing`,
so no import runs back up from the models to the checkpoint registry.

`.pt/.pth/.tar` files go through `torch.load(weights_only=True)` (tensors, containers and
a short allow-list of plain types such as argparse.Namespace, which official training
checkpoints carry); `.safetensors` through safetensors. Anything else is refused with an
error that names the file.
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import torch

_SAFE_EXTRA_GLOBALS = [argparse.Namespace]


class CheckpointLoadError(RuntimeError):
    """A checkpoint file exists but cannot be read safely (corrupt, truncated, malicious)."""


def _unpickler_reason(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unpickler error" in ln]
    return lines[0] if lines else type(exc).__name__


def _names_a_global(exc: Exception) -> bool:
    """True when weights_only refused a Python global (a class or function to import and
    call: what a malicious pickle needs), False for a malformed byte stream."""
    msg = str(exc)
    return "GLOBAL" in msg or "global" in msg.lower().split("weightsunpickler error", 1)[-1]


def _unpickler_detail(exc: Exception) -> str:
    tail = str(exc).split("WeightsUnpickler error:", 1)[-1]
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def load_torch_file(path: str | Path) -> Any:
    """torch.load with map_location='cpu' and weights_only=True; clear errors, no code run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        with torch.serialization.safe_globals(_SAFE_EXTRA_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _names_a_global(exc):  # garbage bytes (bad opcode, bad load key): not code
            raise CheckpointLoadError(
                f"{path}: cannot read checkpoint (corrupt or truncated?): "
                f"{_unpickler_detail(exc)}") from None
        raise CheckpointLoadError(
            f"{path}: refused to load: the file contains Python objects other than tensors and "
            f"plain containers (weights_only loading). It may be malicious or from an "
            f"incompatible exporter. Details: {_unpickler_reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes fail anywhere in the unpickler
        # (EOFError, RuntimeError, IndexError "pop from empty list", KeyError ...)
        first = (str(exc).splitlines() or [""])[0] or type(exc).__name__
        raise CheckpointLoadError(
            f"{path}: cannot read checkpoint (corrupt or truncated?): {first}") from None


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors file into a dict of CPU tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointLoadError(f"{path}: cannot read safetensors file: {exc}") from None


def load_checkpoint(path: str | Path) -> Any:
    """Dispatch on the extension: safetensors or weights-only torch."""
    if str(path).endswith(".safetensors"):
        return load_safetensors(path)
    return load_torch_file(path)
