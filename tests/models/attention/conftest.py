"""Shared helpers for the attention tests.

`netvlad_like` is a tiny NetVLAD written here, independently of vpr/models/heads/netvlad.py, so the
attention tests can show how a mask reaches (or does not reach) a NetVLAD-style descriptor.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor


def netvlad_like(x: Tensor, weights: Tensor | None = None, num_clusters: int = 4, alpha: float = 5.0) -> Tensor:
    """x: (B, C, H, W), weights: (B, 1, H, W) | None -> (B, K * C) L2-normalised descriptor.

    Each location is L2-normalised over channels, soft-assigned to K fixed centroids, and
    V[k] = sum_i w_i a_k(x_i) (x_i - c_k); each V[k] is L2-normalised, then the whole vector.
    """
    batch, channels, height, width = x.shape
    gen = torch.Generator().manual_seed(1234)
    centroids = torch.randn(num_clusters, channels, generator=gen, dtype=x.dtype)
    centroids = centroids / centroids.norm(dim=1, keepdim=True)
    local = x.flatten(2).transpose(1, 2)  # (B, N, C)
    local = local / local.norm(dim=2, keepdim=True).clamp_min(1e-12)
    assign = torch.softmax(alpha * local @ centroids.T, dim=2)  # (B, N, K)
    if weights is None:
        w = torch.ones(batch, height * width, dtype=x.dtype)
    else:
        w = weights.reshape(batch, height * width)
    residual = local[:, :, None, :] - centroids[None, None, :, :]  # (B, N, K, C)
    vlad = (w[:, :, None, None] * assign[:, :, :, None] * residual).sum(dim=1)  # (B, K, C)
    vlad = vlad / vlad.norm(dim=2, keepdim=True).clamp_min(1e-12)
    flat = vlad.reshape(batch, -1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


@pytest.fixture
def pool() -> Callable[..., Tensor]:
    """The test-local NetVLAD-like pooling (see `netvlad_like`)."""
    return netvlad_like


def descriptor_change(a: Tensor, b: Tensor) -> float:
    """Largest L2 distance between corresponding unit descriptors of two batches (B, D)."""
    return float((a - b).detach().norm(dim=1).max())


@pytest.fixture
def change() -> Callable[[Tensor, Tensor], float]:
    return descriptor_change


def assert_all_parameters_get_gradient(module: torch.nn.Module) -> None:
    """Every parameter has a .grad that is not all zero."""
    missing = [name for name, p in module.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    zero = [name for name, p in module.named_parameters() if not bool(p.grad.abs().sum() > 0)]
    assert not zero, f"all-zero gradient for {zero}"


@pytest.fixture
def check_gradients() -> Callable[[torch.nn.Module], None]:
    return assert_all_parameters_get_gradient
