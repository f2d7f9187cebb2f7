"""The public Generator API (docs/output-contract.md#python-api) and the per-sample weight
corrections."""
import pytest
import torch

from gani.models import Generator


def tiny(size=32, seed=0):
    torch.manual_seed(seed)
    G = Generator(size, style_dim=64, n_mlp=2, channel_max=32).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.2)
    return G


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_and_attributes(size):
    G = tiny(size)
    log = size.bit_length() - 1
    assert (G.size, G.style_dim, G.log_size) == (size, 64, log)
    assert G.n_latent == 2 * log - 2 and G.num_layers == 2 * (log - 2) + 1
    assert G.channels[size] == 32 and list(G.channels)[0] == 4
    z = torch.randn(2, 64)
    with torch.no_grad():
        w = G.mapping(z)
        assert w.shape == (2, 64)
        img = G.synthesis(w.unsqueeze(1).repeat(1, G.n_latent, 1))
        assert img.shape == (2, 3, size, size) and torch.isfinite(img).all()
        torch.testing.assert_close(G.synthesis(w), img)  # [B, style_dim] is repeated
        torch.testing.assert_close(G(z), img)  # convenience forward maps z first
        torch.testing.assert_close(G([w], input_is_latent=True), img)


def test_bad_sizes_and_latents_rejected():
    for size in (16, 48, 2048):
        with pytest.raises(ValueError):
            Generator(size, style_dim=8, n_mlp=1, channel_max=8)
    G = tiny(32)
    with pytest.raises(ValueError):
        G.synthesis(torch.randn(1, G.n_latent + 1, 64))


def test_truncation_mixing_and_mean_latent():
    G = tiny(32)
    avg = G.mean_latent(256)
    assert avg.shape == (1, 64)
    z = torch.randn(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(G(z, truncation=0.0, truncation_latent=avg),
                                   G.synthesis(avg.repeat(2, 1)))
        w1, w2 = G.mapping(z), G.mapping(torch.randn(2, 64))
        mixed = G([w1, w2], input_is_latent=True, inject_index=3)
        wp = torch.cat([w1.unsqueeze(1).repeat(1, 3, 1),
                        w2.unsqueeze(1).repeat(1, G.n_latent - 3, 1)], 1)
        torch.testing.assert_close(mixed, G.synthesis(wp))
    with pytest.raises(ValueError):
        G(z, truncation=0.5)


def test_modulated_convs_order_and_names():
    G = tiny(64)
    names = list(G.modulated_convs())
    assert names[:5] == ["conv1", "to_rgb1", "convs.0", "convs.1", "to_rgbs.0"]
    assert names[-3:] == ["convs.6", "convs.7", "to_rgbs.3"]
    assert len(names) == 2 + 3 * (G.log_size - 2)
    sd = G.state_dict()
    for name, m in G.modulated_convs().items():
        assert m.weight.dim() == 5 and m.weight.shape[0] == 1
        assert sd[f"{name}.conv.weight"].data_ptr() == m.weight.data_ptr()


def _deltas(G, batch, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    return {n: scale * torch.randn(batch, *m.weight.shape[1:], generator=g)
            for n, m in G.modulated_convs().items()}


def test_batched_per_sample_deltas_equal_single_passes():
    G = tiny(32)
    w = torch.randn(3, G.n_latent, 64)
    deltas = _deltas(G, 3)
    with torch.no_grad():
        batched = G.synthesis(w, weight_deltas=deltas)
        singles = torch.cat([G.synthesis(w[i:i + 1],
                                         weight_deltas={n: d[i:i + 1] for n, d in deltas.items()})
                             for i in range(3)])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-5)
    # and each single pass equals a generator whose stored weights were edited
    G2 = tiny(32)
    with torch.no_grad():
        for n, m in G2.modulated_convs().items():
            m.weight += deltas[n][1:2]
        torch.testing.assert_close(G2.synthesis(w[1:2]), singles[1:2], atol=1e-5, rtol=1e-5)


def test_zero_and_shared_deltas():
    G = tiny(32)
    w = torch.randn(3, G.n_latent, 64)
    with torch.no_grad():
        plain = G.synthesis(w)
        zero = {n: torch.zeros(3, *m.weight.shape[1:]) for n, m in G.modulated_convs().items()}
        assert torch.equal(G.synthesis(w, weight_deltas=zero), plain)
        assert torch.equal(G.synthesis(w, weight_deltas={}), plain)
        shared = _deltas(G, 1)
        a = G.synthesis(w, weight_deltas=shared)  # [1, out, in, k, k]
        b = G.synthesis(w, weight_deltas={n: d[0] for n, d in shared.items()})  # [out, in, k, k]
        c = G.synthesis(w, weight_deltas={n: d.repeat(3, 1, 1, 1, 1) for n, d in shared.items()})
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a, plain)


def test_deltas_are_differentiable_and_validated():
    G = tiny(32)
    w = torch.randn(2, G.n_latent, 64)
    d = torch.zeros(2, *G.convs[3].conv.weight.shape[1:], requires_grad=True)
    img = G.synthesis(w, weight_deltas={"convs.3": d})
    (img[0] ** 2).mean().backward()
    assert d.grad is not None and d.grad[0].abs().sum() > 0
    assert d.grad[1].abs().sum() == 0  # sample 1's image does not depend on sample 0's delta
    # the gradient w.r.t. a zero delta equals the gradient w.r.t. the stored weight
    G.zero_grad()
    (G.synthesis(w[:1]) ** 2).mean().backward()
    torch.testing.assert_close(d.grad[0], G.convs[3].conv.weight.grad[0], atol=1e-6, rtol=1e-4)
    with pytest.raises(KeyError):
        G.synthesis(w, weight_deltas={"convs.99": d})
    with pytest.raises(ValueError):
        G.synthesis(w, weight_deltas={"conv1": torch.zeros(3, *G.conv1.conv.weight.shape[1:])})
    with pytest.raises(ValueError):
        G.synthesis(w, weight_deltas={"to_rgb1": d})  # wrong layer shape
