"""Gradient Modification Modules: row view, sharing per C, identity start, input dependence."""
from __future__ import annotations

import pytest
import torch

from gani.config.schema import GMMSection
from gani.gmm import GMM, GMMBank, GradientRows, from_rows, residual_mlp, to_rows


def fake_grads(shapes, batch=2, seed=0, scale=1e-3):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(batch, *s, generator=g) * scale for k, s in shapes.items()}


SHAPES = {"a": (6, 8, 3, 3), "b": (5, 8, 1, 1), "c": (8, 4, 3, 3)}  # C = 8, 8, 4


def test_row_view_round_trip():
    w = torch.randn(2, 5, 7, 3, 3)
    r = to_rows(w)
    assert r.shape == (2, 5 * 9, 7)
    assert torch.equal(r[1, 4 * 9 + 2 * 3 + 1], w[1, 4, :, 2, 1])  # row (o, kh, kw) = w[o, :, kh, kw]
    assert torch.equal(from_rows(r, (5, 7, 3, 3)), w)


def test_one_module_per_channel_count_shared_by_its_layers():
    bank = GMMBank({k: s[1] for k, s in SHAPES.items()}, GMMSection(zero_init_last=False))
    assert sorted(int(c) for c in bank.modules_by_c) == [4, 8]
    rows = GradientRows(fake_grads(SHAPES, batch=1))
    before = bank(rows)
    with torch.no_grad():
        bank.module(8).w2.add_(0.01)
    after = bank(rows)
    assert not torch.allclose(before["a"], after["a"])
    assert not torch.allclose(before["b"], after["b"])
    assert torch.equal(before["c"], after["c"])
    # a gradient from either layer reaches the one shared module
    for name in ("a", "b"):
        bank.zero_grad()
        bank(rows)[name].sum().backward()
        assert bank.module(8).w2.grad.abs().sum() > 0
        assert bank.module(4).w2.grad is None or bank.module(4).w2.grad.abs().sum() == 0


@pytest.mark.parametrize("pre", ["none", "sn", "in"])
@pytest.mark.parametrize("post", ["none", "sn", "in"])
def test_identity_start_is_exact(pre, post):
    bank = GMMBank({k: s[1] for k, s in SHAPES.items()},
                   GMMSection(pre_norm=pre, post_norm=post, bias="uniform"), batch=2)
    out = bank(GradientRows(fake_grads(SHAPES)))
    for name, d in out.items():
        assert d.shape == (2, *SHAPES[name]) and torch.count_nonzero(d) == 0


def test_identity_path_is_the_literal_residual_output():
    cfg = GMMSection(identity_path=True, pre_norm="none")
    grads = fake_grads(SHAPES)
    out = GMMBank({k: s[1] for k, s in SHAPES.items()}, cfg, batch=2)(GradientRows(grads))
    for name in SHAPES:  # zero-init W₂ + identity path: θ' = θ − g, a raw descent step
        assert torch.allclose(out[name], -grads[name])


def test_input_dependence_by_construction():
    torch.manual_seed(0)
    m = GMM(8, GMMSection(zero_init_last=False, init_scale=1.0))
    rows = torch.randn(1, 3, 8) * 1e-3
    rows[0, 2] = rows[0, 0]
    y = m(rows)[0]
    assert not torch.allclose(y[0], y[1], atol=1e-6)  # different rows, different corrections
    assert torch.allclose(y[0], y[2])  # a pure function of the row
    cos = torch.nn.functional.cosine_similarity(y[0], y[1], dim=0)
    assert cos < 0.99  # not one shared offset


def test_scale_norm_scalar_starts_at_sqrt_c():
    m = GMM(16, GMMSection(pre_norm="sn", post_norm="sn", blocks=3))
    assert torch.allclose(m.s_post, torch.full((1, 3), 4.0))
    assert torch.allclose(m.s_pre, torch.full((1,), 4.0))
    assert m.w1.shape == (1, 3, 16, 16) and m.b.abs().sum() == 0


def test_row_scale_grad_norm_keeps_untouched_rows_still():
    cfg = GMMSection(zero_init_last=False, row_scale="grad_norm")
    grads = fake_grads(SHAPES)
    grads["a"][:, 0] = 0.0  # output channel 0 of layer a gets no gradient
    out = GMMBank({k: s[1] for k, s in SHAPES.items()}, cfg, batch=2)(
        GradientRows(grads, cfg.row_scale))
    assert out["a"][:, 0].abs().max() == 0 and out["a"][:, 1].abs().max() > 0


def test_bank_copies_start_equal_and_state_round_trips():
    bank = GMMBank({k: s[1] for k, s in SHAPES.items()}, GMMSection(zero_init_last=False),
                   batch=3, seed=5)
    for p in bank.parameters():
        assert torch.equal(p[0], p[2])
    single = GMMBank({k: s[1] for k, s in SHAPES.items()}, GMMSection(zero_init_last=False),
                     batch=1, seed=5)
    assert torch.equal(single.module(8).w1[0], bank.module(8).w1[1])
    with torch.no_grad():
        bank.module(4).w2[1].add_(1.0)
    st = bank.image_state(1)
    single.load_image_state(0, st)
    assert torch.equal(single.module(4).w2[0], bank.module(4).w2[1])


# ----------------------------------------------------------------- sharing (issue 13 point 3)
LAYER_C = {k: s[1] for k, s in SHAPES.items()}  # a, b: C = 8; c: C = 4


def _n_params(m: GMM) -> int:
    return sum(p[0].numel() for p in m.parameters())


@pytest.mark.parametrize("blocks", [1, 2])
def test_sharing_modules_shapes_and_parameter_counts(blocks):
    cfg = dict(blocks=blocks, pre_norm="sn", post_norm="sn")
    per_c = {C: 2 * blocks * C * C + blocks * C + blocks + 1 for C in (4, 8)}  # W₁ W₂ b s_post s_pre

    shared = GMMBank(LAYER_C, GMMSection(sharing="channels", **cfg), batch=3)
    assert sorted(shared.modules_by_c) == ["4", "8"]
    assert sum(_n_params(m) for m in shared.modules_by_c.values()) == per_c[4] + per_c[8]

    layer = GMMBank(LAYER_C, GMMSection(sharing="layer", **cfg), batch=3)
    assert sorted(layer.modules_by_layer) == ["a", "b", "c"]
    assert [layer.module_of(n).channels for n in "abc"] == [8, 8, 4]
    assert sum(_n_params(m) for m in layer.modules_by_layer.values()) == 2 * per_c[8] + per_c[4]

    affine = GMMBank(LAYER_C, GMMSection(sharing="channels_affine", **cfg), batch=3)
    m8 = affine.module(8)
    assert m8.a.shape == m8.o.shape == (3, 2, blocks, 8)  # two layers of C = 8
    assert affine.module(4).a.shape == (3, 1, blocks, 4)
    assert torch.equal(m8.a, torch.ones_like(m8.a)) and torch.count_nonzero(m8.o) == 0
    extra = 2 * blocks * (2 * 8 + 1 * 4)  # a and o per layer and block
    assert sum(_n_params(m) for m in affine.modules_by_c.values()) == (
        per_c[4] + per_c[8] + extra)
    # every parameter has the image dimension first, and lr groups follow the modules
    assert all(p.shape[0] == 3 for b in (shared, layer, affine) for p in b.parameters())
    assert [g["channels"] for g in layer.param_groups(1e-3, "fan_in")] == [8, 8, 4]
    assert [g["lr"] for g in layer.param_groups(1e-3, "fan_in")] == [0.064, 0.064, 0.128]


@pytest.mark.parametrize("sharing", ["channels", "layer", "channels_affine"])
@pytest.mark.parametrize("pre", ["none", "in"])
def test_sharing_identity_start_is_exact(sharing, pre):
    bank = GMMBank(LAYER_C, GMMSection(sharing=sharing, pre_norm=pre, bias="uniform"), batch=2)
    rows = GradientRows(fake_grads(SHAPES))
    for name, d in bank(rows).items():
        assert d.shape == (2, *SHAPES[name]) and torch.count_nonzero(d) == 0
    grads = fake_grads(SHAPES)  # and the optimizer reading's direction is g itself
    for name, d in bank.direction(GradientRows(grads)).items():
        assert torch.equal(d, grads[name])


def test_channels_affine_starts_as_channels_and_its_gains_are_per_layer():
    rows = GradientRows(fake_grads(SHAPES))
    cfg = dict(zero_init_last=False, bias="uniform")
    plain = GMMBank(LAYER_C, GMMSection(sharing="channels", **cfg), 2, seed=3)(rows)
    bank = GMMBank(LAYER_C, GMMSection(sharing="channels_affine", **cfg), 2, seed=3)
    before = bank(rows)
    for name in SHAPES:
        assert torch.equal(before[name], plain[name])
    with torch.no_grad():  # layer a's gain (slot 0 of C = 8) only
        bank.module(8).a[:, 0].mul_(1.5)
    after = bank(rows)
    assert not torch.allclose(after["a"], before["a"])
    assert torch.equal(after["b"], before["b"]) and torch.equal(after["c"], before["c"])


def test_channels_affine_gains_equal_a_per_row_gather():
    """The per-layer gain and offset, applied block by block, equal a_l ⊙ h + o_l with a_l
    and o_l gathered for every row (the definition), in value and in φ-gradient."""
    cfg = GMMSection(sharing="channels_affine", zero_init_last=False, bias="uniform", blocks=2)
    bank = GMMBank(LAYER_C, cfg, batch=2, seed=5)
    m = bank.module(8)
    with torch.no_grad():
        m.a.add_(torch.randn_like(m.a) * 0.3)
        m.o.add_(torch.randn_like(m.o) * 0.3)
    rows = GradientRows(fake_grads(SHAPES))
    x = rows.rows[8]
    segments = bank._segments(rows, 8)
    assert segments == [(0, 6 * 9), (1, 5)]

    def gathered(h, k, _segments):
        idx = torch.cat([torch.full((n,), slot) for slot, n in segments])
        return h * m.a[:, :, k].index_select(1, idx) + m.o[:, :, k].index_select(1, idx)

    ref = residual_mlp(cfg, x, m.w1, m.b, m.w2, m.s_post, m.s_pre,
                       lambda h, k: gathered(h, k, segments))
    ga, go = torch.autograd.grad(ref.square().sum(), [m.a, m.o])
    out = m(x, segments)
    assert torch.equal(out, ref)
    na, no = torch.autograd.grad(out.square().sum(), [m.a, m.o])
    assert torch.allclose(na, ga, rtol=1e-5, atol=0) and torch.allclose(no, go, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="segments cover"):
        m(x, [(0, 6 * 9)])
    with pytest.raises(ValueError, match="layer slot"):
        m(x)


def test_layer_sharing_gives_each_layer_its_own_module():
    bank = GMMBank(LAYER_C, GMMSection(sharing="layer", zero_init_last=False))
    rows = GradientRows(fake_grads(SHAPES, batch=1))
    before = bank(rows)
    with torch.no_grad():
        bank.module_of("a").w2.add_(0.01)
    after = bank(rows)
    assert not torch.allclose(before["a"], after["a"])
    assert torch.equal(before["b"], after["b"]) and torch.equal(before["c"], after["c"])
    with pytest.raises(ValueError, match="module_of"):
        bank.module(8)  # no per-C module under layer sharing


# two layers of each weight shape (so `fuse` stacks them) and one of a shape of its own
FUSE_SHAPES = {"a": (6, 8, 3, 3), "a2": (6, 8, 3, 3), "b": (5, 8, 1, 1), "c": (8, 4, 3, 3),
               "c2": (8, 4, 3, 3)}


@pytest.mark.parametrize("pre,post", [("in", "sn"), ("sn", "in"), ("none", "none")])
def test_fused_layer_modules_equal_the_per_layer_loop(pre, post):
    """Sharing `layer`, fused (one stacked matmul per weight shape and block) gives the
    per-layer loop's deltas, directions and φ-gradients, image by image."""
    cfg = GMMSection(sharing="layer", zero_init_last=False, pre_norm=pre, post_norm=post,
                     bias="uniform")
    chans = {k: s[1] for k, s in FUSE_SHAPES.items()}
    loop, fused = GMMBank(chans, cfg, batch=3, fuse=False), GMMBank(chans, cfg, batch=3, fuse=True)
    fused.load_state_dict(loop.state_dict())
    with torch.no_grad():                  # each image and layer its own parameters
        for p, q in zip(loop.parameters(), fused.parameters()):
            p.add_(torch.randn_like(p) * 0.1)
            q.copy_(p)
    grads = fake_grads(FUSE_SHAPES, batch=3, seed=4)
    out = {}
    for tag, bank in (("loop", loop), ("fused", fused)):
        d, m = bank(GradientRows(grads)), bank.direction(GradientRows(grads))
        assert list(d) == list(FUSE_SHAPES) and list(m) == list(FUSE_SHAPES)
        (sum((v * (i + 1)).square().sum() for i, v in enumerate(d.values()))
         + sum(v.sum() for v in m.values())).backward()
        out[tag] = (d, m, {k: p.grad for k, p in bank.named_parameters()})
    for part in range(3):
        a, b = out["loop"][part], out["fused"][part]
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7, msg=k)
    assert all(v.abs().sum() > 0 for v in out["fused"][2].values())  # every module was used


def test_fused_is_a_class_default_a_bank_can_override():
    chans = {k: s[1] for k, s in FUSE_SHAPES.items()}
    cfg = GMMSection(sharing="layer")
    assert GMMBank(chans, cfg).fuse is GMMBank.FUSE_LAYERS
    assert GMMBank(chans, cfg, fuse=not GMMBank.FUSE_LAYERS).fuse is not GMMBank.FUSE_LAYERS
