"""compute_metrics with the project's real network classes (random weights, offline)."""
import numpy as np
import pytest
import torch
from PIL import Image

models = pytest.importorskip("gani.models")

from gani.metrics import (METRIC_KEYS, ResourceMeter, compute_metrics, id_similarity,  # noqa: E402
                          locality)


@pytest.fixture(scope="module")
def lpips_net():
    pytest.importorskip("lpips")
    from torchvision.models import alexnet

    torch.manual_seed(0)
    # a random AlexNet trunk stands in for the ImageNet file; the linear heads are the
    # real ones shipped in the lpips package
    return models.LPIPSAlex(alexnet(weights=None).state_dict())


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(1)
    return models.Generator(32, style_dim=32, n_mlp=2, channel_multiplier=1,
                            channel_max=16).eval()


def test_lpips_and_locality_with_the_real_modules(lpips_net, G):
    deltas = {name: 0.02 * torch.randn_like(conv.weight)
              for name, conv in G.modulated_convs().items()}
    l2v, lpv = locality(G, deltas, n=3, seed=0, lpips_net=lpips_net)
    assert l2v > 0 and lpv > 0
    assert locality(G, None, n=3, lpips_net=lpips_net) == (0.0, 0.0)
    with torch.no_grad():
        w = G.mapping(torch.randn(1, 32)).unsqueeze(1).repeat(1, G.n_latent, 1)
        recon = G.synthesis(w, weight_deltas=deltas)
    rng = np.random.default_rng(0)
    target = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with ResourceMeter("cpu") as meter:
        m = compute_metrics(target, recon, lpips_net=lpips_net, G=G, weight_deltas=deltas,
                            locality_n=2, meter=meter)
    assert tuple(m) == METRIC_KEYS
    assert m["lpips"] > 0 and m["locality_lpips"] > 0 and m["id"] is None
    same = compute_metrics(target, target, lpips_net=lpips_net)
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_id_with_the_ir101_class():
    torch.manual_seed(2)
    ir = models.IR101(width_div=16).eval()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    y = torch.rand(1, 3, 256, 256) * 2 - 1
    s = id_similarity(ir, torch.cat([x, x]), torch.cat([x, y]), protocol="crop")
    assert float(s[0]) == pytest.approx(1.0, abs=1e-4) and float(s[1]) < 1.0
    # no face in noise under the default (template) protocol: None, not a number
    assert compute_metrics(x, x, id_net=ir)["id"] is None
