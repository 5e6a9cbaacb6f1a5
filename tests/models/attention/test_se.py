"""Tests for vpr/models/attention/se.py."""

from __future__ import annotations

import math

import pytest
import torch

from vpr.models.attention.se import SE

C, R = 64, 16
SIZES = [(7, 9), (5, 5), (1, 1), (3, 8), (30, 40)]


@pytest.mark.parametrize("size", SIZES)
def test_shape(size: tuple[int, int]) -> None:
    x = torch.randn(2, C, *size)
    out = SE(C, R)(x)
    assert out.features.shape == x.shape
    assert out.weights is None and out.mask is None


def test_parameter_count() -> None:
    # two bias-free Linear layers: C x C/r and C/r x C
    assert sum(p.numel() for p in SE(C, R).parameters()) == 2 * C * (C // R)
    assert sum(p.numel() for p in SE(512, 16).parameters()) == 2 * 512 * 32


def test_matches_hand_computation_on_non_square_map() -> None:
    torch.manual_seed(0)
    se = SE(C, R).eval()
    x = torch.randn(2, C, 3, 5)
    with torch.no_grad():
        out = se(x).features
    w1 = se.excitation[0].weight.detach().tolist()  # (C/r, C)
    w2 = se.excitation[2].weight.detach().tolist()  # (C, C/r)
    for b in range(2):
        mean = [sum(float(x[b, c, i, j]) for i in range(3) for j in range(5)) / 15 for c in range(C)]
        hidden = [max(0.0, sum(w1[h][c] * mean[c] for c in range(C))) for h in range(C // R)]
        for c in range(C):
            gate = 1.0 / (1.0 + math.exp(-sum(w2[c][h] * hidden[h] for h in range(C // R))))
            torch.testing.assert_close(out[b, c], x[b, c] * gate, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_parameter(check_gradients) -> None:
    torch.manual_seed(0)
    se = SE(C, R).train()
    x = torch.randn(2, C, 7, 9)
    (se(x).features * torch.randn_like(x)).sum().backward()
    check_gradients(se)


def test_reduction_too_large() -> None:
    with pytest.raises(ValueError, match="reduction"):
        SE(8, 16)
