"""Tests for vpr/models/attention/base.py: AttentionOutput, Identity, Combined."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from vpr.models.attention.base import AttentionOutput, Combined, Identity, hidden_channels
from vpr.models.attention.deattention import DeAttention
from vpr.models.attention.se import SE


class _FixedWeights(nn.Module):
    """Stub attention: features * scale, and a fixed weight map / mask."""

    def __init__(self, scale: float, weights: Tensor | None, mask: Tensor | None) -> None:
        super().__init__()
        self.scale, self.w, self.m = scale, weights, mask

    def forward(self, x: Tensor) -> AttentionOutput:
        return AttentionOutput(x * self.scale, self.w, self.m)


def test_attention_output_fields() -> None:
    out = AttentionOutput(torch.zeros(1), None, None)
    assert AttentionOutput._fields == ("features", "weights", "mask")
    features, weights, mask = out
    assert weights is None and mask is None and features.shape == (1,)


def test_identity_passes_through() -> None:
    x = torch.randn(2, 64, 7, 9)
    out = Identity(channels=64)(x)
    assert isinstance(out, AttentionOutput)
    assert out.features is x and out.weights is None and out.mask is None
    assert sum(p.numel() for p in Identity().parameters()) == 0


def test_combined_chains_features_and_takes_weights_from_the_producer() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 64, 5, 6)
    deatt, se = DeAttention(64, apply="aggregation").eval(), SE(64).eval()
    out = Combined([deatt, se]).eval()(x)
    mask = deatt(x).mask
    # aggregation mode: de-attention leaves the features alone, SE scales them, the mask becomes the weights
    torch.testing.assert_close(out.features, se(x).features)
    torch.testing.assert_close(out.weights, mask)
    torch.testing.assert_close(out.mask, mask)


def test_combined_feature_mode_feeds_masked_features_to_se() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 64, 5, 6)
    deatt, se = DeAttention(64, apply="features").eval(), SE(64).eval()
    out = Combined([deatt, se])(x)
    mask = deatt(x).mask
    torch.testing.assert_close(out.features, se(x * mask).features)
    assert out.weights is None
    torch.testing.assert_close(out.mask, mask)


def test_combined_multiplies_weights_and_keeps_first_mask() -> None:
    x = torch.ones(1, 2, 2, 2)
    w1 = torch.tensor([[[[0.5, 1.0], [2.0, 4.0]]]])
    w2 = torch.tensor([[[[2.0, 3.0], [0.5, 0.25]]]])
    m1, m2 = torch.full((1, 1, 2, 2), 0.1), torch.full((1, 1, 2, 2), 0.9)
    stages = [_FixedWeights(2.0, w1, m1), _FixedWeights(3.0, None, None), _FixedWeights(1.0, w2, m2)]
    out = Combined(stages)(x)
    torch.testing.assert_close(out.features, torch.full((1, 2, 2, 2), 6.0))
    torch.testing.assert_close(out.weights, torch.tensor([[[[1.0, 3.0], [1.0, 1.0]]]]))
    assert out.mask is m1


def test_combined_errors() -> None:
    with pytest.raises(ValueError, match="at least one module"):
        Combined([])

    class _Bad(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x

    with pytest.raises(TypeError, match="AttentionOutput"):
        Combined([_Bad()])(torch.zeros(1, 1, 1, 1))


def test_hidden_channels() -> None:
    assert hidden_channels(64, 16, "x") == 4
    assert hidden_channels(512, 16, "x") == 32
    with pytest.raises(ValueError, match="reduction"):
        hidden_channels(8, 16, "SE")
