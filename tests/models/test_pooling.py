"""Tests for vpr/models/heads/pooling.py with hand-computed values on a 2-channel, 1 x 2 feature map."""

from __future__ import annotations

import math

import pytest
import torch

from vpr.models.heads.pooling import AvgPool, GeM, MaxPool


def _map(channel0: list[float], channel1: list[float]) -> torch.Tensor:
    """(1, 2, 1, 2) feature map with the given values at the two locations."""
    return torch.tensor([[[channel0], [channel1]]])


def _unit(values: list[float]) -> torch.Tensor:
    n = math.sqrt(sum(v * v for v in values))
    return torch.tensor([[v / n for v in values]])


def _weights(w0: float, w1: float) -> torch.Tensor:
    return torch.tensor([[[[w0, w1]]]])


def test_avg_pool_hand_values():
    head = AvgPool(dim=2)
    x = _map([1.0, 3.0], [2.0, 2.0])
    assert head.out_dim == 2
    torch.testing.assert_close(head(x), _unit([2.0, 2.0]))
    # weights (1, 0): only the first location counts -> (1, 2)
    torch.testing.assert_close(head(x, _weights(1.0, 0.0)), _unit([1.0, 2.0]))
    # weights (1, 3): (1*1 + 3*3) / 4 = 2.5, (2 + 6) / 4 = 2
    torch.testing.assert_close(head(x, _weights(1.0, 3.0)), _unit([2.5, 2.0]))


def test_max_pool_hand_values():
    head = MaxPool(dim=2)
    x = _map([1.0, 3.0], [4.0, 2.0])
    torch.testing.assert_close(head(x), _unit([3.0, 4.0]))
    # weights (1, 0.5) scale the features: channel 0 (1, 1.5) -> 1.5, channel 1 (4, 1) -> 4
    torch.testing.assert_close(head(x, _weights(1.0, 0.5)), _unit([1.5, 4.0]))


def test_gem_hand_values():
    head = GeM(dim=2, p=3.0, learn_p=False)
    x = _map([1.0, 2.0], [3.0, 3.0])
    # channel 0: ((1 + 8) / 2)^(1/3); channel 1: ((27 + 27) / 2)^(1/3) = 3
    torch.testing.assert_close(head(x), _unit([4.5 ** (1 / 3), 3.0]))
    # weights (1, 3): channel 0: ((1 + 3 * 8) / 4)^(1/3) = 6.25^(1/3); channel 1 stays 3
    torch.testing.assert_close(head(x, _weights(1.0, 3.0)), _unit([6.25 ** (1 / 3), 3.0]))


def test_gem_p1_is_average_and_clamps_negatives():
    x = _map([1.0, 3.0], [2.0, 2.0])
    torch.testing.assert_close(GeM(dim=2, p=1.0)(x), AvgPool(dim=2)(x))
    # negative responses are clamped to eps before the power: channel 0 (-5, 2) -> (~0 + 8) / 2 = 4
    y = GeM(dim=2, p=3.0)(_map([-5.0, 2.0], [1.0, 1.0]))
    torch.testing.assert_close(y, _unit([4.0 ** (1 / 3), 1.0]), atol=1e-5, rtol=1e-5)


def test_gem_p_is_learnable():
    head = GeM(dim=4)
    assert isinstance(head.p, torch.nn.Parameter) and head.p.item() == pytest.approx(3.0)
    x = torch.rand(2, 4, 3, 3) + 0.1
    (head(x) * torch.randn(2, 4)).sum().backward()
    assert head.p.grad is not None and head.p.grad.abs().item() > 0
    assert "p" not in dict(GeM(dim=4, learn_p=False).named_parameters())


@pytest.mark.parametrize("cls", [AvgPool, MaxPool, GeM])
def test_common_interface(cls):
    head = cls(dim=8)
    x = torch.rand(3, 8, 4, 5)
    out = head(x)
    assert out.shape == (3, 8) and head.out_dim == 8
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(head(x, torch.ones(3, 1, 4, 5)), out)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        head(x, torch.ones(3, 1, 4, 4))


def test_gem_all_zero_weights_stay_finite():
    head = GeM(dim=2)
    x = torch.rand(1, 2, 1, 2, requires_grad=True)
    head(x, torch.zeros(1, 1, 1, 2)).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.p.grad).all()


@pytest.mark.parametrize("cls", [AvgPool, MaxPool, GeM])
def test_bf16_autocast_pools_in_float32(cls):
    """Under bf16 mixed precision (CPU autocast runs the GPU recipe's casts) a head given the backbone's bf16
    features pools them in float32: the descriptor of those same values pooled in plain float32."""
    torch.manual_seed(0)
    head = cls(dim=64)
    x = torch.rand(2, 64, 5, 6).to(torch.bfloat16)  # features as a backbone under autocast gives them
    weights = torch.rand(2, 1, 5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(x, weights)
    plain = head(x.float(), weights)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("p", [0.0, -1.0])
def test_a_gem_exponent_that_is_not_positive_is_refused(p):
    # p = 0 gave every image the same descriptor: mean(x^0)^(1/0) = 1 in every channel
    with pytest.raises(ValueError, match=r"\(head\.p\): GeM's exponent must be > 0"):
        GeM(dim=2, p=p)
