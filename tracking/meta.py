"""What a parent run records about where its results came from: every setting as a flat
MLflow param, the git commit and the DVC data version."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

from gani.redact import redact_uri


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'tune.steps': '30', ...}: nested settings as MLflow params (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            out[name] = text[:6000]
    return out


def settings_params(settings) -> dict[str, str]:
    """The settings as params, `tracking.uri` redacted (a second guard: the settings
    already refuse credentials in it)."""
    params = flatten(settings.model_dump(mode="json"))
    if "tracking.uri" in params:
        params["tracking.uri"] = redact_uri(params["tracking.uri"])
    return params


def git_commit(cwd: str | os.PathLike = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10)
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10)
        return sha + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dvc_data_version(dvc_file: str | os.PathLike = "data.dvc") -> str:
    """The md5 of the DVC-tracked data/ recorded in data.dvc ('none' when absent)."""
    p = Path(dvc_file)
    if not p.is_file():
        return "none"
    import yaml

    try:
        data = yaml.safe_load(p.read_text()) or {}
        outs = data.get("outs") or [{}]
        return str(outs[0].get("md5") or "unknown")
    except (yaml.YAMLError, AttributeError, IndexError):
        return "unknown"


def method_lr(settings) -> float | None:
    """The learning rate of the tuning method that runs (None for e4e, which runs none): the
    step on the weights for PTI and GANI's optimizer reading, the modules' for reparam."""
    tune = settings.tune
    gani = tune.pti.lr if tune.gmm.reading == "optimizer" else tune.optimizer.lr
    return {"gani": gani, "pti": tune.pti.lr, "wplus_projection": tune.projection.lr,
            "w_projection": tune.projection.lr}.get(tune.method)


def child_params(settings, params_hash: str) -> dict[str, str]:
    """The params of an image's child run: what tells two images' results apart in MLflow's
    compare-runs and parallel-coordinates views (the parent has every setting)."""
    tune = settings.tune
    params = {"profile": settings.profile, "params_hash": params_hash,
              "domain": settings.domain, "tune.method": tune.method,
              "tune.steps": 0 if tune.method == "e4e" else tune.steps,
              "tune.lr": method_lr(settings), "tune.seed": tune.seed,
              "tune.precision": tune.precision, "encode.method": settings.encode.method,
              "models.generator": settings.models.generator.checkpoint,
              "models.generator.size": settings.models.generator.size,
              "models.encoder": settings.models.encoder.checkpoint}
    if tune.method == "gani":
        params.update({"tune.gmm.blocks": tune.gmm.blocks, "tune.gmm.reading": tune.gmm.reading,
                       "tune.gmm.sharing": tune.gmm.sharing})
    return {k: "" if v is None else str(v) for k, v in params.items()}
