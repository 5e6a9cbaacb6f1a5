"""Triplet losses over (query, positive, negatives) tuples, one term per (query, negative) pair.

Common interface: ``forward(anchor: (B, D), positive: (B, D), negatives: (N, D), neg_to_query: (N,) long)`` ->
scalar, the mean over all N (query, negative) pairs of the batch (queries may have different numbers of
negatives; a query with many negatives weighs more, as in the NetVLAD baseline). ``pair_losses`` returns the
(N,) per-pair terms (e.g. to log the fraction of active triplets).

Distances are plain (non-squared) Euclidean, with the square root guarded: d = sqrt(max(sum sq, eps)), so that
identical vectors give zero, finite gradients instead of NaN (docs/method.md sections 3 and 6).
"""

from __future__ import annotations

import torch
from torch import nn


def euclidean_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Row-wise Euclidean distance. a, b: (N, D) -> (N,), computed in float32 or wider."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    diff = a.to(dtype) - b.to(dtype)  # float32 at least, even under autocast: eps would underflow in float16
    return diff.pow(2).sum(dim=1).clamp_min(eps).sqrt()


def _check_inputs(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, neg_to_query: torch.Tensor):
    if anchor.ndim != 2 or anchor.shape != positive.shape:
        raise ValueError(
            f"anchor and positive must both be (B, D); got {tuple(anchor.shape)} and {tuple(positive.shape)}."
        )
    if negatives.ndim != 2 or negatives.shape[1] != anchor.shape[1]:
        raise ValueError(f"negatives must be (N, D) with D={anchor.shape[1]}; got {tuple(negatives.shape)}.")
    if neg_to_query.shape != (negatives.shape[0],):
        raise ValueError(f"neg_to_query must be (N,) = ({negatives.shape[0]},), got {tuple(neg_to_query.shape)}.")
    if neg_to_query.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"neg_to_query must hold integer query indices, got dtype {neg_to_query.dtype}.")
    # The range is checked where it costs nothing: on a GPU, reading min/max would stop the host every step (the
    # training batches' indices come from the collate function; a bad index there fails in the indexing).
    on_host = neg_to_query.device.type == "cpu"
    if on_host and neg_to_query.numel() and (neg_to_query.min() < 0 or neg_to_query.max() >= anchor.shape[0]):
        raise ValueError(
            f"neg_to_query holds indices outside [0, {anchor.shape[0]}) (B = {anchor.shape[0]} queries): "
            f"min {int(neg_to_query.min())}, max {int(neg_to_query.max())}."
        )


def _reduce(pair_losses: torch.Tensor, anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    if pair_losses.numel() == 0:
        # No negatives in the batch: a zero that is still attached to the graph, so backward() works.
        return (anchor.sum() + positive.sum()).float() * 0.0
    return pair_losses.mean()


class _TupleLoss(nn.Module):
    """A loss with one term per (query, negative) pair (``pair_losses``), averaged over all pairs."""

    def pair_losses(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negatives: torch.Tensor,
        neg_to_query: torch.Tensor,
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negatives: torch.Tensor,
        neg_to_query: torch.Tensor,
    ) -> torch.Tensor:
        """anchor, positive: (B, D); negatives: (N, D); neg_to_query: (N,) long -> scalar."""
        return _reduce(self.pair_losses(anchor, positive, negatives, neg_to_query), anchor, positive)


def _check_margins(**margins: float) -> None:
    """Margins are distances between descriptors: a negative one asks for the negatives to lie closer than the
    positive, and mining finds no hard negative for it."""
    for name, value in margins.items():
        if not float(value) >= 0:
            raise ValueError(f"{name}={value} (loss.{name}): a margin must be >= 0")


class TripletMarginLoss(_TupleLoss):
    """mean over (q, n) pairs of max(0, d(q, p) + margin - d(q, n)).

    Args:
        margin: m (the paper's code: 0.1; the NetVLAD baseline uses sqrt(0.1) = 0.316).
        eps: guard under the square root.
    """

    def __init__(self, margin: float = 0.1, eps: float = 1e-12) -> None:
        super().__init__()
        _check_margins(margin=margin)
        self.margin = margin
        self.eps = eps

    def pair_losses(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negatives: torch.Tensor,
        neg_to_query: torch.Tensor,
    ) -> torch.Tensor:
        """anchor, positive: (B, D); negatives: (N, D); neg_to_query: (N,) -> (N,) per-pair losses."""
        _check_inputs(anchor, positive, negatives, neg_to_query)
        neg_to_query = neg_to_query.long()
        d_qp = euclidean_distance(anchor, positive, self.eps)[neg_to_query]
        d_qn = euclidean_distance(anchor[neg_to_query], negatives, self.eps)
        return torch.relu(d_qp + self.margin - d_qn)

    @property
    def mining_margin(self) -> float:
        """Hard negatives are those with d(q, n) < d(q, p) + this: the loss's own margin."""
        return float(self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class SharpenedTripletMarginLoss(_TupleLoss):
    """Sharpened triplet marginal loss (sTML), docs/method.md section 6.

    version 1: max(0, d(q, p) + margin - d(q, n) + margin_pn - d(p, n))
    version 2: max(0, margin_pn - d(p, n))
    averaged over all (q, n) pairs. The d(p, n) term also pushes each negative away from the positive.

    Args:
        margin: m (0.1 in the paper).
        margin_pn: m_pn (1.4 in the paper).
        version: 1 or 2.
        eps: guard under the square root.
    """

    def __init__(self, margin: float = 0.1, margin_pn: float = 1.4, version: int = 1, eps: float = 1e-12) -> None:
        super().__init__()
        if version not in (1, 2):
            raise ValueError(f"Unknown sTML version={version!r}; choose 1 or 2.")
        _check_margins(margin=margin, margin_pn=margin_pn)
        self.margin = margin
        self.margin_pn = margin_pn
        self.version = version
        self.eps = eps

    def pair_losses(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        negatives: torch.Tensor,
        neg_to_query: torch.Tensor,
    ) -> torch.Tensor:
        """anchor, positive: (B, D); negatives: (N, D); neg_to_query: (N,) -> (N,) per-pair losses."""
        _check_inputs(anchor, positive, negatives, neg_to_query)
        neg_to_query = neg_to_query.long()
        d_pn = euclidean_distance(positive[neg_to_query], negatives, self.eps)
        if self.version == 2:
            return torch.relu(self.margin_pn - d_pn)
        d_qp = euclidean_distance(anchor, positive, self.eps)[neg_to_query]
        d_qn = euclidean_distance(anchor[neg_to_query], negatives, self.eps)
        return torch.relu(d_qp + self.margin - d_qn + self.margin_pn - d_pn)

    @property
    def mining_margin(self) -> float:
        """The mining margin of the paper's runs: margin + margin_pn for version 1 (1.5), margin for version 2."""
        return float(self.margin + self.margin_pn) if self.version == 1 else float(self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, margin_pn={self.margin_pn}, version={self.version}"
