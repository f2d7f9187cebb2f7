"""StyleGAN2 numerics (docs/checkpoints.md#layer-numerics, #upfirdn2d), checked against
independent re-statements.

The reference functions below read the parameters by their official checkpoint keys and
follow the doc's formulas with per-sample loops and the "un-fused" formulation (modulate
the input, shared conv, demodulate the output), so a wrong scale, eps, pad, flip, W+ index
or noise slot in the batched grouped implementation shows up as a mismatch.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gani.models import Generator, upfirdn2d
from official_layouts import wplus_index_map

SQRT2 = math.sqrt(2)
K1 = torch.tensor([1.0, 3.0, 3.0, 1.0])
K2 = torch.outer(K1, K1) / 64  # normalised 4×4 FIR (sum 1)


# ----------------------------------------------------------------------------- upfirdn2d
def _pad_axis(a, p0, p1, axis):
    """Zero-pad before/after along one axis; negative values crop."""
    n = a.shape[axis]
    a = a.take(range(max(-p0, 0), n - max(-p1, 0)), axis=axis)
    shape = list(a.shape)
    parts = []
    if p0 > 0:
        shape[axis] = p0
        parts.append(np.zeros(shape))
    parts.append(a)
    if p1 > 0:
        shape[axis] = p1
        parts.append(np.zeros(shape))
    return np.concatenate(parts, axis=axis)


def upfirdn_numpy(x, k, up, down, pad):
    """docs/checkpoints.md#upfirdn2d by hand on one 2-D channel: zero insertion, pad, flipped-kernel
    correlation (a true convolution), keep every down-th sample."""
    h, w = x.shape
    u = np.zeros((h * up, w * up))
    u[::up, ::up] = x
    u = _pad_axis(_pad_axis(u, *pad, 0), *pad, 1)
    kf = k[::-1, ::-1]
    kh, kw = k.shape
    out = np.zeros((u.shape[0] - kh + 1, u.shape[1] - kw + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (u[i:i + kh, j:j + kw] * kf).sum()
    return out[::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (1, 1)),
                                         (2, 2, (0, 0)), (2, 1, (-1, 2)), (1, 1, (2, 2)),
                                         (2, 1, (1, 1))])
def test_upfirdn2d_matches_hand_computation(up, down, pad):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    k = torch.randn(3, 4, generator=g, dtype=torch.float64)  # asymmetric: the flip matters
    got = upfirdn2d(x, k, up=up, down=down, pad=pad)
    for n in range(2):
        for c in range(3):
            ref = upfirdn_numpy(x[n, c].numpy(), k.numpy(), up, down, pad)
            np.testing.assert_allclose(got[n, c].numpy(), ref, atol=1e-12)
    h, w = x.shape[-2:]
    assert got.shape[-2:] == ((h * up + sum(pad) - 3) // down + 1, (w * up + sum(pad) - 4) // down + 1)


def test_skip_upsample_of_constant_is_constant_inside():
    G = Generator(32, style_dim=8, n_mlp=1, channel_max=8)
    up = G.to_rgbs[0].upsample
    assert up.pad == (2, 1)
    out = up(torch.ones(1, 3, 8, 8))
    assert out.shape == (1, 3, 16, 16)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.ones(1, 3, 12, 12))
    assert G.convs[0].conv.blur.pad == (1, 1)


@pytest.mark.parametrize("pad", [(1, 1), (2, 2)])
def test_symmetric_pad_as_the_convs_own_padding_is_bit_identical(pad):
    """A symmetric pad goes to conv2d's zero padding instead of a padded copy: the blur after
    each up-conv (pad (1, 1)) gives the explicitly padded convolution's values and input
    gradient bit for bit."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 33, 33, generator=g, requires_grad=True)
    k = torch.randn(4, 4, generator=g)
    got = upfirdn2d(x, k, pad=pad)
    w = torch.flip(k, [0, 1]).view(1, 1, 4, 4).expand(8, 1, 4, 4)
    ref = F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), w, groups=8)
    assert torch.equal(got, ref)
    (g_got,) = torch.autograd.grad(got.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    assert torch.equal(g_got, g_ref)


# ----------------------------------------------------------------------------- references
def ref_mapping(sd, z, n_mlp, lr_mul=0.01):
    x = z * torch.rsqrt((z * z).mean(1, keepdim=True) + 1e-8)
    for j in range(1, n_mlp + 1):
        W, b = sd[f"style.{j}.weight"], sd[f"style.{j}.bias"]
        x = F.leaky_relu(x @ (W * lr_mul / math.sqrt(W.shape[1])).T + b * lr_mul, 0.2) * SQRT2
    return x


def ref_modconv(sd, p, x, w, demod, up, delta=None):
    """Per-sample un-fused modulated conv: modulate input, shared conv, demodulate output."""
    W = sd[f"{p}.weight"][0]
    mw, mb = sd[f"{p}.modulation.weight"], sd[f"{p}.modulation.bias"]
    s = w @ (mw / math.sqrt(mw.shape[1])).T + mb  # EqualLinear, lr_mul 1
    out_ch, in_ch, k, _ = W.shape
    scale = 1 / math.sqrt(in_ch * k * k)
    outs = []
    for b in range(x.shape[0]):
        Wb = W if delta is None else W + (delta[b] if delta.shape[0] > 1 else delta[0])
        Wb = scale * Wb
        xb = x[b:b + 1] * s[b].view(1, -1, 1, 1)
        if up:
            o = F.conv_transpose2d(xb, Wb.transpose(0, 1), stride=2)
            kb = K2 * 4
            o = F.conv2d(F.pad(o, [1, 1, 1, 1]), kb.expand(out_ch, 1, 4, 4), groups=out_ch)
        else:
            o = F.conv2d(xb, Wb, padding=k // 2)
        if demod:
            d = torch.rsqrt(((Wb * s[b].view(1, -1, 1, 1)) ** 2).sum([1, 2, 3]) + 1e-8)
            o = o * d.view(1, -1, 1, 1)
        outs.append(o)
    return torch.cat(outs)


def ref_skip_up(skip):
    b, c, h, w = skip.shape
    u = skip.new_zeros(b, c, 2 * h, 2 * w)
    u[..., ::2, ::2] = skip
    return F.conv2d(F.pad(u, [2, 1, 2, 1]), (K2 * 4).expand(c, 1, 4, 4), groups=c)


def ref_synthesis(sd, wplus, size, noises, deltas=None):
    deltas = deltas or {}
    log_size = int(math.log2(size))

    def styled(p, x, w, noise, up):
        x = ref_modconv(sd, f"{p}.conv", x, w, True, up, deltas.get(p))
        x = x + sd[f"{p}.noise.weight"] * noise
        return F.leaky_relu(x + sd[f"{p}.activate.bias"].view(1, -1, 1, 1), 0.2) * SQRT2

    def rgb(t, x, w):
        return ref_modconv(sd, f"{t}.conv", x, w, False, False, deltas.get(t)) + sd[f"{t}.bias"]

    x = sd["input.input"].repeat(wplus.shape[0], 1, 1, 1)
    x = styled("conv1", x, wplus[:, 0], noises[0], False)
    skip = rgb("to_rgb1", x, wplus[:, 1])
    for k in range(log_size - 2):
        x = styled(f"convs.{2 * k}", x, wplus[:, 2 * k + 1], noises[2 * k + 1], True)
        x = styled(f"convs.{2 * k + 1}", x, wplus[:, 2 * k + 2], noises[2 * k + 2], False)
        skip = rgb(f"to_rgbs.{k}", x, wplus[:, 2 * k + 3]) + ref_skip_up(skip)
    return skip


def tiny_generator(size=32, seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"style_dim": 32, "n_mlp": 2, "channel_max": 16, **kw}
    G = Generator(size, **kw).eval()
    with torch.no_grad():  # non-zero noise strengths, non-trivial biases
        for name, p in G.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias") or \
                    name.endswith(".bias") and p.dim() == 4:
                p.copy_(torch.randn_like(p) * 0.3)
    return G


# ----------------------------------------------------------------------------- tests
def test_mapping_matches_reference():
    G = tiny_generator()
    z = torch.randn(4, 32)
    torch.testing.assert_close(G.mapping(z), ref_mapping(G.state_dict(), z, 2), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("size", [32, 64])
def test_synthesis_matches_reference(size):
    G = tiny_generator(size)
    sd = G.state_dict()
    wplus = torch.randn(2, G.n_latent, 32)
    with torch.no_grad():
        got = G.synthesis(wplus, noise_mode="const")
        ref = ref_synthesis(sd, wplus, size, G.noise_buffers())
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_synthesis_with_per_sample_deltas_matches_reference():
    G = tiny_generator(32)
    sd = G.state_dict()
    wplus = torch.randn(3, G.n_latent, 32)
    g = torch.Generator().manual_seed(3)
    convs = G.modulated_convs()
    deltas = {n: 0.5 * torch.randn(3, *convs[n].weight.shape[1:], generator=g)
              for n in ("conv1", "to_rgb1", "convs.0", "convs.3", "to_rgbs.2")}
    deltas["convs.2"] = 0.5 * torch.randn(1, *convs["convs.2"].weight.shape[1:], generator=g)
    with torch.no_grad():
        got = G.synthesis(wplus, weight_deltas=deltas)
        ref = ref_synthesis(sd, wplus, 32, G.noise_buffers(), deltas)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_equalised_lr_scales_and_inits():
    G = Generator(32, style_dim=64, n_mlp=3, channel_max=16)
    for j in range(1, 4):
        assert G.style[j].scale == pytest.approx(0.01 / math.sqrt(64))
        assert G.style[j].lr_mul == 0.01
    for name, m in G.modulated_convs().items():
        k = m.weight.shape[-1]
        assert m.scale == pytest.approx(1 / math.sqrt(m.weight.shape[2] * k * k))
        assert m.modulation.scale == pytest.approx(1 / math.sqrt(64))
        assert torch.all(m.modulation.bias == 1)  # bias_init 1
        assert m.demodulate == (not name.startswith("to_rgb"))


def test_demodulated_weights_have_unit_norm_and_torgb_is_not_demodulated():
    G = tiny_generator(32)
    w = torch.randn(3, 32)
    delta = torch.randn(3, *G.convs[1].conv.weight.shape[1:])
    for name, m in G.modulated_convs().items():
        d = delta if name == "convs.1" else None
        W = m.modulated_weight(w, d)
        norms = W.pow(2).sum([2, 3, 4]).sqrt()
        if m.demodulate:
            torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)
        else:
            s = m.modulation(w)
            expect = m.weight / math.sqrt(m.weight.shape[2]) * s.view(3, 1, -1, 1, 1)
            torch.testing.assert_close(W, expect)


def _record_style_inputs(G):
    seen = {}
    hooks = [m.modulation.register_forward_hook(
        lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].detach().clone()))
        for name, m in G.modulated_convs().items()]
    return seen, hooks


@pytest.mark.parametrize("size", [32, 64])
def test_wplus_index_reaches_exactly_the_documented_layers(size):
    G = tiny_generator(size)
    expected = wplus_index_map(size)
    assert set(expected.values()) == set(range(G.n_latent))  # every W+ entry is read
    base = torch.randn(1, G.n_latent, 32)
    seen, hooks = _record_style_inputs(G)
    with torch.no_grad():
        G.synthesis(base)
        before = dict(seen)
        for i in range(G.n_latent):
            w = base.clone()
            w[:, i] += 1.0
            G.synthesis(w)
            changed = {n for n in before if not torch.equal(before[n], seen[n])}
            assert changed == {n for n, j in expected.items() if j == i}, i
    for h in hooks:
        h.remove()


def test_noise_modes():
    G = tiny_generator(32)
    w = torch.randn(2, 32)
    with torch.no_grad():
        a, b = G.synthesis(w, noise_mode="const"), G.synthesis(w, noise_mode="const")
        assert torch.equal(a, b)
        torch.testing.assert_close(a, G.synthesis(w, noise=G.noise_buffers()))
        r1, r2 = G.synthesis(w, noise_mode="random"), G.synthesis(w, noise_mode="random")
        assert not torch.allclose(r1, r2)
        zeros = [torch.zeros_like(n) for n in G.noise_buffers()]
        torch.testing.assert_close(G.synthesis(w, noise_mode="none"), G.synthesis(w, noise=zeros))
        assert not torch.allclose(G.synthesis(w, noise_mode="none"), a)
    with pytest.raises(ValueError):
        G.synthesis(w, noise_mode="fixed")


def test_noise_buffer_slots():
    """noise_0 → conv1, noise_{2k+1} → convs.{2k}, noise_{2k+2} → convs.{2k+1}
    (docs/checkpoints.md#latent-indexing-and-noise)."""
    G = tiny_generator(32)
    assert [tuple(n.shape[-2:]) for n in G.noise_buffers()] == [
        (4, 4), (8, 8), (8, 8), (16, 16), (16, 16), (32, 32), (32, 32)]
    w = torch.randn(1, 32)
    with torch.no_grad():
        base = G.synthesis(w)
        for l in range(G.num_layers):
            noises = [n.clone() for n in G.noise_buffers()]
            noises[l] = noises[l] + 1
            changed = G.synthesis(w, noise=noises)
            assert not torch.allclose(base, changed), l
            # the only layer reading noise_l is the one the doc names: zero its strength
            owner = G.conv1 if l == 0 else G.convs[l - 1]
            saved = owner.noise.weight.clone()
            owner.noise.weight.zero_()
            torch.testing.assert_close(G.synthesis(w, noise=noises),
                                       G.synthesis(w, noise=G.noise_buffers()))
            owner.noise.weight.copy_(saved)
