"""Tests for vpr/models/backbones.py: output shapes, where VGG16 is cut, which layers train, weight loading."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torchvision
from torch import nn

from vpr.models.backbones import (
    ResNetBackbone,
    VGG16Backbone,
    build_backbone,
    torchvision_weights_cache_dir,
)

# Hand count of VGG16 convolutions per block (in_channels, out_channels), kernel 3x3, with bias.
VGG16_BLOCKS = {
    "conv1": [(3, 64), (64, 64)],
    "conv2": [(64, 128), (128, 128)],
    "conv3": [(128, 256), (256, 256), (256, 256)],
    "conv4": [(256, 512), (512, 512), (512, 512)],
    "conv5": [(512, 512), (512, 512), (512, 512)],
}


def _vgg_params(blocks: list[str]) -> int:
    return sum(cin * cout * 9 + cout for b in blocks for cin, cout in VGG16_BLOCKS[b])


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _frozen(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if not p.requires_grad)


def _convs(module: nn.Module, trainable: bool) -> int:
    return sum(1 for m in module.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad == trainable)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and no network: any connection attempt fails at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return tmp_path / "torch_home"


def test_imagenet_constants():
    from vpr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    assert IMAGENET_MEAN == pytest.approx((0.485, 0.456, 0.406))
    assert IMAGENET_STD == pytest.approx((0.229, 0.224, 0.225))


def test_vgg16_shape_and_cut_before_relu():
    torch.manual_seed(0)
    net = build_backbone("vgg16", pretrained=False, train_from="conv5")
    assert net.out_channels == 512 and net.stride == 16
    # 13 convs, 12 ReLUs (conv5_3's dropped), 4 max-pools (pool5 dropped): ends with conv5_3 itself.
    layers = list(net.features)
    assert sum(isinstance(m, nn.Conv2d) for m in layers) == 13
    assert sum(isinstance(m, nn.ReLU) for m in layers) == 12
    assert sum(isinstance(m, nn.MaxPool2d) for m in layers) == 4
    assert isinstance(layers[-1], nn.Conv2d) and layers[-1].out_channels == 512
    y = net(torch.randn(2, 3, 64, 96))
    assert y.shape == (2, 512, 4, 6)
    assert (y < 0).any()  # a ReLU at the end would make every value >= 0


@pytest.mark.parametrize(
    ("train_from", "trainable_blocks"),
    [
        ("conv5", ["conv5"]),
        ("conv3", ["conv3", "conv4", "conv5"]),
        (3, ["conv3", "conv4", "conv5"]),
        ("conv1", ["conv1", "conv2", "conv3", "conv4", "conv5"]),
        ("all", ["conv1", "conv2", "conv3", "conv4", "conv5"]),
        ("none", []),
    ],
)
def test_vgg16_trainable_layers(train_from, trainable_blocks):
    net = VGG16Backbone(pretrained=False, train_from=train_from)
    frozen_blocks = [b for b in VGG16_BLOCKS if b not in trainable_blocks]
    assert _trainable(net) == _vgg_params(trainable_blocks)
    assert _frozen(net) == _vgg_params(frozen_blocks)
    assert _convs(net, trainable=True) == sum(len(VGG16_BLOCKS[b]) for b in trainable_blocks)
    assert _convs(net, trainable=False) == sum(len(VGG16_BLOCKS[b]) for b in frozen_blocks)


def test_vgg16_conv5_training_leaves_frozen_layers_without_grad():
    net = VGG16Backbone(pretrained=False, train_from="conv5")
    net(torch.randn(1, 3, 32, 32)).sum().backward()
    conv1_1, conv5_3 = net.features[0], net.features[28]
    assert conv1_1.weight.grad is None
    assert conv5_3.weight.grad is not None and conv5_3.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("depth", "cut_at", "channels", "hw"),
    [
        (18, "layer3", 256, (4, 6)),
        (18, "layer4", 512, (2, 3)),
        (50, "layer3", 1024, (4, 6)),
        (50, "layer4", 2048, (2, 3)),
    ],
)
def test_resnet_shapes(depth, cut_at, channels, hw):
    net = build_backbone(f"resnet{depth}", pretrained=False, cut_at=cut_at)
    assert net.out_channels == channels
    assert net.stride == {"layer3": 16, "layer4": 32}[cut_at]
    net.eval()
    with torch.no_grad():
        y = net(torch.randn(1, 3, 64, 96))
    assert y.shape == (1, channels, *hw)
    assert ("layer4" in net.stages) == (cut_at == "layer4")


def _resnet18_layer_params(cin: int, cout: int) -> tuple[int, int]:
    """(parameters, convs) of one ResNet-18 stage of two BasicBlocks, the first with a strided downsample."""
    bn = 2 * cout
    block1 = cin * cout * 9 + bn + cout * cout * 9 + bn + cin * cout + bn  # conv, conv, 1x1 downsample
    block2 = 2 * (cout * cout * 9 + bn)
    return block1 + block2, 5


def test_resnet18_train_from_layer3():
    net = ResNetBackbone(depth=18, pretrained=False, cut_at="layer3", train_from="layer3")
    params, convs = _resnet18_layer_params(128, 256)
    assert _trainable(net) == params
    assert _convs(net, trainable=True) == convs
    # stem conv (1) + layer1 (4) + layer2 (4 + downsample) stay frozen
    assert _convs(net, trainable=False) == 1 + 4 + 5


def test_resnet18_train_from_layer2_cut_layer4():
    net = ResNetBackbone(depth=18, pretrained=False, cut_at="layer4", train_from=2)
    expected = sum(_resnet18_layer_params(cin, cout)[0] for cin, cout in [(64, 128), (128, 256), (256, 512)])
    assert _trainable(net) == expected
    assert _convs(net, trainable=False) == 1 + 4


def test_resnet_frozen_batchnorm_stays_in_eval_mode():
    net = ResNetBackbone(depth=18, pretrained=False, cut_at="layer3", train_from="layer3")
    net.train()
    assert not net.stages["layer2"][0].bn1.training  # frozen: running statistics must not drift
    assert net.stages["layer3"][0].bn1.training
    before = net.stages["layer1"][0].bn1.running_mean.clone()
    net(torch.randn(2, 3, 32, 32) * 5 + 3)
    assert torch.equal(net.stages["layer1"][0].bn1.running_mean, before)


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="train_from"):
        VGG16Backbone(pretrained=False, train_from="conv6")
    with pytest.raises(ValueError, match="ambiguous"):
        VGG16Backbone(pretrained=False, train_from=None)
    with pytest.raises(ValueError, match="train_from"):
        ResNetBackbone(depth=18, pretrained=False, cut_at="layer3", train_from="layer4")
    with pytest.raises(ValueError, match="cut_at"):
        ResNetBackbone(depth=18, pretrained=False, cut_at="layer2")
    with pytest.raises(ValueError, match="vgg16"):
        build_backbone("alexnet", pretrained=False)


def test_pretrained_without_network_raises_helpful_error(offline):
    before = socket.getdefaulttimeout()
    with pytest.raises(RuntimeError) as info:
        build_backbone("vgg16", pretrained=True)
    message = str(info.value)
    assert "could not be downloaded" in message
    cache_dir = os.path.join(str(offline), "hub", "checkpoints")
    assert cache_dir in message  # where to place the file by hand
    assert "https://download.pytorch.org/models/vgg16" in message
    assert "pretrained=false" in message
    assert socket.getdefaulttimeout() == before  # the temporary download timeout is restored


def test_pretrained_error_for_resnet(offline):
    with pytest.raises(RuntimeError, match="could not be downloaded"):
        build_backbone("resnet18", pretrained=True)


def test_pretrained_loads_file_placed_in_cache(offline):
    """Following the error message (copy the file into the cache) works, without any network."""
    torch.manual_seed(1)
    source = ResNetBackbone(depth=18, pretrained=False, cut_at="layer4", train_from="all")
    state = {}
    for stage_name, stage in source.stages.items():
        for key, value in stage.state_dict().items():
            if stage_name == "conv1":  # stem Sequential(conv1, bn1, relu, maxpool) -> torchvision names
                key = {"0": "conv1", "1": "bn1"}[key.split(".")[0]] + "." + key.split(".", 1)[1]
            else:
                key = f"{stage_name}.{key}"
            state[key] = value.clone()
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    assert torchvision_weights_cache_dir() == os.path.join(str(offline), "hub", "checkpoints")
    os.makedirs(torchvision_weights_cache_dir())
    torch.save(state, os.path.join(torchvision_weights_cache_dir(), "resnet18-f37072fd.pth"))

    loaded = build_backbone("resnet18", pretrained=True, cut_at="layer3")
    assert torch.equal(loaded.stages["conv1"][0].weight, state["conv1.weight"])
    assert torch.equal(loaded.stages["layer3"][1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(loaded.stages["layer2"][0].bn1.running_var, state["layer2.0.bn1.running_var"])


def test_vgg16_pretrained_takes_features_from_cached_file(offline):
    torch.manual_seed(2)
    source = VGG16Backbone(pretrained=False, train_from="all")
    # torchvision's file names the conv layers features.<index>; pool5 (index 30) has no parameters.
    state = {f"features.{k}": v.clone() for k, v in source.features.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)  # extra keys of the full model are ignored
    os.makedirs(torchvision_weights_cache_dir())
    torch.save(state, os.path.join(torchvision_weights_cache_dir(), "vgg16-397923af.pth"))
    loaded = VGG16Backbone(pretrained=True)
    assert torch.equal(loaded.features[28].weight, state["features.28.weight"])
    assert torch.equal(loaded.features[0].bias, state["features.0.bias"])


def test_weights_from_a_local_file(tmp_path):
    """backbone.weights_path: torchvision's state dict from a file (a machine without internet), no download."""
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    net = build_backbone(
        "resnet18", pretrained=True, cut_at="layer3", weights_path=str(tmp_path / "resnet18-f37072fd.pth")
    )
    torch.testing.assert_close(net.stages["conv1"][0].weight, reference.conv1.weight)
    torch.testing.assert_close(net.stages["layer3"][0].conv1.weight, reference.layer3[0].conv1.weight)
    assert net.pretrained and net.tag == "resnet18-layer3"
    with pytest.raises(ValueError, match=r"backbone.weights_path=.*nothing.pth: no such file"):
        build_backbone("resnet18", weights_path=str(tmp_path / "nothing.pth"))
    with pytest.raises(ValueError, match=r"does not fit torchvision's resnet50"):
        build_backbone("resnet50", weights_path=str(tmp_path / "resnet18-f37072fd.pth"))
