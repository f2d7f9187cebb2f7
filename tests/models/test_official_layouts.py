"""The models' state dicts equal the official layouts (docs/checkpoints.md), key for key and shape
for shape; the official files load strictly (built here from the doc's tables)."""
import pytest
import torch

from gani.models import (IR101, IRSE50, E4EEncoder, FaceParsingUNet, Generator, MocoResNet50,
                         generator_config_from_state_dict, load_face_parser, load_ir101,
                         load_irse50, load_moco, load_stylegan2_checkpoint)
from official_layouts import (e4e_layout, ir101_layout, irse50_layout, moco_checkpoint,
                              parser_layout, random_state, resnet50_layout, shapes,
                              stylegan2_layout)


def meta_shapes(factory):
    with torch.device("meta"):
        return shapes(factory().state_dict())


def n_elements(layout):
    return sum(int(torch.Size(s).numel()) for s in layout.values())


# ---------------------------------------------- StyleGAN2 (docs/checkpoints.md#state-dict-keys)
@pytest.mark.parametrize("size,count,params", [(256, 135, 30_034_338), (512, 153, 30_276_583),
                                               (1024, 171, 30_370_060)])
def test_generator_layout_matches_doc(size, count, params):
    with torch.device("meta"):
        G = Generator(size, channel_multiplier=2)
    got = shapes(G.state_dict())
    assert got == stylegan2_layout(size)
    assert len(got) == count
    assert sum(p.numel() for p in G.parameters()) == params
    # buffers are exactly the kernels and noise maps (all persistent, all in the file)
    assert {k for k, _ in G.named_buffers()} == {k for k in got if k.endswith("kernel")
                                                  or k.startswith("noises.")}


def test_generator_capped_and_small_layouts():
    got = meta_shapes(lambda: Generator(64, style_dim=64, n_mlp=2, channel_max=32))
    assert got == stylegan2_layout(64, style_dim=64, n_mlp=2, cmax=32)
    got = meta_shapes(lambda: Generator(128, channel_multiplier=1, channel_max=256))
    assert got == stylegan2_layout(128, m=1, cmax=256)


def test_official_256_g_ema_loads_strictly_and_config_is_inferred():
    layout = stylegan2_layout(256)
    sd = random_state(layout)
    for k in sd:  # the converter stores the modulation bias ≈ 1 and kernels outer/16
        if k.endswith("kernel"):
            sd[k] = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 16
    assert generator_config_from_state_dict(sd) == dict(
        size=256, style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=512)
    G, latent_avg = load_stylegan2_checkpoint({"g_ema": sd, "latent_avg": torch.ones(512)})
    assert G.n_latent == 14 and G.num_layers == 13
    assert torch.equal(G.convs[5].conv.weight, sd["convs.5.conv.weight"])
    assert torch.equal(G.noises.noise_12, sd["noises.noise_12"])
    assert latent_avg.shape == (512,)
    # a missing or extra key fails (strict)
    bad = dict(sd)
    bad.pop("to_rgbs.3.bias")
    with pytest.raises(Exception):
        load_stylegan2_checkpoint({"g_ema": bad})


def test_fresh_kernel_buffers_have_official_values():
    G = Generator(32, style_dim=16, n_mlp=1, channel_max=8)
    k = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64 * 4
    sd = G.state_dict()
    kernels = [v for name, v in sd.items() if name.endswith("kernel")]
    assert len(kernels) == 2 * 3  # blur on convs.{0,2,4}, upsample on to_rgbs.{0,1,2}
    for v in kernels:
        torch.testing.assert_close(v, k)


# -------------------------------------------------------- e4e (docs/checkpoints.md#e4e-encoder)
@pytest.mark.parametrize("n_styles,count,melems", [(14, 565, 209.5), (16, 593, 238.3),
                                                   (18, 621, 267.2)])
def test_e4e_encoder_layout_matches_doc(n_styles, count, melems):
    got = meta_shapes(lambda: E4EEncoder(n_styles=n_styles))
    want = e4e_layout(n_styles)
    assert got == want
    assert len(got) == count
    assert round(n_elements(want) / 1e6, 1) == melems


def test_e4e_small_width_layout():
    got = meta_shapes(lambda: E4EEncoder(n_styles=10, style_dim=64, width_div=8))
    assert got == e4e_layout(10, width_div=8, style_dim=64)


# ---------------------------------------- ID nets (docs/checkpoints.md#face-identity-backbones)
def test_irse50_layout_matches_doc():
    got = meta_shapes(IRSE50)
    assert got == irse50_layout()
    assert len(got) == 397 and round(n_elements(got) / 1e6, 1) == 43.8


def test_ir101_layout_matches_doc():
    got = meta_shapes(IR101)
    assert got == ir101_layout()
    assert len(got) == 672 and round(n_elements(got) / 1e6, 1) == 65.2
    assert "output_layer.4.weight" not in got  # BN1d affine=False


def _without_counters(sd):
    return {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("width_div", [8])
def test_id_backbones_load_official_layout_strictly(width_div, tmp_path):
    for factory, layout in [(IRSE50, irse50_layout), (IR101, ir101_layout)]:
        sd = random_state(layout(width_div))
        net = factory(width_div=width_div)
        net.load_state_dict(sd)  # strict
        net.load_state_dict(_without_counters(sd))  # old files without counters
        broken = dict(sd)
        broken.pop("body.0.res_layer.1.weight")
        with pytest.raises(RuntimeError, match="Missing"):
            net.load_state_dict(broken)
        with pytest.raises(RuntimeError, match="Unexpected"):
            net.load_state_dict({**sd, "extra.weight": torch.zeros(1)})


def test_official_size_irse50_file_loads(tmp_path):
    sd = _without_counters(random_state(irse50_layout()))
    path = tmp_path / "model_ir_se50.pth"
    torch.save(sd, path)
    net = load_irse50(path)
    assert not net.training
    torch.testing.assert_close(net.output_layer[3].weight, sd["output_layer.3.weight"])


def test_official_size_ir101_dict_loads():
    sd = random_state(ir101_layout())
    net = load_ir101(sd)
    torch.testing.assert_close(net.output_layer[4].running_var, sd["output_layer.4.running_var"])


# --------------------------------------------- parser (docs/checkpoints.md#maskgan-face-parser)
def test_parser_layout_and_strict_load():
    net = FaceParsingUNet()
    assert shapes(net.state_dict()) == parser_layout()
    sd = random_state(parser_layout())
    loaded = load_face_parser(_without_counters(sd))
    torch.testing.assert_close(loaded.up_concat2.up.weight, sd["up_concat2.up.weight"])
    loaded = load_face_parser({f"module.{k}": v for k, v in sd.items()})  # DataParallel save
    torch.testing.assert_close(loaded.final.bias, sd["final.bias"])


# ------------------------------------------------- MoCo (docs/checkpoints.md#moco-v2-resnet-50)
def test_moco_layout_and_official_checkpoint_loads(tmp_path):
    net = MocoResNet50()
    assert shapes(net.state_dict()) == resnet50_layout()
    ckpt = moco_checkpoint(with_key_encoder=True)
    loaded = load_moco(ckpt)
    q = ckpt["state_dict"]
    torch.testing.assert_close(loaded.layer3[2].conv2.weight,
                               q["module.encoder_q.layer3.2.conv2.weight"])
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save(moco_checkpoint(), path)
    loaded = load_moco(path)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        f = loaded(x)
    assert f.shape == (1, 2048)  # batch 1 keeps its batch dim
    torch.testing.assert_close(f.norm(dim=1), torch.ones(1))
