"""Bad configuration and bad checkpoints, through the command line (`cli.main.main`).

Each must be a clear error before any image is processed: the exit status of cli/main.py's
docstring (2 configuration, 3 checkpoint), stderr naming the problem, no traceback, and no
per-image output under the output root. A malicious pickle is refused without running it.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from cli.main import EXIT_CHECKPOINT, EXIT_CONFIG, main
from gani.stages.demo_data import demo_images

ROOT = Path(__file__).resolve().parents[2]
GEN = "stylegan2-ffhq-config-f"           # a registry name; its file is stylegan2-ffhq-config-f.pt
TINY = ["models.generator.size=32", "models.generator.style_dim=32", "models.generator.n_mlp=2",
        "models.generator.channel_max=32", "models.generator.channel_multiplier=1",
        "models.encoder.width_div=16", "tune.steps=2", "edit.pca_samples=64",
        "evaluate.locality_n=1", "tracking.enabled=false"]


class _Evil:
    """Unpickling this would run `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def work(tmp_path, monkeypatch):
    """cwd = tmp (so data/checkpoints is private), a params.yaml copy, two input images."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    photos = tmp_path / "photos"
    photos.mkdir()
    files = demo_images()
    for name in ("astronaut.png", "chelsea.png"):
        (photos / name).write_bytes(files[name])
    (tmp_path / "data" / "checkpoints").mkdir(parents=True)
    return tmp_path


def invert(work: Path, *sets: str, profile: str = "demo_random") -> list[str]:
    args = ["invert", str(work / "photos"), "--out", str(work / "out"), "--profile", profile,
            "--params", str(work / "params.yaml")]
    for s in (*TINY, *sets):
        args += ["--set", s]
    return args


def per_image_outputs(out: Path) -> list[str]:
    if not out.exists():
        return []
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                  or (p.is_dir() and p.parent == out))


def tiny_generator_checkpoint() -> dict:
    """A rosinality-format checkpoint of the TINY generator's architecture."""
    from gani.models.stylegan2 import Generator, rosinality_checkpoint

    torch.manual_seed(0)
    G = Generator(32, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=32)
    return rosinality_checkpoint(G, torch.zeros(32))


def check_refused(work, capsys, reliability, case: str, argv: list[str], code: int,
                  must_name: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == code, (rc, err)
    for text in must_name:
        assert text in err, (text, err)
    assert "Traceback" not in err
    outputs = per_image_outputs(work / "out")
    assert outputs == [], outputs
    reliability.add("bad config", case, images=2, data_lost=len(outputs),
                    note=f"exit {rc}: {err.strip().splitlines()[0][:90]}")
    return err


# --------------------------------------------------------------------------- configuration

def test_unknown_profile(work, capsys, reliability):
    check_refused(work, capsys, reliability, "unknown profile",
                  invert(work, profile="nonesuch"), EXIT_CONFIG,
                  ["unknown profile 'nonesuch'", "demo"])


@pytest.mark.parametrize("setting, names", [
    ("tune.steps=-3", ["tune.steps", "-3"]),
    ("tune.stepz=3", ["unknown key 'stepz'", "steps"]),
    ("align.method=sideways", ["align.method", "sideways"]),
    ("tune=5", ["tune"]),
])
def test_invalid_parameter(work, capsys, reliability, setting, names):
    check_refused(work, capsys, reliability, f"invalid parameter --set {setting}",
                  invert(work, setting), EXIT_CONFIG, names)


def test_params_file_not_yaml_or_missing(work, capsys, reliability):
    (work / "params.yaml").write_text("tune: [unclosed\n")
    check_refused(work, capsys, reliability, "params.yaml not valid YAML", invert(work),
                  EXIT_CONFIG, ["params.yaml", "not valid YAML"])
    (work / "params.yaml").unlink()
    check_refused(work, capsys, reliability, "params.yaml missing", invert(work),
                  EXIT_CONFIG, ["parameters file not found"])


def test_missing_input(work, capsys, reliability):
    argv = invert(work)
    argv[1] = str(work / "no-such-folder")
    check_refused(work, capsys, reliability, "input folder missing", argv, EXIT_CONFIG,
                  ["input not found", "no-such-folder"])


# --------------------------------------------------------------------------- checkpoints

def test_missing_checkpoint(work, capsys, reliability):
    check_refused(work, capsys, reliability, "generator checkpoint missing",
                  invert(work, f"models.generator.checkpoint={GEN}"), EXIT_CHECKPOINT,
                  [GEN, "missing", "stylegan2-ffhq-config-f.pt", "gani checkpoints import"])


def test_truncated_checkpoint(work, capsys, reliability):
    path = work / "data" / "checkpoints" / f"{GEN}.pt"
    torch.save(tiny_generator_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    check_refused(work, capsys, reliability, "generator checkpoint truncated",
                  invert(work, f"models.generator.checkpoint={GEN}"), EXIT_CHECKPOINT,
                  [f"checkpoints/{GEN}.pt", "corrupt or truncated"])


def test_garbage_checkpoint(work, capsys, reliability):
    """Random bytes: torch's weights-only unpickler fails anywhere (EOFError, IndexError
    "pop from empty list", an unknown opcode ...); every way is "cannot read checkpoint",
    never "wrong architecture" nor a traceback."""
    from gani.checkpoints import CheckpointLoadError, load_torch_file

    path = work / "data" / "checkpoints" / f"{GEN}.pt"
    path.write_bytes(random.Random(0).randbytes(4096))
    check_refused(work, capsys, reliability, "generator checkpoint random bytes",
                  invert(work, f"models.generator.checkpoint={GEN}"), EXIT_CHECKPOINT,
                  [f"checkpoints/{GEN}.pt", "cannot read checkpoint"])
    other = work / "garbage.pt"
    for seed in range(1, 41):
        other.write_bytes(random.Random(seed).randbytes(64 + 97 * seed))
        with pytest.raises(CheckpointLoadError, match="cannot read checkpoint"):
            load_torch_file(other)


def test_wrong_architecture(work, capsys, reliability):
    """One tensor of the wrong size: refused with the tensor named, not a traceback."""
    ckpt = tiny_generator_checkpoint()
    sd = ckpt["g_ema"]
    name = next(k for k in sd if k.startswith("convs.") and k.endswith(".conv.weight"))
    shape = list(sd[name].shape)
    shape[-1] += 2                                   # a 5x5 kernel where 3x3 belongs
    sd[name] = torch.zeros(shape)
    path = work / "data" / "checkpoints" / f"{GEN}.pt"
    torch.save(ckpt, path)
    check_refused(work, capsys, reliability, "generator checkpoint wrong architecture",
                  invert(work, f"models.generator.checkpoint={GEN}"), EXIT_CHECKPOINT,
                  [f"checkpoints/{GEN}.pt", name])


def test_checkpoint_of_another_resolution(work, capsys, reliability):
    """A valid generator whose size differs from models.generator.size."""
    torch.save(tiny_generator_checkpoint(), work / "data" / "checkpoints" / f"{GEN}.pt")
    check_refused(work, capsys, reliability, "generator checkpoint of another size",
                  invert(work, f"models.generator.checkpoint={GEN}",
                         "models.generator.size=64"), EXIT_CHECKPOINT,
                  ["32 px", "models.generator.size is 64"])


def test_malicious_pickle_is_refused_and_not_run(work, capsys, reliability):
    marker = work / "PWNED"
    ckpt = tiny_generator_checkpoint()
    ckpt["payload"] = _Evil(marker)
    path = work / "data" / "checkpoints" / f"{GEN}.pt"
    torch.save(ckpt, path)
    err = check_refused(work, capsys, reliability, "malicious pickle in generator checkpoint",
                        invert(work, f"models.generator.checkpoint={GEN}"), EXIT_CHECKPOINT,
                        [f"checkpoints/{GEN}.pt", "refused"])
    assert "system" in err                            # the offending global is named
    assert not marker.exists()


def test_good_checkpoint_is_accepted(work, capsys):
    """Control: the same tiny checkpoint, intact, passes the checks that refused the bad
    ones (the runtime builds from it), so the refusals above are about the damage."""
    from gani.config import load_settings
    from gani.stages.runtime import Runtime

    torch.save(tiny_generator_checkpoint(), work / "data" / "checkpoints" / f"{GEN}.pt")
    settings = load_settings(work / "params.yaml", "demo_random",
                             [*TINY, f"models.generator.checkpoint={GEN}"])
    rt = Runtime(settings, "data")
    assert rt.G.size == 32 and rt.encoder is not None
