"""Checkpoint registry, verification, import, and safe loading (a malicious pickle is refused)."""
import os

import pytest
import torch

from gani import checkpoints as ck
from cli.main import main

EXPECTED = {"stylegan2-ffhq-config-f", "stylegan2-car-config-f", "stylegan2-church-config-f",
            "stylegan2-horse-config-f", "stylegan2-afhqwild", "e4e_ffhq_encode", "e4e_cars_encode",
            "e4e_horse_encode", "e4e_church_encode", "arcface", "curricularface", "moco",
            "maskgan_parser", "dlib_68", "alexnet"}


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_registry_names_every_official_file():
    assert EXPECTED <= set(ck.REGISTRY)
    for spec in ck.REGISTRY.values():
        assert spec.file and spec.source and spec.licence and spec.kind


def test_missing_checkpoint_error_names_file_profile_and_source(tmp_path):
    with pytest.raises(ck.CheckpointMissingError) as err:
        ck.require("e4e_ffhq_encode", tmp_path, profile="ffhq")
    msg = str(err.value)
    assert "e4e_ffhq_encode.pt" in msg and "'ffhq'" in msg and "1cUv_reLE6k3604or78EranS7XzuVMWeO" in msg
    assert "gani checkpoints import" in msg


def test_packaged_dlib_predictor_is_found_and_verified(tmp_path):
    status = ck.check("dlib_68", tmp_path)
    assert status.state == "verified", status


def test_malicious_pickle_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model_ir_se50.pth"
    torch.save({"weight": torch.ones(1), "payload": _Evil()}, path)
    with pytest.raises(ck.CheckpointLoadError, match="refused"):
        ck.load_torch_file(path)
    with pytest.raises(ck.CheckpointLoadError):
        ck.import_files([path], tmp_path / "data")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    assert not (tmp_path / "data" / "checkpoints" / "model_ir_se50.pth").exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.randn(64, 64)}, good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ck.CheckpointLoadError, match="corrupt or truncated"):
        ck.load_torch_file(bad)
    assert torch.equal(ck.load_torch_file(good)["w"], torch.load(good)["w"])


def test_import_records_hash_and_verify_catches_later_corruption(tmp_path):
    src = tmp_path / "model_ir_se50.pth"
    torch.save({"input_layer.0.weight": torch.randn(64, 3, 3, 3)}, src)
    data = tmp_path / "data"
    [status] = ck.import_files([src], data)
    assert status.state == "verified" and "recorded" in status.detail
    dest = data / "checkpoints" / "model_ir_se50.pth"
    assert dest.read_bytes() == src.read_bytes()
    raw = bytearray(dest.read_bytes())
    raw[-10] ^= 0xFF
    dest.write_bytes(bytes(raw))
    assert ck.check("arcface", data).state == "corrupt"
    assert main(["checkpoints", "verify", "--data-dir", str(data)]) == 3


def test_import_refuses_a_file_whose_published_hash_differs(tmp_path):
    fake = tmp_path / "shape_predictor_68_face_landmarks.dat"
    fake.write_bytes(b"not the real predictor")
    with pytest.raises(ck.CheckpointCorruptError, match="does not match the published"):
        ck.import_files([fake], tmp_path / "data")


def test_unknown_file_name_needs_a_name(tmp_path):
    f = tmp_path / "weights.pt"
    torch.save({}, f)
    with pytest.raises(KeyError, match="--name"):
        ck.import_files([f], tmp_path / "data")
    [status] = ck.import_files([f], tmp_path / "data", name="moco")
    assert (tmp_path / "data" / "checkpoints" / "moco_v2_800ep_pretrain.pth.tar").is_file()
    assert status.state == "verified"


def test_cli_list_and_bad_config_exit_codes(tmp_path, capsys):
    assert main(["checkpoints", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "e4e_ffhq_encode" in out and "missing" in out
    assert main(["invert", str(tmp_path), "--out", str(tmp_path / "o"), "--profile", "nope"]) == 2
    assert "unknown profile" in capsys.readouterr().err
