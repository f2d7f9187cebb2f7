"""Expected official state-dict layouts (key → shape), written from the layouts stated in
docs/checkpoints.md alone.

Nothing here imports gani: these tables are the independent statement of the official
files' layouts that the models are checked against.
"""
import math

import torch


def _bn(keys, prefix, c, affine=True):
    if affine:
        keys[f"{prefix}.weight"] = (c,)
        keys[f"{prefix}.bias"] = (c,)
    keys[f"{prefix}.running_mean"] = (c,)
    keys[f"{prefix}.running_var"] = (c,)
    keys[f"{prefix}.num_batches_tracked"] = ()


# ------------------------------------------ StyleGAN2 (docs/checkpoints.md#stylegan2-generator)
def stylegan2_channels(size, m=2, cmax=512):
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m,
            512: 32 * m, 1024: 16 * m}
    return {r: min(c, cmax) for r, c in base.items() if r <= size}


def stylegan2_layout(size, style_dim=512, n_mlp=8, m=2, cmax=512):
    ch = stylegan2_channels(size, m, cmax)
    log_size = int(math.log2(size))
    keys = {}
    for j in range(1, n_mlp + 1):
        keys[f"style.{j}.weight"] = (style_dim, style_dim)
        keys[f"style.{j}.bias"] = (style_dim,)
    keys["input.input"] = (1, ch[4], 4, 4)

    def styled(p, cin, cout, up):
        keys[f"{p}.conv.weight"] = (1, cout, cin, 3, 3)
        keys[f"{p}.conv.modulation.weight"] = (cin, style_dim)
        keys[f"{p}.conv.modulation.bias"] = (cin,)
        if up:
            keys[f"{p}.conv.blur.kernel"] = (4, 4)
        keys[f"{p}.noise.weight"] = (1,)
        keys[f"{p}.activate.bias"] = (cout,)

    def to_rgb(t, cin, up):
        keys[f"{t}.conv.weight"] = (1, 3, cin, 1, 1)
        keys[f"{t}.conv.modulation.weight"] = (cin, style_dim)
        keys[f"{t}.conv.modulation.bias"] = (cin,)
        keys[f"{t}.bias"] = (1, 3, 1, 1)
        if up:
            keys[f"{t}.upsample.kernel"] = (4, 4)

    styled("conv1", ch[4], ch[4], False)
    to_rgb("to_rgb1", ch[4], False)
    for k in range(log_size - 2):
        res = 2 ** (k + 3)
        styled(f"convs.{2 * k}", ch[res // 2], ch[res], True)
        styled(f"convs.{2 * k + 1}", ch[res], ch[res], False)
        to_rgb(f"to_rgbs.{k}", ch[res], True)
    for l in range(2 * (log_size - 2) + 1):
        r = 2 ** ((l + 5) // 2)
        keys[f"noises.noise_{l}"] = (1, 1, r, r)
    return keys


def wplus_index_map(size):
    """Modulated-conv name → the W+ index it reads
    (docs/checkpoints.md#latent-indexing-and-noise)."""
    log_size = int(math.log2(size))
    out = {"conv1": 0, "to_rgb1": 1}
    for k in range(log_size - 2):
        out[f"convs.{2 * k}"] = 2 * k + 1
        out[f"convs.{2 * k + 1}"] = 2 * k + 2
        out[f"to_rgbs.{k}"] = 2 * k + 3
    return out


# ------------------------------------ IR / IR-SE units (docs/checkpoints.md#ir-and-ir-se-units)
def ir_body(keys, units, se, width_div=1):
    depths = [64 // width_div, 128 // width_div, 256 // width_div, 512 // width_div]
    idx, cin = 0, 64 // width_div
    for n, depth in zip(units, depths):
        for u in range(n):
            p = f"body.{idx}"
            if cin != depth:
                keys[f"{p}.shortcut_layer.0.weight"] = (depth, cin, 1, 1)
                _bn(keys, f"{p}.shortcut_layer.1", depth)
            _bn(keys, f"{p}.res_layer.0", cin)
            keys[f"{p}.res_layer.1.weight"] = (depth, cin, 3, 3)
            keys[f"{p}.res_layer.2.weight"] = (depth,)
            keys[f"{p}.res_layer.3.weight"] = (depth, depth, 3, 3)
            _bn(keys, f"{p}.res_layer.4", depth)
            if se:
                r = max(1, depth // 16)
                keys[f"{p}.res_layer.5.fc1.weight"] = (r, depth, 1, 1)
                keys[f"{p}.res_layer.5.fc2.weight"] = (depth, r, 1, 1)
            idx += 1
            cin = depth


def input_layer(keys, width_div=1):
    c = 64 // width_div
    keys["input_layer.0.weight"] = (c, 3, 3, 3)
    _bn(keys, "input_layer.1", c)
    keys["input_layer.2.weight"] = (c,)


# ------------------------------------------------ e4e encoder (docs/checkpoints.md#e4e-encoder)
def e4e_layout(n_styles, width_div=1, style_dim=512):
    keys = {}
    c = 512 // width_div
    input_layer(keys, width_div)
    ir_body(keys, (3, 4, 14, 3), se=True, width_div=width_div)
    for i in range(n_styles):
        spatial = 16 if i < 3 else 32 if i < 7 else 64
        cin = c
        for j in range(int(math.log2(spatial))):
            keys[f"styles.{i}.convs.{2 * j}.weight"] = (c, cin, 3, 3)
            keys[f"styles.{i}.convs.{2 * j}.bias"] = (c,)
        keys[f"styles.{i}.linear.weight"] = (style_dim, c)
        keys[f"styles.{i}.linear.bias"] = (style_dim,)
    keys["latlayer1.weight"] = (c, 256 // width_div, 1, 1)
    keys["latlayer1.bias"] = (c,)
    keys["latlayer2.weight"] = (c, 128 // width_div, 1, 1)
    keys["latlayer2.bias"] = (c,)
    return keys


# ----------------------------------- ID backbones (docs/checkpoints.md#face-identity-backbones)
def backbone_layout(units, se, affine, width_div=1):
    keys = {}
    c = 512 // width_div
    input_layer(keys, width_div)
    ir_body(keys, units, se, width_div)
    _bn(keys, "output_layer.0", c)
    keys["output_layer.3.weight"] = (c, c * 49)
    keys["output_layer.3.bias"] = (c,)
    _bn(keys, "output_layer.4", c, affine=affine)
    return keys


def irse50_layout(width_div=1):
    return backbone_layout((3, 4, 14, 3), se=True, affine=True, width_div=width_div)


def ir101_layout(width_div=1):
    return backbone_layout((3, 13, 30, 3), se=False, affine=False, width_div=width_div)


# ------------------------------------- MaskGAN parser (docs/checkpoints.md#maskgan-face-parser)
def parser_layout():
    keys = {}
    f = [16, 32, 64, 128, 256]

    def unet_conv(p, cin, cout):
        keys[f"{p}.conv1.0.weight"] = (cout, cin, 3, 3)
        keys[f"{p}.conv1.0.bias"] = (cout,)
        _bn(keys, f"{p}.conv1.1", cout)
        keys[f"{p}.conv2.0.weight"] = (cout, cout, 3, 3)
        keys[f"{p}.conv2.0.bias"] = (cout,)
        _bn(keys, f"{p}.conv2.1", cout)

    for name, cin, cout in [("conv1", 3, f[0]), ("conv2", f[0], f[1]), ("conv3", f[1], f[2]),
                            ("conv4", f[2], f[3]), ("center", f[3], f[4])]:
        unet_conv(name, cin, cout)
    for n, cin, cout in [(4, f[4], f[3]), (3, f[3], f[2]), (2, f[2], f[1]), (1, f[1], f[0])]:
        unet_conv(f"up_concat{n}.conv", cin, cout)
        keys[f"up_concat{n}.up.weight"] = (cin, cout, 2, 2)
        keys[f"up_concat{n}.up.bias"] = (cout,)
    keys["final.weight"] = (19, 16, 1, 1)
    keys["final.bias"] = (19,)
    return keys


# -------------------------------- MoCo, torchvision r50 (docs/checkpoints.md#moco-v2-resnet-50)
def resnet50_layout():
    keys = {"conv1.weight": (64, 3, 7, 7)}
    _bn(keys, "bn1", 64)
    inplanes = 64
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"layer{li}.{b}"
            keys[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            _bn(keys, f"{p}.bn1", planes)
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            _bn(keys, f"{p}.bn2", planes)
            keys[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            _bn(keys, f"{p}.bn3", planes * 4)
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                _bn(keys, f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return keys


def moco_checkpoint(generator=None, with_key_encoder=False):
    """An official-format MoCo v2 checkpoint dict with random tensors."""
    body = random_state(resnet50_layout(), generator)
    sd = {f"module.encoder_q.{k}": v for k, v in body.items()}
    head = {"fc.0.weight": (2048, 2048), "fc.0.bias": (2048,), "fc.2.weight": (128, 2048),
            "fc.2.bias": (128,)}
    sd.update({f"module.encoder_q.{k}": torch.zeros(s) for k, s in head.items()})
    if with_key_encoder:
        sd.update({f"module.encoder_k.{k}": v.clone() for k, v in body.items()})
    sd["module.queue"] = torch.zeros(128, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 800, "arch": "resnet50", "state_dict": sd, "optimizer": {}}


# ---------------------------------------------------------------- helpers
def shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def random_state(layout, generator=None):
    """Random tensors for a layout (BN variances positive, counters integer)."""
    g = generator or torch.Generator().manual_seed(0)
    out = {}
    for k, s in layout.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7, dtype=torch.long)
        elif k.endswith("running_var"):
            out[k] = torch.rand(s, generator=g) + 0.5
        else:
            out[k] = torch.randn(s, generator=g) * 0.1
    return out
