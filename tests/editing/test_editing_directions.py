"""InterFaceGAN and GANSpace on the real published files and on a computed PCA."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gani.editing import (CARS_GANSPACE_EDITS, FFHQ_GANSPACE_EDITS, GANSpaceDirection,
                          adapt_direction, apply_ganspace, apply_interfacegan,
                          compute_ganspace_pca, edits_for_domain, ganspace_coordinate,
                          load_direction, load_pca, named_edits, validate_pca)

# Tests may read the shared assets; the product never does.
ASSETS = Path(__file__).resolve().parents[3] / "shared" / "assets" / "editings"
SHA256 = {
    "age.pt": "50074516b1629707d89b5e43d6b8abd1792212fa3b961a87a11323d6a5222ae0",
    "smile.pt": "817a7e732b59dee9eba862bec8bd7e8373568443bc9f9731a21cf9b0356f0653",
    "pose.pt": "736e0eacc8488fa0b020a2e7bd256b957284c364191dfea693705e5d06d43e7d",
    "ffhq_pca.pt": "4d7f9df1c96180d9026b9cb8d04753579fbf385f321a9d0e263641601c5e5d36",
    "cars_pca.pt": "a5c3bae61ecd85de077fbbf103f5f30cf4b7676fe23a8508166eaf2ce73c8392",
}


def asset(name):
    p = ASSETS / name
    if not p.is_file():
        pytest.skip(f"shared asset {p} not available")
    assert hashlib.sha256(p.read_bytes()).hexdigest() == SHA256[name]
    return p


@pytest.mark.parametrize("name", ["age.pt", "smile.pt"])
def test_interfacegan_vector_files(name):
    d = load_direction(asset(name))
    assert d.shape == (1, 512) and d.dtype == torch.float32 and d.device.type == "cpu"
    assert float(d.norm()) == pytest.approx(1.0, abs=1e-4)


def test_pose_file_saved_on_cuda_loads_on_cpu():
    d = load_direction(asset("pose.pt"))
    assert d.shape == (1, 18, 512) and d.device.type == "cpu"
    assert torch.allclose(d.norm(dim=-1), torch.ones(1, 18), atol=1e-4)
    assert torch.allclose(d[0], d[0, :1].expand(18, 512))  # the same vector on every row
    # a 256-px generator (14 layers) takes the first 14 rows; other widths are refused
    assert adapt_direction(d, 14, 512).shape == (1, 14, 512)
    with pytest.raises(ValueError, match="style_dim"):
        adapt_direction(d, 14, 256)
    with pytest.raises(ValueError, match="n_latent"):
        adapt_direction(d[:, :10], 14, 512)


def test_interfacegan_adds_factor_times_direction_to_every_row():
    torch.manual_seed(0)
    w = torch.randn(2, 14, 512)
    d = torch.nn.functional.normalize(torch.randn(1, 512), dim=1)
    out = apply_interfacegan(w, d, -3.0)
    assert torch.allclose(out - w, -3.0 * d.expand(2, 14, 512), atol=1e-6)
    # [N, D] input, per-layer direction
    dl = torch.randn(1, 18, 512)
    out2 = apply_interfacegan(w[0], dl, 2.0)
    assert out2.shape == (14, 512)
    assert torch.allclose(out2 - w[0], 2.0 * dl[0, :14], atol=1e-5)
    assert torch.equal(apply_interfacegan(w, d, 0.0), w)
    with pytest.raises(ValueError):
        apply_interfacegan(torch.randn(1, 14, 256), d, 1.0)


@pytest.mark.parametrize("name", ["ffhq_pca.pt", "cars_pca.pt"])
def test_pca_files(name):
    pca = load_pca(asset(name))
    assert pca["mean"].shape == (1, 512)
    assert pca["comp"].shape == (80, 1, 512)
    assert pca["std"].shape == (80,)
    norms = pca["comp"].squeeze(1).norm(dim=1)
    # not unit norm (docs/protocols.md#ganspace)
    assert 0.8 < float(norms.min()) and float(norms.max()) < 1.15


def test_ganspace_formula_on_the_real_ffhq_file():
    pca = load_pca(asset("ffhq_pca.pt"))
    torch.manual_seed(1)
    w = pca["mean"].unsqueeze(1).repeat(1, 18, 1) + 0.5 * torch.randn(1, 18, 512)
    idx, start, end, strength = FFHQ_GANSPACE_EDITS["white_hair"]   # (57, 7, 10, -24)
    out = apply_ganspace(w, pca, (idx, start, end, strength))
    # hand computation in float64
    L = w[0].double().numpy()
    mean = pca["mean"].double().numpy()[0]
    c = pca["comp"][idx, 0].double().numpy()
    s = float(pca["std"][idx])
    coord = float(np.dot(L[0] - mean, c) / s)
    delta = (strength - coord) * c * s
    expect = L.copy()
    expect[start:end] += delta
    np.testing.assert_allclose(out[0].double().numpy(), expect, atol=1e-4)
    changed = (out - w).abs().sum(-1)[0] > 0
    assert changed.tolist() == [start <= i < end for i in range(18)]
    assert float(ganspace_coordinate(w, pca, idx)[0]) == pytest.approx(coord, rel=1e-5)


def test_ganspace_lands_on_target_with_unit_components(tiny_g):
    pca = compute_ganspace_pca(tiny_g, n_samples=256, n_components=5, seed=3)
    w = tiny_g.mapping(torch.randn(3, 8)).unsqueeze(1).repeat(1, 6, 1).detach()
    out = apply_ganspace(w, pca, GANSpaceDirection(1, 0, 3, 2.5))
    assert torch.allclose(ganspace_coordinate(out, pca, 1), torch.full((3,), 2.5), atol=1e-4)
    assert torch.equal(out[:, 3:], w[:, 3:])
    # strength is absolute: applying the same edit again changes nothing
    again = apply_ganspace(out, pca, GANSpaceDirection(1, 0, 3, 2.5))
    assert torch.allclose(again, out, atol=1e-5)


def test_ganspace_adapts_to_fewer_layers_and_checks_shapes(tiny_g):
    pca = compute_ganspace_pca(tiny_g, n_samples=64, n_components=4, seed=0)
    w = torch.randn(1, 6, 8)
    out = apply_ganspace(w, pca, (0, 4, 11, 1.0))       # end clipped to 6
    assert torch.equal(out[:, :4], w[:, :4]) and not torch.equal(out[:, 4:], w[:, 4:])
    with pytest.warns(UserWarning):
        assert torch.equal(apply_ganspace(w, pca, (0, 10, 11, 1.0)), w)
    with pytest.raises(ValueError, match="component"):
        apply_ganspace(w, pca, (4, 0, 1, 1.0))
    with pytest.raises(ValueError, match="style_dim"):
        apply_ganspace(torch.randn(1, 6, 16), pca, (0, 0, 1, 1.0))
    with pytest.raises(ValueError):
        validate_pca({"mean": torch.zeros(1, 8), "comp": torch.zeros(3, 1, 8)})


def test_published_edit_lists():
    assert tuple(FFHQ_GANSPACE_EDITS["eye_openness"]) == (54, 7, 8, 20)
    assert tuple(FFHQ_GANSPACE_EDITS["smile"]) == (46, 4, 5, -20)
    assert tuple(FFHQ_GANSPACE_EDITS["trimmed_beard"]) == (58, 7, 9, 20)
    assert tuple(FFHQ_GANSPACE_EDITS["lipstick"]) == (34, 10, 11, 20)
    assert tuple(CARS_GANSPACE_EDITS["viewpoint_1"]) == (0, 0, 5, 2)
    assert tuple(CARS_GANSPACE_EDITS["cube"]) == (16, 3, 6, 25)
    assert tuple(CARS_GANSPACE_EDITS["grass"]) == (41, 9, 11, -18)
    assert edits_for_domain("church") == {}
    assert named_edits({"a": (1, 2, 3, 4)})["a"] == GANSpaceDirection(1, 2, 3, 4.0)


def test_compute_pca_shapes_orthonormal_and_seeded(tiny_g):
    pca = compute_ganspace_pca(tiny_g, n_samples=300, n_components=6, seed=7, batch_size=64)
    assert pca["mean"].shape == (1, 8) and pca["comp"].shape == (6, 1, 8)
    assert pca["std"].shape == (6,)
    c = pca["comp"].squeeze(1)
    assert torch.allclose(c @ c.T, torch.eye(6), atol=1e-5)
    assert torch.all(pca["std"][:-1] >= pca["std"][1:])
    # std is the spread of the samples along each component
    gen = torch.Generator().manual_seed(7)
    zs = torch.cat([torch.randn(min(64, 300 - i), 8, generator=gen) for i in range(0, 300, 64)])
    w = tiny_g.mapping(zs).detach()
    proj = (w - pca["mean"]) @ c.T
    assert torch.allclose(proj.std(0), pca["std"], rtol=1e-4)
    again = compute_ganspace_pca(tiny_g, n_samples=300, n_components=6, seed=7, batch_size=64)
    assert all(torch.equal(pca[k], again[k]) for k in pca)
    assert compute_ganspace_pca(tiny_g, n_samples=5, n_components=80)["comp"].shape[0] == 5
