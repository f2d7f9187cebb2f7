"""Per-resolution channel tables (issue 13, point 4): the Generator's ``channels`` option, the
official default left unchanged, and a tiny varying-C testbed run that saves, loads strictly
through the run loaders and resumes."""
from __future__ import annotations

import json

import pytest
import torch

from gani.models.stylegan2 import Generator, channel_table, generator_config_from_state_dict

torch.set_num_threads(1)

# the official table (docs/checkpoints.md#hyper-parameters-and-channel-table), written out
# here independently of gani: res ≤ 32 → 512, then 256·m, 128·m, 64·m, 32·m, 16·m
OFFICIAL_M2 = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64,
               1024: 32}
VARY = {4: 24, 8: 16, 16: 8, 32: 4}          # three+ distinct counts, tiny


@pytest.mark.parametrize("size", [32, 64, 128, 256, 512, 1024])
def test_default_table_is_the_official_one(size):
    want = {r: c for r, c in OFFICIAL_M2.items() if r <= size}
    assert channel_table(size) == want
    assert channel_table(size, 1, 512)[size] == (512 if size <= 32 else min(512, OFFICIAL_M2[size] // 2))


def test_default_generator_config_and_inference_unchanged():
    G = Generator(64, style_dim=32, n_mlp=1)
    assert G.channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512}
    assert "channels" not in G.config() and G.custom_channels is False
    cfg = generator_config_from_state_dict(G.state_dict())
    assert cfg == dict(size=64, style_dim=32, n_mlp=1, channel_multiplier=2, channel_max=512)
    # an explicit channels equal to the official table builds the same state-dict shapes
    G2 = Generator(64, style_dim=32, n_mlp=1, channels=dict(G.channels))
    assert {k: v.shape for k, v in G2.state_dict().items()} == \
        {k: v.shape for k, v in G.state_dict().items()}


def test_channels_option_builds_per_resolution_layers():
    G = Generator(32, style_dim=16, n_mlp=1, channels={str(r): c for r, c in VARY.items()})
    assert G.channels == VARY and G.custom_channels
    sd = G.state_dict()
    assert sd["input.input"].shape == (1, 24, 4, 4)
    assert sd["conv1.conv.weight"].shape == (1, 24, 24, 3, 3)
    assert sd["to_rgb1.conv.weight"].shape == (1, 3, 24, 1, 1)
    prev = 24
    for k, res in enumerate([8, 16, 32]):
        c = VARY[res]
        assert sd[f"convs.{2 * k}.conv.weight"].shape == (1, c, prev, 3, 3), res
        assert sd[f"convs.{2 * k + 1}.conv.weight"].shape == (1, c, c, 3, 3), res
        assert sd[f"to_rgbs.{k}.conv.weight"].shape == (1, 3, c, 1, 1), res
        prev = c
    # GANI's per-C grouping: the output channel counts of the modulated convs
    assert sorted({m.weight.shape[1] for m in G.modulated_convs().values()}) == [3, 4, 8, 16, 24]
    with torch.no_grad():
        img = G.synthesis(G.mapping(torch.randn(2, 16)).unsqueeze(1).repeat(1, G.n_latent, 1))
    assert img.shape == (2, 3, 32, 32)
    # config → JSON → Generator(**cfg) rebuilds it and loads strictly; the state dict alone too
    cfg = json.loads(json.dumps(dict(G.config(), blur_kernel=list(G.blur_kernel))))
    assert cfg["channels"] == {str(r): c for r, c in VARY.items()}
    Generator(**cfg).load_state_dict(sd, strict=True)
    inferred = generator_config_from_state_dict(sd)
    assert inferred["channels"] == VARY
    Generator(**inferred).load_state_dict(sd, strict=True)


@pytest.mark.parametrize("bad", [{4: 8, 8: 8, 16: 8}, {4: 8, 8: 8, 16: 8, 32: 8, 64: 8},
                                 {4: 8, 8: 0, 16: 8, 32: 8}])
def test_bad_channel_tables_rejected(bad):
    with pytest.raises(ValueError):
        Generator(32, style_dim=16, n_mlp=1, channels=bad)


def test_discriminator_mirrors_a_channel_table():
    from benchmarks.testbed.core.discriminator import Discriminator
    D = Discriminator(32, channels=VARY)
    assert D.channels == VARY
    assert D.from_rgb.conv.weight.shape[0] == 4
    assert [b.conv2.conv.weight.shape[:2] for b in D.blocks] == [(8, 4), (16, 8), (24, 16)]
    assert D(torch.randn(4, 3, 32, 32)).shape == (4, 1)
    assert Discriminator(32, channel_max=16).channels == {4: 16, 8: 16, 16: 16, 32: 16}


def test_tiny_varying_run_saves_loads_strictly_and_resumes(tmp_path):
    from benchmarks.testbed.evaluate import load_run_generator
    from benchmarks.testbed.train import main
    from gani.safeload import load_safetensors

    common = ["--runs-dir", str(tmp_path), "--name", "v", "--no-eval", "--no-progress",
              "--ckpt-every", "1", "--sample-every", "2"]
    chans = ",".join(f"{r}:{c}" for r, c in VARY.items())
    assert main(common + ["--channels", chans, "--style-dim", "16", "--n-mlp", "1",
                          "--batch", "4", "--n-train", "8", "--max-steps", "2"]) == 0
    run = tmp_path / "v"
    gjson = json.loads((run / "generator.json").read_text())
    assert gjson["channels"] == {str(r): c for r, c in VARY.items()}
    assert json.loads((run / "config.json").read_text())["channels"] == gjson["channels"]
    G, _ = load_run_generator(run)                      # strict load inside
    assert G.channels == VARY
    sd = load_safetensors(run / "g_ema.safetensors")
    assert sd["convs.4.conv.weight"].shape == (1, 4, 8, 3, 3)
    # --resume takes the table from the checkpoint (config JSON has str keys)
    assert main(common + ["--resume", "--max-steps", "3"]) == 0
    from benchmarks.testbed.core.train import Trainer
    cfg = Trainer.config_from_checkpoint(run / "checkpoint.pt")
    tr = Trainer(cfg, real_images=torch.zeros(4, 3, 32, 32))
    tr.load(run / "checkpoint.pt")
    assert tr.step == 3 and tr.G.channels == VARY and tr.D.channels == VARY
    G3, _ = load_run_generator(run)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.allclose(G3.synthesis(G3.mapping(z)), tr.g_ema.synthesis(tr.g_ema.mapping(z)))
