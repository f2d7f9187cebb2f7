"""Checkpoints: the registry of official files, safe loading, verification, import."""
from gani.safeload import CheckpointLoadError, load_checkpoint, load_safetensors, load_torch_file

from .registry import REGISTRY, CheckpointSpec, get_spec
from .store import (CheckpointCorruptError, CheckpointMissingError, check, check_all,
                    import_files, locate, require, sha256_file)

__all__ = ["REGISTRY", "CheckpointSpec", "CheckpointLoadError", "CheckpointMissingError",
           "CheckpointCorruptError", "check", "check_all", "get_spec", "import_files",
           "load_checkpoint", "load_safetensors", "load_torch_file", "locate", "require",
           "sha256_file"]
