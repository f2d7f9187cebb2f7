"""e4e encoder forward and the face-ID backbones (docs/checkpoints.md#e4e-encoder,
#face-identity-backbones)."""
import pytest
import torch
import torch.nn.functional as F

from gani.models import IR101, IRSE50, E4EEncoder, id_crop_pool


@pytest.fixture(scope="module")
def enc():
    torch.manual_seed(0)
    return E4EEncoder(n_styles=14, style_dim=64, width_div=8).eval()


def test_e4e_taps_and_output_shape_faces(enc):
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        t = enc.features(x)
        out = enc(x)
    assert t["c1"].shape == (2, 128 // 8, 64, 64)
    assert t["c2"].shape == (2, 256 // 8, 32, 32)
    assert t["c3"].shape == (2, 512 // 8, 16, 16)
    assert out.shape == (2, 14, 64)


def test_e4e_forward_is_the_documented_fpn(enc):
    """W[:,0] = styles[0](c3) repeated; W[:,i] += styles[i](c3 | p2 | p1) with p2, p1 from
    bilinear align_corners=True up-sampling (docs/checkpoints.md#e4e-encoder)."""
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        t = enc.features(x)
        c1, c2, c3 = t["c1"], t["c2"], t["c3"]

        def up_add(a, b):
            return F.interpolate(a, size=b.shape[-2:], mode="bilinear", align_corners=True) + b

        p2 = up_add(c3, enc.latlayer1(c2))
        p1 = up_add(p2, enc.latlayer2(c1))
        w0 = enc.styles[0](c3)
        rows = [w0] + [w0 + enc.styles[i](c3 if i < 3 else p2 if i < 7 else p1)
                       for i in range(1, 14)]
        torch.testing.assert_close(enc(x), torch.stack(rows, 1), atol=1e-6, rtol=1e-5)
        # align_corners matters: the other choice gives a different answer
        p2_wrong = F.interpolate(c3, size=c2.shape[-2:], mode="bilinear",
                                 align_corners=False) + enc.latlayer1(c2)
        assert not torch.allclose(enc.styles[3](p2_wrong), enc.styles[3](p2))


def test_e4e_cars_input_192x256():
    torch.manual_seed(0)
    E = E4EEncoder(n_styles=16, style_dim=64, width_div=8).eval()
    with torch.no_grad():
        out = E(torch.rand(1, 3, 192, 256) * 2 - 1)
    assert out.shape == (1, 16, 64) and torch.isfinite(out).all()


@pytest.mark.parametrize("factory", [IRSE50, IR101])
def test_id_backbone_embeddings_are_unit_norm(factory):
    torch.manual_seed(0)
    net = factory(width_div=8).eval()
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        e = net(x)
        assert e.shape == (3, 512 // 8)
        torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
        assert torch.equal(e, net(x))  # eval: dropout off, BN running stats
        assert not torch.allclose(e[0], e[1])
    with pytest.raises(ValueError):
        net(torch.zeros(1, 3, 128, 128))


def test_official_output_dims():
    with torch.device("meta"):
        a, b = IRSE50(), IR101()
    assert a.output_layer[3].in_features == 25088 and a.output_layer[4].affine
    assert b.output_layer[3].out_features == 512 and not b.output_layer[4].affine
    assert a.output_layer[1].p == 0.6 and b.output_layer[1].p == 0.4


def test_id_crop_pool_protocol():
    x = torch.zeros(1, 3, 256, 256)
    x[:, :, 35:223, 32:220] = 1.0  # exactly the crop window
    out = id_crop_pool(x)
    assert out.shape == (1, 3, 112, 112)
    torch.testing.assert_close(out, torch.ones_like(out))
    x[:, :, 34, :] = 5.0  # just outside the window: no effect
    x[:, :, :, 220] = 5.0
    torch.testing.assert_close(id_crop_pool(x), torch.ones_like(out))
    big = torch.randn(2, 3, 1024, 1024)
    torch.testing.assert_close(id_crop_pool(big), id_crop_pool(F.avg_pool2d(big, 4)))
