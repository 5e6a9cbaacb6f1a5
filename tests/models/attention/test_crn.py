"""Tests for vpr/models/attention/crn.py."""

from __future__ import annotations

import pytest
import torch

from vpr.models.attention.crn import CRN

C = 64
SIZES = [(7, 9), (5, 5), (1, 1), (2, 3), (30, 40), (31, 41)]


@pytest.mark.parametrize("size", SIZES)
def test_mask_is_exactly_on_the_input_grid(size: tuple[int, int]) -> None:
    x = torch.randn(2, C, *size)
    out = CRN(C)(x)
    assert out.features is x  # CRN never touches the features, it weights the aggregation
    assert out.weights.shape == (2, 1, *size)
    assert out.mask is out.weights


def test_parameter_count() -> None:
    convs = (C * 3 * 3 * 32 + 32) + (C * 5 * 5 * 32 + 32) + (C * 7 * 7 * 20 + 20)
    final = 84 + 1
    assert sum(p.numel() for p in CRN(C).parameters()) == convs + final


def test_starts_nearly_constant_and_keeps_a_trained_netvlad(pool, change) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, C, 7, 9)
    with torch.no_grad():
        m = CRN(C)(x).weights
        # with exactly constant weights (init_std=0) the descriptor is that of plain NetVLAD, because
        # intra-normalisation removes a constant factor
        exact = CRN(C, init_std=0.0)(x).weights
    assert float((m - 1.0).abs().max()) < 0.05
    torch.testing.assert_close(exact, torch.ones_like(exact))
    assert change(pool(x, exact), pool(x)) < 1e-5


def test_weights_change_the_descriptor(pool, change) -> None:
    torch.manual_seed(0)
    crn = CRN(C, init_std=0.3)
    x = torch.randn(2, C, 7, 9)
    with torch.no_grad():
        m = crn(x).weights
    assert float(m.min()) >= 0.0
    assert float(m.std()) > 0.1
    assert change(pool(x, m), pool(x)) > 0.02


def test_gradients_reach_every_parameter(check_gradients) -> None:
    torch.manual_seed(0)
    crn = CRN(C).train()
    x = torch.randn(2, C, 7, 9)
    out = crn(x)
    (out.weights * torch.randn_like(out.weights)).sum().backward()
    check_gradients(crn)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="initial_weight"):
        CRN(C, initial_weight=0.0)


@pytest.mark.parametrize(("size", "low_res"), [((7, 9), (4, 5)), ((30, 40), (15, 20)), ((1, 1), (1, 1))])
def test_context_is_computed_at_half_resolution(size: tuple[int, int], low_res: tuple[int, int]) -> None:
    # avg-pool 3x3 stride 2 padding 1 gives ceil(H/2) x ceil(W/2)
    crn = CRN(C)
    seen: list[tuple[int, ...]] = []
    crn.accumulate.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    crn(torch.randn(2, C, *size))
    assert seen == [(2, 1, *low_res)]
