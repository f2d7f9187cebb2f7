"""Edit directions with ground truth on the testbed generator, and their measured effect.

- InterFaceGAN-style: sample w = G.mapping(z), render G(w), label the images with the
  attribute regressor, fit a ridge regression attribute ≈ a·w + b per attribute on W; the
  direction is a / ‖a‖ ([1, style_dim], applied to every W+ row, as the published smile/age
  files). The fit's R² on held-out samples says how linearly W encodes the attribute.
  (InterFaceGAN proper fits a linear SVM on the extremes; with continuous labels the
  regression normal is the same idea without thresholding.)
- GANSpace: ``gani.editing.compute_ganspace_pca`` (PCA of mapping outputs).

Measurement (``edit_effects``): render fresh samples before and after w + s·σ_d·d (σ_d = std
of w projected on d, so s is in standard deviations of the population along d), predict all
attributes with the regressor and report the mean change of each attribute per unit s, in
units of that attribute's std over the generated population. A specific edit has a large
entry for its target and small ones elsewhere; ``specificity`` = |Δ target| / mean |Δ others|.

Edits of inverted images (``gani.testbed.edits``, the demo and ``benchmarks/testbed/judge.py``): ``edit_deltas`` is the same
measurement per sample for any renderer (a tuned generator at an inverted latent), with σ_d
given (``direction_sigma`` of a population); ``edit_preservation`` compares one image's Δ with
the reference Δ on generated samples: target ratio, leakage, deviation.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .attributes import AttributeRegressor, r2_scores


@torch.no_grad()
def sample_w(G, n: int, seed: int = 0, batch: int = 256) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    dev = next(G.parameters()).device
    out = []
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.style_dim, generator=gen)
        out.append(G.mapping(z.to(dev)).cpu())
    return torch.cat(out)


@torch.no_grad()
def render_w(G, w: torch.Tensor, batch: int = 128, noise_mode: str = "const") -> torch.Tensor:
    """W [n, D] or W+ [n, L, D] → images [n, 3, H, W] (CPU, clamped to [−1, 1])."""
    dev = next(G.parameters()).device
    out = []
    for i in range(0, w.shape[0], batch):
        wb = w[i:i + batch].to(dev)
        if wb.dim() == 2:
            wb = wb.unsqueeze(1).repeat(1, G.n_latent, 1)
        out.append(G.synthesis(wb, noise_mode=noise_mode).clamp(-1, 1).cpu())
    return torch.cat(out)


def fit_interfacegan(w: torch.Tensor, attrs: torch.Tensor, names: Sequence[str],
                     ridge: float = 1e-2, holdout: float = 0.2) -> dict:
    """Ridge regression attribute ~ w per attribute. Returns {name: {"direction": [1, D],
    "r2_holdout": float}}; w is standardised internally, the direction is mapped back to W
    (a / ‖a‖ in W coordinates) so it applies as w + s·d."""
    w = w.double()
    y = attrs.double()
    n = w.shape[0]
    n_fit = int(round(n * (1 - holdout)))
    mu = w[:n_fit].mean(0)
    x = w - mu
    xf, yf = x[:n_fit], y[:n_fit] - y[:n_fit].mean(0)
    a = torch.linalg.solve(xf.T @ xf + ridge * n_fit * torch.eye(x.shape[1], dtype=x.dtype),
                           xf.T @ yf)                           # [D, A]
    pred = x[n_fit:] @ a + y[:n_fit].mean(0)
    r2 = r2_scores(pred, y[n_fit:])
    out = {}
    for j, name in enumerate(names):
        d = a[:, j] / a[:, j].norm().clamp_min(1e-12)
        out[name] = {"direction": d.float().view(1, -1), "r2_holdout": float(r2[j])}
    return out


@torch.no_grad()
def edit_effects(G, regressor: AttributeRegressor, w: torch.Tensor,
                 directions: dict[str, torch.Tensor], strength: float = 2.0,
                 attr_std: Optional[torch.Tensor] = None) -> dict:
    """Mean change of every predicted attribute when each direction is applied.

    directions: {name: [1, D] or [D] unit vectors in W}. The edit is w ± strength·σ_d·d
    (both signs, Δ = (pred(+) − pred(−)) / (2·strength), i.e. per 1 σ_d) on all W+ rows.
    Returns {"attributes": [...], "per_sigma": {name: {attr: Δ/attr_std}},
    "target_over_others": {...}} where attr_std defaults to the std of predictions on w.
    """
    names = list(regressor.attributes)
    base = regressor.predict(render_w(G, w))
    std = base.std(0).clamp_min(1e-6) if attr_std is None else attr_std
    table, spec = {}, {}
    for dname, d in directions.items():
        d = d.reshape(-1).float()
        d = d / d.norm()
        sigma = float((w @ d).std())
        plus = regressor.predict(render_w(G, w + strength * sigma * d))
        minus = regressor.predict(render_w(G, w - strength * sigma * d))
        delta = ((plus - minus).mean(0) / (2 * strength)) / std
        table[dname] = {a: round(float(v), 4) for a, v in zip(names, delta)}
        if dname in names:
            j = names.index(dname)
            others = torch.cat([delta[:j], delta[j + 1:]]).abs()
            spec[dname] = round(float(delta[j].abs() / others.mean().clamp_min(1e-6)), 2)
    return {"attributes": names, "strength_sigma": strength, "per_sigma": table,
            "target_over_mean_others": spec}


def ganspace_directions(G, n_samples: int = 5000, n_components: int = 8, seed: int = 0) -> dict:
    """PCA of the mapping outputs (gani.editing.compute_ganspace_pca): returns the PCA dict
    and {"pc{k}": [1, D]} directions."""
    from gani.editing import compute_ganspace_pca
    pca = compute_ganspace_pca(G, n_samples=n_samples, n_components=n_components, seed=seed)
    dirs = {f"pc{k}": pca["comp"][k].view(1, -1) for k in range(pca["comp"].shape[0])}
    return {"pca": pca, "directions": dirs}


def dominant_attribute(effects: dict) -> dict:
    """For each direction: the attribute it moves most (|Δ| per σ) and that |Δ|."""
    out = {}
    for d, row in effects["per_sigma"].items():
        a = max(row, key=lambda k: abs(row[k]))
        out[d] = {"attribute": a, "delta_per_sigma": row[a]}
    return out


# ---------------------------------------------------------------- edits of inverted images
def direction_sigma(w_population: torch.Tensor, direction: torch.Tensor) -> float:
    """σ_d: std of the population's W codes [n, D] projected on the unit direction d."""
    d = direction.reshape(-1).float()
    return float((w_population.float() @ (d / d.norm())).std())


@torch.no_grad()
def edit_deltas(regressor: AttributeRegressor, render_fn, w: torch.Tensor,
                directions: dict[str, torch.Tensor], sigmas: dict[str, float],
                strength: float = 1.5, attr_std: Optional[torch.Tensor] = None,
                batch: int = 16) -> dict[str, torch.Tensor]:
    """Per-sample attribute change of each edit, per σ_d (the measurement of ``edit_effects``
    for any renderer, e.g. a tuned generator).

    render_fn: latents [m, L, D] → images [m, 3, H, W] (in [−1, 1]; clamped here). w: W+
    codes [n, L, D] (repeat a W code over the L rows first). For each direction the edit is
    w ± strength·σ_d·d on every W+ row; Δ = (pred(+) − pred(−)) / (2·strength), divided by
    attr_std when given. Returns {name: [n, A]}. All edited latents are rendered in chunks of
    ``batch``, so many directions of one image cost few generator calls.
    """
    if w.dim() == 2:
        raise ValueError("w must be W+ [n, L, D]; repeat a W code over the layers first")
    names = list(directions)
    shifts = []
    for name in names:
        d = directions[name].reshape(-1).float()
        d = d / d.norm()
        s = strength * float(sigmas[name]) * d
        shifts += [s, -s]
    shifts = torch.stack(shifts).to(w)                        # [2K, D]
    n, K = w.shape[0], len(names)
    lat = (w.unsqueeze(1) + shifts.view(1, 2 * K, 1, -1)).reshape(n * 2 * K, *w.shape[1:])
    preds = []
    for i in range(0, lat.shape[0], batch):
        preds.append(regressor.predict(render_fn(lat[i:i + batch]).float().clamp(-1, 1).cpu()))
    p = torch.cat(preds).view(n, K, 2, -1)
    delta = (p[:, :, 0] - p[:, :, 1]) / (2 * strength)       # [n, K, A]
    if attr_std is not None:
        delta = delta / attr_std.to(delta)
    return {name: delta[:, k] for k, name in enumerate(names)}


def edit_preservation(delta: torch.Tensor, reference: torch.Tensor, target: int) -> dict:
    """Compare one edit's attribute change on an image (delta [A]) with the change the same
    edit makes on generated samples of the untuned generator (reference [A], same units).

    ratio: Δ_target / Δ_ref,target (1 = the edit moves its attribute as much as on samples);
    leakage: mean |Δ| of the other attributes; ref_leakage: the same for the reference;
    deviation: mean |Δ − Δ_ref| over the other attributes (side effects that differ from the
    reference's)."""
    delta, reference = delta.float().reshape(-1), reference.float().reshape(-1)
    others = torch.ones_like(delta, dtype=torch.bool)
    others[target] = False
    ref_t = float(reference[target])
    return {"ratio": float(delta[target]) / ref_t if ref_t != 0 else float("nan"),
            "leakage": float(delta[others].abs().mean()),
            "ref_leakage": float(reference[others].abs().mean()),
            "deviation": float((delta[others] - reference[others]).abs().mean())}
