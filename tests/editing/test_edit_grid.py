"""render_edit_grid with the original and a 'tuned' (weight deltas) generator."""
import numpy as np
import pytest
import torch

from gani.editing import (Edit, compute_ganspace_pca, ganspace_edit, interfacegan_edit,
                          render_edit_grid)
from gani.metrics import tensor2im


def assert_same_render(a, b):
    """Equal up to one 8-bit level: the grid renders its tiles as one batch, the reference
    one image at a time, and the two sum in different orders (a pixel on a .5 boundary may
    round either way). An edit or a weight delta changes pixels by far more than that."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()} levels"


@pytest.fixture
def wplus(tiny_g):
    z = torch.randn(1, tiny_g.style_dim, generator=torch.Generator().manual_seed(5))
    return tiny_g.mapping(z).unsqueeze(1).repeat(1, tiny_g.n_latent, 1).detach()


def test_grid_size_and_unedited_column(tiny_g, wplus):
    torch.manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(1, 8), dim=1)
    pca = compute_ganspace_pca(tiny_g, n_samples=128, n_components=4, seed=0)
    edits = [interfacegan_edit("age", d), ganspace_edit("pc1", pca, (1, 0, 3, 2.0)),
             ("scaled", lambda w, s: w * (1 + 0.1 * s))]
    grid = render_edit_grid(tiny_g, wplus, edits, [-2, 2, 4], tile_size=64)
    # 0 is inserted: columns -2, 0, 2, 4
    assert grid.size == (4 * 64, 3 * 64)
    grid32 = render_edit_grid(tiny_g, wplus, edits, [-2, 0, 2], labels=False,
                              mark_color=(0, 255, 0))
    assert grid32.size == (3 * 32, 3 * 32)
    arr = np.asarray(grid32)
    plain = np.asarray(tensor2im(tiny_g.synthesis(wplus)[0]))
    for r in range(3):
        tile = arr[r * 32:(r + 1) * 32, 32:64]
        assert_same_render(tile[2:-2, 2:-2], plain[2:-2, 2:-2])              # unedited
        assert tuple(tile[0, 5]) == (0, 255, 0)                               # marked
        assert not np.array_equal(arr[r * 32:(r + 1) * 32, 64:96], plain)     # edited
    # row 0 (InterFaceGAN) at +2 equals rendering w + 2d directly
    direct = np.asarray(tensor2im(tiny_g.synthesis(wplus + 2 * d)[0]))
    assert_same_render(arr[:32, 64:96], direct)


def test_grid_with_weight_deltas_and_cars_crop(tiny_g, wplus):
    torch.manual_seed(1)
    d = torch.randn(1, 8)
    deltas = {"synth": 0.05 * torch.randn_like(tiny_g.synth)}
    a = np.asarray(render_edit_grid(tiny_g, wplus, {"d": d}, [0, 1], labels=False))
    b = np.asarray(render_edit_grid(tiny_g, wplus, {"d": d}, [0, 1], weight_deltas=deltas,
                                    labels=False))
    assert a.shape == b.shape == (32, 64, 3) and not np.array_equal(a, b)
    tuned = np.asarray(tensor2im(tiny_g.synthesis(wplus, weight_deltas=deltas)[0]))
    assert np.abs(a.astype(int) - b.astype(int)).max() > 8  # the deltas show
    assert_same_render(b[4:-4, 4:28], tuned[4:-4, 4:28])
    cars = render_edit_grid(tiny_g, wplus, [Edit("d", lambda w, s: w + s * d)], [1],
                            domain="cars", tile_size=64)
    assert cars.size == (2 * 64, 48)  # content rows 4:28 of 32 -> 24x32 -> 48x64 tiles


def test_grid_errors(tiny_g, wplus):
    with pytest.raises(ValueError):
        render_edit_grid(tiny_g, wplus, [], [1])
    with pytest.raises(TypeError):
        render_edit_grid(tiny_g, wplus, [("x", (1, 0, 2, 3.0))], [1])
    with pytest.raises(ValueError):
        render_edit_grid(tiny_g, torch.randn(2, 6, 8), {"d": torch.randn(1, 8)}, [1])
