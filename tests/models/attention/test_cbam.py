"""Tests for vpr/models/attention/cbam.py."""

from __future__ import annotations

import math

import pytest
import torch

from vpr.models.attention.cbam import CBAM

C, R = 64, 16
SIZES = [(7, 9), (5, 5), (1, 1), (3, 8), (30, 40)]


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


@pytest.mark.parametrize("to_aggregation", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_shape(size: tuple[int, int], to_aggregation: bool) -> None:
    x = torch.randn(2, C, *size)
    out = CBAM(C, R, spatial_to_aggregation=to_aggregation).train()(x)
    assert out.features.shape == x.shape
    assert out.mask.shape == (2, 1, *size)
    assert bool(((out.mask > 0) & (out.mask < 1)).all())
    if to_aggregation:
        assert out.weights is out.mask
    else:
        assert out.weights is None


def test_parameter_count() -> None:
    h, k = C // R, 7
    mlp = C * h + h + h * C + C  # shared MLP with biases
    spatial = 2 * k * k + 2  # conv 2 -> 1 without bias, BatchNorm2d(1) weight + bias
    assert sum(p.numel() for p in CBAM(C, R, k).parameters()) == mlp + spatial


def test_channel_gate_by_hand() -> None:
    torch.manual_seed(0)
    cbam = CBAM(C, R).eval()
    x = torch.randn(2, C, 3, 5)
    with torch.no_grad():
        gate = cbam.channel_gate(x)
    assert gate.shape == (2, C, 1, 1)
    w1, b1 = cbam.channel_mlp[0].weight.detach().tolist(), cbam.channel_mlp[0].bias.detach().tolist()
    w2, b2 = cbam.channel_mlp[2].weight.detach().tolist(), cbam.channel_mlp[2].bias.detach().tolist()

    def mlp(v: list[float]) -> list[float]:
        hidden = [max(0.0, b1[j] + sum(w1[j][c] * v[c] for c in range(C))) for j in range(C // R)]
        return [b2[c] + sum(w2[c][j] * hidden[j] for j in range(C // R)) for c in range(C)]

    for b in range(2):
        values = [[float(x[b, c, i, j]) for i in range(3) for j in range(5)] for c in range(C)]
        avg = mlp([sum(v) / 15 for v in values])
        mx = mlp([max(v) for v in values])
        for c in range(C):
            assert abs(float(gate[b, c, 0, 0]) - _sigmoid(avg[c] + mx[c])) < 1e-5


def test_spatial_gate_uses_max_then_mean_with_same_padding() -> None:
    # conv weight picks the centre tap of the max channel (channel 0) and twice the one of the mean
    # channel (channel 1); BatchNorm in eval mode with fresh statistics divides by sqrt(1 + eps).
    torch.manual_seed(0)
    cbam = CBAM(C, R).eval()
    with torch.no_grad():
        cbam.spatial_conv.weight.zero_()
        cbam.spatial_conv.weight[0, 0, 3, 3] = 1.0
        cbam.spatial_conv.weight[0, 1, 3, 3] = 2.0
    x = torch.randn(2, C, 4, 6)
    with torch.no_grad():
        gate = cbam.spatial_gate(x)
    scale = 1.0 / math.sqrt(1.0 + cbam.spatial_bn.eps)
    for b in range(2):
        for i in range(4):
            for j in range(6):
                column = [float(x[b, c, i, j]) for c in range(C)]
                expected = _sigmoid(scale * (max(column) + 2.0 * sum(column) / C))
                assert abs(float(gate[b, 0, i, j]) - expected) < 1e-5


def test_spatial_batchnorm_running_mean_moves_by_one_hundredth() -> None:
    # CBAM's reference code gives the spatial gate's BatchNorm momentum 0.01: after one training batch from fresh
    # statistics the running mean is 0.01 * the batch mean of the conv output, computed here by a loop.
    torch.manual_seed(0)
    cbam = CBAM(C, R).train()
    x = torch.randn(2, C, 4, 6)
    with torch.no_grad():
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        conv = cbam.spatial_conv(pooled)
        cbam.spatial_gate(x)
    values = [float(conv[b, 0, i, j]) for b in range(2) for i in range(4) for j in range(6)]
    assert abs(float(cbam.spatial_bn.running_mean[0]) - 0.01 * sum(values) / len(values)) < 1e-6


def test_forward_is_channel_then_spatial_multiplicative() -> None:
    torch.manual_seed(0)
    cbam = CBAM(C, R).eval()
    x = torch.randn(2, C, 5, 7)
    refined = x * cbam.channel_gate(x)
    spatial = cbam.spatial_gate(refined)
    out = cbam(x)
    torch.testing.assert_close(out.features, refined * spatial)
    torch.testing.assert_close(out.mask, spatial)
    cbam.spatial_to_aggregation = True
    out = cbam(x)
    torch.testing.assert_close(out.features, refined)
    torch.testing.assert_close(out.weights, spatial)


@pytest.mark.parametrize("to_aggregation", [False, True])
def test_gradients_reach_every_parameter(to_aggregation: bool, check_gradients) -> None:
    torch.manual_seed(0)
    cbam = CBAM(C, R, spatial_to_aggregation=to_aggregation).train()
    x = torch.randn(2, C, 7, 9)
    out = cbam(x)
    loss = (out.features * torch.randn_like(x)).sum() + (out.mask * torch.randn_like(out.mask)).sum()
    loss.backward()
    check_gradients(cbam)


def test_spatial_gate_only_matters_as_aggregation_weights(pool, change) -> None:
    """The spatial gate multiplied into the features is erased by NetVLAD's per-location L2 norm
    (docs/method.md section 5); passed as aggregation weights it changes the descriptor."""
    torch.manual_seed(0)
    cbam = CBAM(C, R, spatial_to_aggregation=True).train()
    with torch.no_grad():
        cbam.spatial_bn.weight.fill_(5.0)  # a sharp, clearly non-uniform gate
        x = torch.randn(2, C, 7, 9)
        agg = cbam(x)  # features = channel-refined x, weights = spatial gate
        channel_only = pool(agg.features)
        assert float(agg.mask.std()) > 0.2
        in_aggregation = change(pool(agg.features, agg.weights), channel_only)
        cbam.spatial_to_aggregation = False
        in_features = change(pool(cbam(x).features), channel_only)
    assert in_aggregation > 0.05
    assert in_features < 1e-5


def test_even_kernel_rejected() -> None:
    with pytest.raises(ValueError, match="odd"):
        CBAM(C, R, kernel_size=6)
