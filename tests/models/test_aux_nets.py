"""MoCo features, the MaskGAN parser's feature maps, and LPIPS without any download."""
import socket
import urllib.request

import pytest
import torch
import torch.nn.functional as F

from gani.models import ALEXNET_FILE, FaceParsingUNet, LPIPSAlex, MocoResNet50, load_lpips


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Any attempt to reach the network (torch.hub, urllib, raw sockets) fails loudly, and
    no cached hub download can stand in for one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_moco_features_protocol():
    torch.manual_seed(0)
    net = MocoResNet50().eval()
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        f = net(x)
        assert f.shape == (2, 2048)
        torch.testing.assert_close(f.norm(dim=1), torch.ones(2))
        # nearest resize to 224 of the raw image, no ImageNet normalisation
        torch.testing.assert_close(net(F.interpolate(x, size=224, mode="nearest")), f)
        torch.testing.assert_close(net(x[:1]), f[:1], atol=1e-6, rtol=1e-5)  # batch 1 ok


def test_parser_contracting_features_and_logits():
    torch.manual_seed(0)
    net = FaceParsingUNet().eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        feats = net.contracting_features(x)
        logits = net(x)
    assert [tuple(f.shape[1:]) for f in feats] == [
        (16, 64, 64), (32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert logits.shape == (1, 19, 64, 64)


def test_no_network_fixture_catches_a_download(no_network):
    from torchvision.models import alexnet

    with pytest.raises(AssertionError, match="network"):
        alexnet(weights="DEFAULT")


def test_lpips_missing_alexnet_file_is_named(tmp_path, no_network):
    missing = tmp_path / ALEXNET_FILE
    with pytest.raises(FileNotFoundError) as err:
        load_lpips(missing)
    assert str(missing) in str(err.value) and "download.pytorch.org" in str(err.value)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A random AlexNet in torchvision's file layout (features only: LPIPS ignores the
    classifier, which would make the file 230 MB)."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    sd = {k: v for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    path = tmp_path_factory.mktemp("ckpt") / ALEXNET_FILE
    torch.save(sd, path)
    return path, sd


def test_lpips_from_local_file(alexnet_file, no_network):
    path, sd = alexnet_file
    net = LPIPSAlex(path)
    inner = net.net
    torch.testing.assert_close(getattr(inner.net.slice1, "0").weight, sd["features.0.weight"])
    torch.testing.assert_close(getattr(inner.net.slice5, "10").bias, sd["features.10.bias"])
    from gani.safeload import load_torch_file
    from gani.models.lpips_net import package_lin_path

    lins = load_torch_file(package_lin_path())
    for i in range(5):
        torch.testing.assert_close(inner.lins[i].model[1].weight, lins[f"lin{i}.model.1.weight"])
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x, x), torch.zeros(2, 1, 1, 1))
        d = net(x, y)
    assert d.shape == (2, 1, 1, 1) and (d > 0).all()


def test_lpips_rejects_wrong_layout(tmp_path, no_network):
    path = tmp_path / ALEXNET_FILE
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="features.0.weight"):
        LPIPSAlex(path)
