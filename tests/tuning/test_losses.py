"""Eq. 1 per sample: terms, weights, skipping (λ = 0 or no network), cached targets."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gani.config.schema import LossWeights, RegularizerSection
from gani.losses import SimilarityLoss, cosine_distance, rec_loss


class Counting:
    """A stand-in network that counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a):
        self.calls += 1
        return self.fn(*a)


def lpips_stub(x, y):
    return ((x - y).abs().flatten(1).mean(1)).view(-1, 1, 1, 1)


def id_stub(x):
    return x.mean((2, 3)) + torch.tensor([0.0, 0.1, 0.2])


def parser_stub(x):
    return [F.avg_pool2d(x, 2 ** k) for k in range(5)]


@pytest.fixture
def xy():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 32, 32, generator=g) * 2 - 1, torch.rand(3, 3, 32, 32, generator=g) * 2 - 1


def test_rec_terms_are_per_sample(xy):
    x, y = xy
    assert torch.allclose(rec_loss(x, y, "l2"), ((x - y) ** 2).mean((1, 2, 3)))
    hub = F.smooth_l1_loss(x[1], y[1], beta=1.0)
    assert torch.allclose(rec_loss(x, y, "smooth_l1")[1], hub)
    with pytest.raises(ValueError):
        rec_loss(x, y, "l1")


def test_all_terms_weighted_sum(xy):
    x, y = xy
    w = LossWeights(lambda_rec=1.0, lambda_lpips=0.8, lambda_id=0.1, lambda_parse=1.0)
    loss = SimilarityLoss(w, lpips=lpips_stub, identity=id_stub, parser=parser_stub,
                          parser_size=None)
    total, parts = loss(x, y)
    assert set(parts) == {"rec", "lpips", "id", "parse"}
    assert total.shape == (3,) and all(p.shape == (3,) for p in parts.values())
    want_id = cosine_distance(id_stub(x), id_stub(y))
    want_parse = sum(cosine_distance(a, b) for a, b in zip(parser_stub(x), parser_stub(y)))
    assert torch.allclose(parts["id"], want_id, atol=1e-6)
    assert torch.allclose(parts["parse"], want_parse, atol=1e-6)
    want = parts["rec"] + 0.8 * parts["lpips"] + 0.1 * parts["id"] + parts["parse"]
    assert torch.allclose(total, want)
    # per-sample: image 0's loss does not depend on image 1
    total0, _ = loss(x[:1], y[:1])
    assert torch.allclose(total0, total[:1], atol=1e-6)


def test_zero_lambda_or_missing_network_is_skipped_not_faked(xy):
    x, y = xy
    lp, idn, par = Counting(lpips_stub), Counting(id_stub), Counting(parser_stub)
    w = LossWeights(lambda_lpips=0.0, lambda_id=0.1, lambda_parse=0.0)
    loss = SimilarityLoss(w, lpips=lp, identity=idn, parser=par)
    total, parts = loss(x, y)
    assert set(parts) == {"rec", "id"}
    assert lp.calls == 0 and par.calls == 0 and idn.calls == 2
    assert loss.skipped_terms() == {"lpips": "lambda is 0", "parse": "lambda is 0"}
    nonets = SimilarityLoss(LossWeights())  # λs > 0, but no networks
    total, parts = nonets(x, y)
    assert set(parts) == {"rec"} and torch.allclose(total, parts["rec"])
    assert set(nonets.skipped_terms().values()) == {"no network configured"}


def test_prepared_target_caches_target_features(xy):
    x, y = xy
    idn, par = Counting(id_stub), Counting(parser_stub)
    loss = SimilarityLoss(LossWeights(), identity=idn, parser=par)
    tgt = loss.prepare(y)
    assert idn.calls == 1 and par.calls == 1
    a, _ = loss(x, tgt)
    assert idn.calls == 2 and par.calls == 2  # only x's side is computed
    b, _ = loss(x, y)
    assert torch.allclose(a, b)
    c, _ = loss(x[1:], tgt[1:])
    assert torch.allclose(c, a[1:])


def test_identity_input_and_lpips_resize():
    seen = {}

    def lp(a, b):
        seen["lpips"] = a.shape[-1]
        return (a - b).abs().mean((1, 2, 3))

    def crop(x):
        return x[..., 8:24, 8:24]

    loss = SimilarityLoss(LossWeights(), lpips=lp, identity=lambda t: t.mean((2, 3)),
                          identity_input=crop, lpips_size=16)
    x = torch.rand(2, 3, 32, 32)
    loss(x, x.flip(0))
    assert seen["lpips"] == 16


def test_derived_losses():
    base = SimilarityLoss(LossWeights(), lpips=lpips_stub, identity=id_stub, parser=parser_stub)
    pti = base.restricted(("rec", "lpips"))
    assert pti.active_terms() == ["rec", "lpips"]
    reg = base.regularizer(RegularizerSection(lambda_rec=1.0, lambda_lpips=0.0))
    assert reg.active_terms() == ["rec"]
    assert base.active_terms() == ["rec", "lpips", "id", "parse"]


def test_real_network_interfaces_plug_in():
    """The project's parser (contracting path), MoCo and LPIPS wrappers fit the loss."""
    from gani.models.parsing import FaceParsingUNet

    torch.manual_seed(0)
    parser = FaceParsingUNet().eval()
    loss = SimilarityLoss(LossWeights(lambda_id=0.0), parser=parser, parser_size=64,
                          lpips=lpips_stub)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        total, parts = loss(x, y)
        feats = parser.contracting_features(F.interpolate(x, size=(64, 64), mode="bilinear"))
    assert len(feats) == 5 and parts["parse"].shape == (2,)
    assert torch.isfinite(total).all() and float(parts["parse"].min()) > 0
    bad = SimilarityLoss(LossWeights(), lpips=lambda a, b: (a - b).abs().mean())
    with pytest.raises(ValueError, match="per-image"):
        bad(x, y)
