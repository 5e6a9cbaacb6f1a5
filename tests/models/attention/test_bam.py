"""Tests for vpr/models/attention/bam.py."""

from __future__ import annotations

import pytest
import torch

from vpr.models.attention.bam import BAM

C, R = 64, 16
SIZES = [(7, 9), (5, 5), (1, 1), (3, 8), (30, 40)]


@pytest.mark.parametrize("combine", ["sum", "product"])
@pytest.mark.parametrize("size", SIZES)
def test_shape(size: tuple[int, int], combine: str) -> None:
    x = torch.randn(2, C, *size)
    out = BAM(C, R, combine=combine).train()(x)
    assert out.features.shape == x.shape
    assert out.weights is None
    assert out.mask.shape == (2, 1, *size)


def test_parameter_count() -> None:
    h = C // R
    channel = (C * h + h) + 2 * h + (h * C + C)  # Linear, BatchNorm1d, Linear
    spatial = (C * h + h) + 2 * h  # 1x1 conv + BN
    spatial += 2 * ((9 * h * h + h) + 2 * h)  # two dilated 3x3 convs + BN
    spatial += h + 1  # 1x1 conv -> 1 channel
    assert sum(p.numel() for p in BAM(C, R).parameters()) == channel + spatial


def test_channel_pooling_covers_every_column_of_a_non_square_map() -> None:
    """The paper's code pools with a square H x H kernel and misses columns W > H; the mean must use all H x W."""
    torch.manual_seed(0)
    bam = BAM(C, R).eval()
    height, width = 3, 8
    x = torch.randn(2, C, height, width)
    x[:, :, :, height:] += 5.0  # columns a square H x H window would ignore
    hand_mean = torch.zeros(2, C)
    for b in range(2):
        for c in range(C):
            hand_mean[b, c] = sum(float(x[b, c, i, j]) for i in range(height) for j in range(width)) / (height * width)
    with torch.no_grad():
        got = bam.channel_attention(x)[:, :, 0, 0]
        expected = bam.channel_mlp(hand_mean)
        square_window = bam.channel_mlp(x[:, :, :, :height].mean(dim=(2, 3)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert float((got - square_window).abs().max()) > 1e-2  # the buggy pooling would be visibly different


def test_output_formula_and_combine_modes() -> None:
    torch.manual_seed(0)
    bam = BAM(C, R).eval()
    x = torch.randn(2, C, 5, 7)
    with torch.no_grad():
        mc = bam.channel_attention(x)  # (B, C, 1, 1)
        ms = bam.spatial_attention(x)  # (B, 1, H, W)
        summed = bam(x)
        bam.combine = "product"
        product = bam(x)
    assert mc.shape == (2, C, 1, 1) and ms.shape == (2, 1, 5, 7)
    torch.testing.assert_close(summed.features, (1 + torch.sigmoid(mc + ms)) * x)
    torch.testing.assert_close(product.features, (1 + torch.sigmoid(mc * ms)) * x)
    torch.testing.assert_close(summed.mask, torch.sigmoid(ms))
    assert float((summed.features - product.features).abs().max()) > 1e-2
    # residual form: the per-element factor lies in (1, 2)
    ratio = summed.features / x
    assert bool(((ratio > 1) & (ratio < 2)).all())


@pytest.mark.parametrize("combine", ["sum", "product"])
def test_gradients_reach_every_parameter(combine: str, check_gradients) -> None:
    torch.manual_seed(0)
    bam = BAM(C, R, combine=combine).train()
    x = torch.randn(2, C, 7, 9)
    (bam(x).features * torch.randn_like(x)).sum().backward()
    check_gradients(bam)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="combine"):
        BAM(C, R, combine="max")
    with pytest.raises(ValueError, match="reduction"):
        BAM(8, 16)
