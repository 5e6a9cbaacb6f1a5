"""Tests for vpr/models/attention/deattention.py: the mask head, its target and its loss."""

from __future__ import annotations

import math

import pytest
import torch

from vpr.models.attention.deattention import DeAttention, _PaddedBranch, deattention_loss

C = 64
SIZES = [(7, 9), (5, 5), (4, 4), (3, 3), (1, 1), (2, 5), (30, 40)]


@pytest.mark.parametrize("apply", ["aggregation", "features"])
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("size", SIZES)
def test_shapes_and_mask_range(size: tuple[int, int], version: int, apply: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, C, *size)
    out = DeAttention(C, version=version, apply=apply).train()(x)
    assert out.features.shape == x.shape
    assert out.mask.shape == (2, 1, *size)
    assert bool(((out.mask > 0) & (out.mask < 1)).all())
    if apply == "aggregation":
        assert out.features is x
        assert out.weights.shape == (2, 1, *size)
    else:
        assert out.weights is None


def test_outputs_per_version_and_mode() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, C, 5, 6)
    module = DeAttention(C).eval()
    with torch.no_grad():
        mask = module.compute_mask(x)
        results = {}
        for version in (1, 2):
            for apply in ("aggregation", "features"):
                module.version, module.apply = version, apply
                results[version, apply] = module(x)
    torch.testing.assert_close(results[1, "aggregation"].weights, mask)
    torch.testing.assert_close(results[2, "aggregation"].weights, 1 + mask)
    torch.testing.assert_close(results[1, "features"].features, x * mask)
    torch.testing.assert_close(results[2, "features"].features, x + x * mask)
    for out in results.values():
        torch.testing.assert_close(out.mask, mask)


def test_parameter_count() -> None:
    branches = sum(C * k * k * n + n + 2 * n for k, n in [(3, 32), (5, 32), (7, 20)])  # conv + BatchNorm
    fuse = (84 + 1) + 2  # 1x1 conv 84 -> 1, BatchNorm2d(1)
    assert sum(p.numel() for p in DeAttention(C).parameters()) == branches + fuse


@pytest.mark.parametrize("apply", ["aggregation", "features"])
def test_gradients_reach_every_parameter(apply: str, check_gradients) -> None:
    torch.manual_seed(0)
    module = DeAttention(C, apply=apply).train()
    x = torch.randn(2, C, 7, 9)
    out = module(x)
    loss = (out.features * torch.randn_like(x)).sum() + (out.mask * torch.randn_like(out.mask)).sum()
    loss.backward()
    check_gradients(module)


@pytest.mark.parametrize(
    ("kernel", "size", "expected_source"),
    [
        (7, (4, 4), (3, 3)),  # reflect: input (-3, -3) -> (3, 3)
        (7, (3, 3), (0, 0)),  # map not larger than the padding: replicate -> (0, 0)
        (7, (1, 1), (0, 0)),
        (3, (3, 3), (1, 1)),  # reflect: input (-1, -1) -> (1, 1)
        (3, (1, 1), (0, 0)),
        (5, (2, 5), (0, 0)),  # one side too small: replicate
    ],
)
def test_reflect_padding_with_replicate_fallback(
    kernel: int, size: tuple[int, int], expected_source: tuple[int, int]
) -> None:
    """A k x k conv whose only tap is the top-left one reads the input at (-k//2, -k//2) for output (0, 0)."""
    branch = _PaddedBranch(1, 1, kernel_size=kernel).eval()
    with torch.no_grad():
        branch.conv.weight.zero_()
        branch.conv.weight[0, 0, 0, 0] = 1.0
        branch.conv.bias.zero_()
    x = torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(0)) + 0.1  # positive: ReLU passes it
    with torch.no_grad():
        out = branch(x)
    assert out.shape == x.shape
    scale = 1.0 / math.sqrt(1.0 + branch.bn.eps)  # BatchNorm in eval mode with fresh statistics
    assert abs(float(out[0, 0, 0, 0]) - scale * float(x[0, 0, expected_source[0], expected_source[1]])) < 1e-6


def test_mask_ignores_feature_scale_when_input_normalised() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, C, 5, 7)
    scale = torch.rand(2, 1, 5, 7) * 10 + 0.1  # positive per-location scale
    normalised, raw = DeAttention(C).eval(), DeAttention(C, normalize_input=False).eval()
    raw.load_state_dict(normalised.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(normalised(x * scale).mask, normalised(x).mask)
        assert float((raw(x * scale).mask - raw(x).mask).abs().max()) > 1e-3


def test_only_aggregation_mode_changes_a_netvlad_descriptor(pool, change) -> None:
    """docs/method.md section 5: NetVLAD L2-normalises every location, so the paper code's x * mask leaves the
    descriptor unchanged to float precision; weighting the aggregation by the same mask changes it."""
    torch.manual_seed(0)
    module = DeAttention(C, apply="aggregation").train()
    with torch.no_grad():
        module.fuse_bn.weight.fill_(5.0)  # a sharp mask, so the effect is clear
        x = torch.randn(2, C, 7, 9)
        plain = pool(x)
        agg = module(x)
        assert float(agg.mask.std()) > 0.2
        aggregation_change = change(pool(agg.features, agg.weights), plain)
        module.apply = "features"
        feat = module(x)
        torch.testing.assert_close(feat.mask, agg.mask)  # the same mask, applied two ways
        features_change = change(pool(feat.features, feat.weights), plain)
    assert aggregation_change > 0.05
    assert features_change < 1e-5  # measured ~1e-7 in float32: a no-op
    assert aggregation_change > 1e4 * features_change


def test_same_contrast_with_the_real_netvlad_head(change) -> None:
    """The same check against vpr/models/heads/netvlad.py (skipped if that head is absent)."""
    heads = pytest.importorskip("vpr.models.heads.netvlad")
    torch.manual_seed(0)
    head = heads.NetVLAD(num_clusters=8, dim=C)
    local = torch.nn.functional.normalize(torch.randn(500, C), dim=1)
    head.init_from_centroids(local[:8], local)  # centroids: a few of the descriptors
    module = DeAttention(C, apply="aggregation").train()
    with torch.no_grad():
        module.fuse_bn.weight.fill_(5.0)
        x = torch.randn(2, C, 7, 9)
        plain = head(x)
        agg = module(x)
        aggregation_change = change(head(agg.features, agg.weights), plain)
        module.apply = "features"
        feat = module(x)
        features_change = change(head(feat.features, feat.weights), plain)
    assert aggregation_change > 0.05
    assert features_change < 1e-5
    assert aggregation_change > 1e4 * features_change


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="version"):
        DeAttention(C, version=3)
    with pytest.raises(ValueError, match="apply"):
        DeAttention(C, apply="both")


# ---------------------------------------------------------------------------------------------- target


# ------------------------------------------------------------------------------------------------ loss


MASK = [[[[0.2, 0.9], [0.5, 0.7]]], [[[0.1, 0.3], [0.6, 0.99]]]]
TARGET = [[[[0.0, 1.0], [0.5, 1.0]]], [[[0.0, 0.0], [1.0, 0.25]]]]


def _flat(values: list) -> list[float]:
    return [v for image in values for row in image[0] for v in row]


def test_mse_loss_by_hand() -> None:
    pairs = list(zip(_flat(MASK), _flat(TARGET)))
    expected = sum((m - t) ** 2 for m, t in pairs) / len(pairs)
    got = deattention_loss(torch.tensor(MASK), torch.tensor(TARGET), kind="mse")
    assert got.dim() == 0
    assert abs(float(got) - expected) < 1e-6


def test_bce_loss_by_hand() -> None:
    pairs = list(zip(_flat(MASK), _flat(TARGET)))
    expected = -sum(t * math.log(m) + (1 - t) * math.log(1 - m) for m, t in pairs) / len(pairs)
    got = deattention_loss(torch.tensor(MASK), torch.tensor(TARGET), kind="bce")
    assert abs(float(got) - expected) < 1e-5


def test_loss_gradient_and_errors() -> None:
    mask = torch.tensor(MASK, requires_grad=True)
    deattention_loss(mask, torch.tensor(TARGET)).backward()
    # d/dm mean((m - t)^2) = 2 (m - t) / N
    torch.testing.assert_close(mask.grad, 2 * (torch.tensor(MASK) - torch.tensor(TARGET)) / 8)
    with pytest.raises(ValueError, match="differ"):
        deattention_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="kind"):
        deattention_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), kind="l1")
