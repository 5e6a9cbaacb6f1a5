"""Tests for vpr/models/deeplab.py: the state-dict layout of the paper's Cityscapes DeepLabV3+ (MobileNetV2, output
stride 16) checkpoint, spelled out by hand; strides and dilations; forward shapes; loading the weights file."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest
import torch

from vpr.errors import ConfigError
from vpr.models.deeplab import DeepLabV3PlusMobileNetV2, load_deeplab_cityscapes

# ---------------------------------------------------------------------------------------------------------------
# The checkpoint's layout, derived by hand from the DeepLabV3+ MobileNetV2 definition (num_classes=19, OS 16):
# - MobileNetV2 = stem conv 3x3 3->32 stride 2 + 17 inverted residual blocks from the table (t, c, n, s) below;
#   its last 1x1 conv (320->1280) and ImageNet classifier are dropped. Modules 0-3 (stem, blocks 1-3) are
#   ``backbone.low_level_features.<i>``, modules 4-17 ``backbone.high_level_features.<i>`` (same numbering).
# - Block with t == 1: conv.0 = [dw 3x3 conv, BN], conv.1 = 1x1 conv, conv.2 = BN.
#   Block with t != 1: conv.0 = [1x1 expand conv, BN], conv.1 = [dw 3x3 conv, BN], conv.2 = 1x1 conv, conv.3 = BN.
#   hidden = in * t. No convolution of the backbone has a bias.
# - Head: project = [1x1 conv 24->48, BN]; aspp.convs.0 = [1x1 conv 320->256, BN]; aspp.convs.1-3 = [3x3 conv
#   320->256, BN]; aspp.convs.4 = [avg pool, 1x1 conv 320->256, BN]; aspp.project = [1x1 conv 1280->256, BN];
#   classifier = [3x3 conv 304->256, BN, ReLU, 1x1 conv 256->19 WITH bias]. Only that last conv has a bias.
# ---------------------------------------------------------------------------------------------------------------

MOBILENET_V2_TABLE = [  # t (expansion), c (out channels), n (blocks), s (first stride)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def _backbone_module(i: int) -> str:
    return f"backbone.{'low' if i < 4 else 'high'}_level_features.{i}"


def expected_layout(num_classes: int = 19) -> dict[str, tuple[int, ...]]:
    exp: dict[str, tuple[int, ...]] = {"backbone.low_level_features.0.0.weight": (32, 3, 3, 3)}
    exp.update(_bn("backbone.low_level_features.0.1", 32))
    cin, i = 32, 1
    for t, c, n, _s in MOBILENET_V2_TABLE:
        for _ in range(n):
            p, h = _backbone_module(i) + ".conv", cin * t
            if t == 1:
                exp[f"{p}.0.0.weight"] = (h, 1, 3, 3)
                exp.update(_bn(f"{p}.0.1", h))
                exp[f"{p}.1.weight"] = (c, h, 1, 1)
                exp.update(_bn(f"{p}.2", c))
            else:
                exp[f"{p}.0.0.weight"] = (h, cin, 1, 1)
                exp.update(_bn(f"{p}.0.1", h))
                exp[f"{p}.1.0.weight"] = (h, 1, 3, 3)
                exp.update(_bn(f"{p}.1.1", h))
                exp[f"{p}.2.weight"] = (c, h, 1, 1)
                exp.update(_bn(f"{p}.3", c))
            cin, i = c, i + 1
    assert i == 18 and cin == 320
    h = "classifier"
    exp[f"{h}.project.0.weight"] = (48, 24, 1, 1)
    exp.update(_bn(f"{h}.project.1", 48))
    exp[f"{h}.aspp.convs.0.0.weight"] = (256, 320, 1, 1)
    exp.update(_bn(f"{h}.aspp.convs.0.1", 256))
    for b in (1, 2, 3):
        exp[f"{h}.aspp.convs.{b}.0.weight"] = (256, 320, 3, 3)
        exp.update(_bn(f"{h}.aspp.convs.{b}.1", 256))
    exp[f"{h}.aspp.convs.4.1.weight"] = (256, 320, 1, 1)
    exp.update(_bn(f"{h}.aspp.convs.4.2", 256))
    exp[f"{h}.aspp.project.0.weight"] = (256, 1280, 1, 1)
    exp.update(_bn(f"{h}.aspp.project.1", 256))
    exp[f"{h}.classifier.0.weight"] = (256, 304, 3, 3)
    exp.update(_bn(f"{h}.classifier.1", 256))
    exp[f"{h}.classifier.3.weight"] = (num_classes, 256, 1, 1)
    exp[f"{h}.classifier.3.bias"] = (num_classes,)
    return exp


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the checkpoint's names and shapes, built from the hand-written layout."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in expected_layout().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(30000, dtype=torch.long)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.1
    return sd


def save_checkpoint(path, sd, **extra) -> None:
    torch.save(
        {
            "model_state": sd,
            "optimizer_state": {},
            "scheduler_state": {},
            "cur_itrs": 30000,
            "best_score": np.float64(0.72),
            **extra,
        },
        path,
    )


# -- layout ------------------------------------------------------------------------------------------------------


def test_state_dict_matches_the_checkpoint_layout():
    expected = expected_layout()
    assert len(expected) == 356  # hand count: stem 6 + block 1: 12 + 16 blocks x 18 + head 50
    got = _shapes(DeepLabV3PlusMobileNetV2(num_classes=19, output_stride=16))
    assert sorted(got.keys() - expected.keys()) == []
    assert sorted(expected.keys() - got.keys()) == []
    assert got == expected


def test_layout_does_not_depend_on_output_stride():
    assert _shapes(DeepLabV3PlusMobileNetV2(19, output_stride=8)) == expected_layout()


# Depthwise conv of block i: conv.0.0 for the block without expansion (block 1), conv.1.0 for the others.
def _dw(model: torch.nn.Module, i: int) -> torch.nn.Conv2d:
    return model.get_submodule(f"{_backbone_module(i)}.conv.{0 if i == 1 else 1}.0")


@pytest.mark.parametrize(
    "output_stride, stride2_blocks, dilations, aspp_rates",
    [
        # OS 16: blocks 2, 4, 7 stride; block 14 (first 160-channel block) keeps stride 1 and dilation 1,
        # blocks 15-17 use dilation 2.
        (16, {2, 4, 7}, {**dict.fromkeys(range(1, 15), 1), 15: 2, 16: 2, 17: 2}, (6, 12, 18)),
        # OS 8: block 7 keeps stride 1 and dilation 1, blocks 8-14 dilation 2, blocks 15-17 dilation 4.
        (
            8,
            {2, 4},
            {**dict.fromkeys(range(1, 8), 1), **dict.fromkeys(range(8, 15), 2), 15: 4, 16: 4, 17: 4},
            (12, 24, 36),
        ),
    ],
)
def test_strides_and_dilations(output_stride, stride2_blocks, dilations, aspp_rates):
    model = DeepLabV3PlusMobileNetV2(19, output_stride)
    stem = model.get_submodule("backbone.low_level_features.0.0")
    assert (stem.stride, stem.padding, stem.dilation) == ((2, 2), (0, 0), (1, 1))
    for i in range(1, 18):
        dw = _dw(model, i)
        assert dw.groups == dw.in_channels
        assert dw.stride == ((2, 2) if i in stride2_blocks else (1, 1)), f"block {i}"
        assert dw.dilation == (dilations[i],) * 2, f"block {i}"
    for b, rate in zip((1, 2, 3), aspp_rates):
        conv = model.get_submodule(f"classifier.aspp.convs.{b}.0")
        assert conv.dilation == (rate, rate) and conv.padding == (rate, rate)
    assert model.get_submodule("classifier.classifier.0").padding == (1, 1)


def test_block_pads_its_input_before_expansion():
    """Zero padding goes in front of the 1x1 expansion, so the border passes through expansion + BN + ReLU6:
    with a constant expansion output the depthwise conv sees a constant map, corners included."""
    block = DeepLabV3PlusMobileNetV2().get_submodule("backbone.low_level_features.2").eval()  # t=6, stride 2
    with torch.no_grad():
        block.conv[0][0].weight.zero_()
        block.conv[0][1].bias.fill_(1.0)  # expansion output relu6(1) = 1 everywhere the conv reaches
        block.conv[1][0].weight.fill_(0.5)  # depthwise: 9 * 0.5 = 4.5 wherever all 9 taps see 1
        block.conv[2].weight.fill_(1.0 / block.conv[2].in_channels)
        y = block(torch.randn(1, 16, 7, 9))
    assert y.shape == (1, 24, 4, 5)
    torch.testing.assert_close(y, torch.full_like(y, 4.5), atol=1e-3, rtol=0)


def test_feature_sizes_follow_unpadded_stem():
    # Stem: 3x3 stride 2 without padding, 65x97 -> 32x48; block 2 (pad 1, stride 2) -> 16x24; blocks 4, 7 -> 4x6.
    model = DeepLabV3PlusMobileNetV2().eval()
    with torch.no_grad():
        low, high = model.backbone(torch.randn(1, 3, 65, 97))
    assert low.shape == (1, 24, 16, 24)
    assert high.shape == (1, 320, 4, 6)


# -- forward -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [16, 8])
def test_forward_gives_logits_at_input_size(output_stride):
    model = DeepLabV3PlusMobileNetV2(19, output_stride).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 19, 64, 96)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("output_stride", [4, 32, 0])
def test_bad_output_stride(output_stride):
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3PlusMobileNetV2(19, output_stride)


# -- loading -----------------------------------------------------------------------------------------------------


def _assert_holds(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(got[k], v), k


def test_load_checkpoint_file(tmp_path):
    sd = random_state()
    path = tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    save_checkpoint(path, sd)
    model = load_deeplab_cityscapes(path)
    assert isinstance(model, DeepLabV3PlusMobileNetV2) and not model.training
    _assert_holds(model, sd)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 48)).shape == (1, 19, 32, 48)


def test_load_strips_dataparallel_prefix_and_takes_a_bare_state_dict(tmp_path):
    sd = random_state(1)
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    _assert_holds(load_deeplab_cityscapes(str(path)), sd)


def test_renamed_key_is_refused(tmp_path):
    sd = random_state()
    sd["classifier.classifier.3.bias_renamed"] = sd.pop("classifier.classifier.3.bias")
    path = tmp_path / "renamed.pth"
    save_checkpoint(path, sd)
    with pytest.raises(ConfigError) as e:
        load_deeplab_cityscapes(path)
    msg = str(e.value)
    assert f"guidance.weights={path}" in msg
    assert "classifier.classifier.3.bias_renamed" in msg and "missing" in msg and "unexpected" in msg
    assert re.search(r"classifier\.classifier\.3\.bias\b(?!_)", msg)


def test_wrong_shape_is_refused(tmp_path):
    sd = random_state()
    sd["classifier.classifier.3.weight"] = torch.zeros(21, 256, 1, 1)
    sd["classifier.classifier.3.bias"] = torch.zeros(21)
    path = tmp_path / "voc.pth"
    save_checkpoint(path, sd)
    with pytest.raises(ConfigError) as e:
        load_deeplab_cityscapes(path)
    msg = str(e.value)
    assert f"guidance.weights={path}" in msg and "classifier.classifier.3.weight" in msg and "(21, 256, 1, 1)" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    with pytest.raises(ConfigError, match=re.escape(f"guidance.weights={path}: no such file")) as e:
        load_deeplab_cityscapes(path)
    assert "weight_semantic_guidance" in str(e.value)


def test_file_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "objects.pth"
    save_checkpoint(path, random_state(), opts=argparse.Namespace(lr=0.1))
    with pytest.raises(ConfigError, match="Python objects") as e:
        load_deeplab_cityscapes(path)
    assert f"guidance.weights={path}" in str(e.value) and "argparse.Namespace" in str(e.value)


def test_file_that_is_not_a_torch_file_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("<html>404</html>")
    with pytest.raises(ConfigError, match=re.escape(f"guidance.weights={path} is not a readable torch file")):
        load_deeplab_cityscapes(path)


def test_file_without_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "empty.pth"
    torch.save({"cur_itrs": 3}, path)
    with pytest.raises(ConfigError, match="holds no state dict"):
        load_deeplab_cityscapes(path)
