"""Global pooling heads for comparison with NetVLAD: GeM, max and average pooling, each followed by L2.

All share the head interface: attribute ``out_dim`` (= D) and
``forward(x: (B, D, H, W), weights: (B, 1, H, W) | None = None) -> (B, D)`` with unit L2 norm.

Per-location weights (e.g. an attention mask) weight the spatial average in :class:`AvgPool` and :class:`GeM`
(a weighted mean, normalised by the sum of weights) and multiply the features before the maximum in
:class:`MaxPool` (a location with weight 0 then offers a zero feature).

Like NetVLAD, every head pools in float32 under mixed precision: descriptors are compared by distances whose
differences are small, and a bf16 descriptor (8 bits of mantissa) would differ between the training's mining
cache and an fp32 evaluation of the same checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check_weights(x: torch.Tensor, weights: torch.Tensor | None, head: str) -> torch.Tensor | None:
    if weights is None:
        return None
    b, _, h, w = x.shape
    if weights.shape != (b, 1, h, w):
        raise ValueError(f"{head} weights must have shape (B, 1, H, W) = {(b, 1, h, w)}, got {tuple(weights.shape)}.")
    return weights.float()


class _Float32Head(nn.Module):
    """A global pooling head of ``dim`` channels (``out_dim`` = ``dim``) whose ``_pool(x, weights)`` runs in float32
    with autocast off, whatever the input's dtype."""

    needs_centroids = False

    def __init__(self, dim: int = 512, eps: float = 1e-12) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = dim
        self.eps = eps

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, D, H, W), weights: (B, 1, H, W) | None -> (B, D) float32, unit L2 norm."""
        weights = _check_weights(x, weights, type(self).__name__)
        with torch.autocast(x.device.type, enabled=False):
            return self._pool(x.float(), weights)

    def _pool(self, x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None, eps: float) -> torch.Tensor:
    """values: (B, D, H, W), weights: (B, 1, H, W) | None -> (B, D) spatial (weighted) mean."""
    if weights is None:
        return values.mean(dim=(2, 3))
    return (values * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp_min(eps)


class AvgPool(_Float32Head):
    """Global (weighted) average pooling + L2. ``dim``: input channels D (= out_dim)."""

    def _pool(self, x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return F.normalize(_weighted_mean(x, weights, self.eps), p=2, dim=1, eps=self.eps)


class MaxPool(_Float32Head):
    """Global max pooling (MAC) + L2; weights multiply the features before the maximum. ``dim``: input channels D
    (= out_dim)."""

    def _pool(self, x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if weights is not None:
            x = x * weights
        return F.normalize(x.amax(dim=(2, 3)), p=2, dim=1, eps=self.eps)


class GeM(_Float32Head):
    """Generalised-mean pooling (Radenovic et al.): (mean_i max(x_i, eps)^p)^(1/p) per channel, then L2.

    Args:
        dim: input channels D (= out_dim).
        p: initial exponent (3: the usual choice); p = 1 is average pooling, p -> inf max pooling.
        learn_p: make p a trainable parameter.
        eps: lower clamp of the features (GeM needs positive inputs) and guard of the normalisations.
    """

    def __init__(self, dim: int = 512, p: float = 3.0, learn_p: bool = True, eps: float = 1e-6) -> None:
        super().__init__(dim, eps)
        if not float(p) > 0:
            raise ValueError(f"p={p} (head.p): GeM's exponent must be > 0 (1: average pooling, 3: the usual choice)")
        p_tensor = torch.tensor([float(p)])
        if learn_p:
            self.p = nn.Parameter(p_tensor)
        else:
            self.register_buffer("p", p_tensor)

    def _pool(self, x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        p = self.p.float()
        pooled = _weighted_mean(x.clamp_min(self.eps).pow(p), weights, self.eps)
        # Clamp: all-zero weights would give 0^(1/p), whose gradient is infinite.
        pooled = pooled.clamp_min(self.eps).pow(1.0 / p)
        return F.normalize(pooled, p=2, dim=1, eps=self.eps)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, p={self.p.item():.4f}, learn_p={isinstance(self.p, nn.Parameter)}"
