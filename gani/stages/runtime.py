"""The networks a run needs, built once per process and shared by every stage call.

`get_runtime(settings, data_dir)` returns the same `Runtime` for the same model settings,
so a worker that processes hundreds of images builds G, E, the loss networks and the
GANSpace PCA once. Lazy attributes are built under a lock (tasks run on threads). Tuning
holds `tune_lock`: one process tunes one batch at a time on its device (across processes
and machines, the orchestrator's GPU slots do the same job).
"""
from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import torch

from gani.config import Settings, settings_hash

_RUNTIMES: dict[str, "Runtime"] = {}
_RUNTIMES_LOCK = threading.Lock()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("orchestration.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


@contextmanager
def cpu_threads(settings: Settings):
    """On CPU, give torch cores / max_concurrency intra-op threads while the block runs.

    Several images are processed at once (orchestration.max_concurrency); letting each use
    every core oversubscribes the machine. Measured on 2 busy cores: 10 GANI steps on two
    64-px demo images took 26-33 s with 2 threads and 9-11 s with 1. On CUDA nothing changes.
    """
    if resolve_device(settings.orchestration.device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    want = max(1, (os.cpu_count() or 1) // settings.orchestration.max_concurrency)
    torch.set_num_threads(min(before, want))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Runtime:
    def __init__(self, settings: Settings, data_dir: str | Path = "data"):
        self.settings = settings
        self.data_dir = str(data_dir)
        self.device = resolve_device(settings.orchestration.device)
        self.tune_lock = threading.Lock()
        self._lock = threading.RLock()
        self._cache: dict[str, Any] = {}

    def _get(self, name: str, build):
        with self._lock:
            if name not in self._cache:
                self._cache[name] = build()
            return self._cache[name]

    # ------------------------------------------------------------------ networks
    def _build_generator(self):
        from gani.checkpoints.build import build_generator

        G, latent_avg = build_generator(self.settings.models, self.data_dir,
                                        self.settings.profile)
        G = G.to(self.device).eval()
        G.requires_grad_(False)
        return G, latent_avg.to(self.device)

    @property
    def G(self):
        return self._get("G", self._build_generator)[0]

    @property
    def latent_avg(self) -> torch.Tensor:
        return self._get("G", self._build_generator)[1]

    def _build_encoder(self):
        from gani.checkpoints.build import build_encoder

        E, avg = build_encoder(self.settings.models, self.G, self.data_dir,
                               self.settings.profile)
        if E is None:
            return None, None
        E = E.to(self.device).eval()
        E.requires_grad_(False)
        return E, avg.to(self.device)

    @property
    def encoder(self):
        return self._get("E", self._build_encoder)[0]

    @property
    def encoder_latent_avg(self) -> Optional[torch.Tensor]:
        return self._get("E", self._build_encoder)[1]

    def _build_nets(self):
        from gani.checkpoints.build import build_similarity_nets

        nets = build_similarity_nets(self.settings.models, self.data_dir, self.settings.profile)
        for attr in ("lpips", "identity", "parser"):
            net = getattr(nets, attr, None)
            if net is not None:
                setattr(nets, attr, net.to(self.device))
        return nets

    @property
    def nets(self):
        return self._get("nets", self._build_nets)

    def _build_loss(self):
        from gani.losses import SimilarityLoss

        return SimilarityLoss.from_nets(self.settings.tune.loss, self.nets)

    @property
    def loss(self):
        return self._get("loss", self._build_loss)

    def _build_pca(self):
        from gani.editing.ganspace import compute_ganspace_pca, load_pca

        edit = self.settings.edit
        if edit.ganspace_file:
            return load_pca(edit.ganspace_file)
        return compute_ganspace_pca(self.G, n_samples=edit.pca_samples, seed=0)

    @property
    def pca(self):
        return self._get("pca", self._build_pca)

    def _build_edits(self):
        from gani.editing.grid import ganspace_edit, interfacegan_edit

        edit = self.settings.edit
        edits = []
        for e in edit.interfacegan:
            d = self.direction(e).to(self.device)
            if e.unit == "sigma":  # factors in σ_d: w + s·σ_d·d
                d = d * self.direction_sigma(e.name, d)
            edits.append(interfacegan_edit(e.name, d))
        if edit.ganspace:
            check_ganspace_edits(self.settings, self.pca, self.G.n_latent)
            pca = {k: v.to(self.device) if hasattr(v, "to") else v
                   for k, v in self.pca.items()}
            for e in edit.ganspace:
                edits.append(ganspace_edit(e.name, pca, e))
        return edits

    @property
    def edits(self) -> list:
        return self._get("edits", self._build_edits)

    # ------------------------------------------------------------------ edit measurement
    def direction(self, e) -> torch.Tensor:
        """An InterFaceGAN edit's direction [1, D] (or [L, D]) from its file or checkpoint."""
        from gani.editing.interfacegan import load_direction

        if e.file is not None:
            return load_direction(e.file)
        from gani.checkpoints.store import require_verified
        from gani.testbed.load import load_directions

        dirs = self._get(f"directions:{e.checkpoint}", lambda: load_directions(
            require_verified(e.checkpoint, self.data_dir, self.settings.profile)))
        key = e.key or e.name
        if key not in dirs:
            raise KeyError(f"edit {e.name!r}: {e.checkpoint} has no direction {key!r} "
                           f"(it has {', '.join(sorted(dirs))})")
        return dirs[key]

    def _population_w(self) -> torch.Tensor:
        from gani.testbed.directions import sample_w

        return sample_w(self.G, 2000, seed=2).cpu()

    def direction_sigma(self, name: str, d: torch.Tensor) -> float:
        """σ_d: the std of 2 000 generated W codes (seed 2) along the unit direction d."""
        from gani.testbed.directions import direction_sigma

        w = self._get("population_w", self._population_w)
        return direction_sigma(w, d.reshape(-1).cpu())

    def _build_regressor(self):
        edit = self.settings.edit
        if not edit.regressor:
            return None
        from gani.checkpoints.build import _refit
        from gani.checkpoints.store import require_verified
        from gani.testbed.attributes import load_regressor

        path = require_verified(edit.regressor, self.data_dir, self.settings.profile)
        return _refit(path, "attribute regressor", lambda: load_regressor(path))

    @property
    def regressor(self):
        """The attribute regressor of `edit.regressor` (CPU, eval), or None."""
        return self._get("regressor", self._build_regressor)

    def _build_edit_context(self):
        """Directions of the InterFaceGAN edits that name an attribute the regressor reads,
        their σ_d and reference effect on `edit.reference_samples` generated samples."""
        reg = self.regressor
        if reg is None:
            return None
        from gani.testbed.edits import EditContext

        edit = self.settings.edit
        ifg = {}
        for e in edit.interfacegan:
            attr = e.key or e.name
            if attr in reg.attributes:
                ifg[attr] = self.direction(e).reshape(-1).float().cpu()
        if not ifg:
            return None
        if edit.reference:
            from gani.checkpoints.build import _refit
            from gani.checkpoints.store import require_verified
            from gani.safeload import load_torch_file
            from gani.testbed.edits import context_from_record

            path = require_verified(edit.reference, self.data_dir, self.settings.profile)
            ctx = _refit(path, "edit reference", lambda: context_from_record(
                reg, load_torch_file(path), ifg))
            if abs(ctx.strength - edit.measure_strength) > 1e-9:
                raise ValueError(f"edit.reference {edit.reference} was measured at "
                                 f"±{ctx.strength:g} σ_d but edit.measure_strength is "
                                 f"{edit.measure_strength:g}")
            return ctx
        G = self.G
        cpu_G = G if self.device.type == "cpu" else None
        if cpu_G is None:
            import copy

            cpu_G = copy.deepcopy(G).cpu()
        empty = {"comp": torch.zeros(0, 1, G.style_dim)}
        return EditContext(cpu_G, reg, ifg, empty, 0, edit.measure_strength, 2000,
                           edit.reference_samples, min_ref_effect=0.15, min_consistency=0.8)

    @property
    def edit_context(self):
        return self._get("edit_context", self._build_edit_context)


def check_ganspace_edits(settings: Settings, pca: dict, n_latent: int) -> None:
    """Every edit.ganspace entry fits the PCA and the generator (ConfigError otherwise):
    a component past the PCA's count or a start past the last W+ layer would fail or do
    nothing on every image, so the run stops here, before any image."""
    from gani.config import ConfigError

    k = int(pca["comp"].shape[0])
    where = settings.edit.ganspace_file or (
        f"computed from the generator: min(80, edit.pca_samples, style_dim "
        f"{settings.models.generator.style_dim})")
    for i, e in enumerate(settings.edit.ganspace):
        if e.component >= k:
            raise ConfigError(f"edit.ganspace.{i} ({e.name}): component {e.component} is out of "
                              f"range: the GANSpace PCA has {k} components (0..{k - 1}; {where})")
        if e.start >= n_latent:
            raise ConfigError(f"edit.ganspace.{i} ({e.name}): start {e.start} is past the last "
                              f"W+ layer ({n_latent} layers for a "
                              f"{settings.models.generator.size}-px generator)")


def runtime_key(settings: Settings, data_dir: str | Path) -> str:
    return json.dumps([settings_hash(settings, ("domain", "models", "tune", "edit",
                                                 "orchestration")), str(data_dir)])


def get_runtime(settings: Settings, data_dir: str | Path = "data") -> Runtime:
    key = runtime_key(settings, data_dir)
    with _RUNTIMES_LOCK:
        rt = _RUNTIMES.get(key)
        if rt is None:
            rt = _RUNTIMES[key] = Runtime(settings, data_dir)
        return rt


def clear_runtimes() -> None:
    with _RUNTIMES_LOCK:
        _RUNTIMES.clear()
