"""NetVLAD aggregation (Arandjelovic et al., CVPR 2016), with optional per-location aggregation weights.

For local descriptors x_i (L2-normalised over channels), soft-assignment a_k(x_i) = softmax_k(w_k . x_i + b_k) and
centroids c_k:

    V[k] = sum_i w_i * a_k(x_i) * (x_i - c_k)          (w_i = 1 without weights; CRN-style weights otherwise)

then each V[k] is L2-normalised over D (intra-normalisation), V is flattened cluster-major (index k * D + d) and
L2-normalised as a whole. Output dimension K * D (32768 for K = 64, D = 512).

Per-location weights matter: NetVLAD L2-normalises every location first, so multiplying the *features* by a
positive mask changes nothing (docs/method.md section 5); weighting the aggregation does.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_VERSIONS = ("v1", "v2")
# Target soft-assignment ratio between the nearest and second-nearest centroid: alpha makes
# exp(-alpha * gap) = 0.01 for the mean gap (NetVLAD paper's initialisation).
_ASSIGNMENT_RATIO = 0.01


def _as_float_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach()
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x D), got shape {tuple(t.shape)}.")
    return t.to(torch.float64)


def alpha_v1(centroids: np.ndarray | torch.Tensor, descriptors: np.ndarray | torch.Tensor) -> float:
    """v1 sharpness: alpha = -ln(0.01) / mean(top1 - top2) of the dot products with the normalised centroids.

    centroids: (K, D), descriptors: (N, D) (normally L2-normalised, as the clustering step stores them).
    """
    c = _as_float_tensor(centroids, "centroids")
    x = _as_float_tensor(descriptors, "descriptors")
    _check_two_clusters(c)
    c_hat = F.normalize(c, dim=1)
    top2 = torch.topk(x @ c_hat.T, k=2, dim=1).values  # (N, 2), descending
    return _alpha_from_gap((top2[:, 0] - top2[:, 1]).mean().item())


def alpha_v2(centroids: np.ndarray | torch.Tensor, descriptors: np.ndarray | torch.Tensor) -> float:
    """v2 sharpness from squared L2 DISTANCES to the two nearest centroids: alpha = -ln(0.01) / mean(d2_2 - d2_1).

    (The public baseline squares the neighbour *indices* here, a bug; this uses the distances.)
    """
    c = _as_float_tensor(centroids, "centroids")
    x = _as_float_tensor(descriptors, "descriptors")
    _check_two_clusters(c)
    sq_dist = torch.cdist(x, c).pow(2)  # (N, K)
    nearest2 = torch.topk(sq_dist, k=2, dim=1, largest=False).values  # (N, 2), ascending
    return _alpha_from_gap((nearest2[:, 1] - nearest2[:, 0]).mean().item())


def _check_two_clusters(c: torch.Tensor) -> None:
    if c.shape[0] < 2:
        raise ValueError(f"NetVLAD initialisation needs at least 2 centroids, got {c.shape[0]}.")


def _alpha_from_gap(mean_gap: float) -> float:
    if not mean_gap > 0:
        raise ValueError(
            f"Cannot initialise NetVLAD: the mean gap between the nearest and second-nearest centroid is "
            f"{mean_gap} (duplicate centroids or degenerate descriptors?). Re-run the clustering (cluster.py)."
        )
    return -math.log(_ASSIGNMENT_RATIO) / mean_gap


def load_centroid_file(
    path: str | os.PathLike, num_clusters: int | None = None, dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``centroids`` (K, D) and ``descriptors`` (N, D) from the HDF5 file written by ``cluster.py``.

    Raises FileNotFoundError / ValueError naming the file and the fix when the file or a dataset is missing, or
    when (K, D) differ from the configured ``num_clusters`` / ``dim``.
    """
    import h5py  # local import: only this loader needs it

    path = os.fspath(path)
    fix = (
        "Create it by running `python cluster.py` with the same data/backbone/head settings as training "
        "(NetVLAD without centroid initialisation trains badly, so there is no random fallback)."
    )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"NetVLAD centroid file {path} does not exist. {fix}")
    try:
        with h5py.File(path, "r") as f:
            missing = [name for name in ("centroids", "descriptors") if name not in f]
            if missing:
                raise ValueError(
                    f"NetVLAD centroid file {path} has no dataset(s) {missing} (found {sorted(f.keys())}). {fix}"
                )
            centroids = np.asarray(f["centroids"][...], dtype=np.float32)
            descriptors = np.asarray(f["descriptors"][...], dtype=np.float32)
    except OSError as err:
        raise ValueError(f"NetVLAD centroid file {path} is not a readable HDF5 file ({err}). {fix}") from err
    if centroids.ndim != 2 or descriptors.ndim != 2 or centroids.shape[1] != descriptors.shape[1]:
        raise ValueError(
            f"NetVLAD centroid file {path}: expected centroids (K, D) and descriptors (N, D), got "
            f"{centroids.shape} and {descriptors.shape}. {fix}"
        )
    expected = (
        num_clusters if num_clusters is not None else centroids.shape[0],
        dim if dim is not None else centroids.shape[1],
    )
    if centroids.shape != expected:
        raise ValueError(
            f"NetVLAD centroid file {path} holds centroids of shape {centroids.shape} (K, D) but the head is "
            f"configured with num_clusters={expected[0]}, dim={expected[1]}: the file belongs to another "
            f"backbone or K. Point the head at the right file, or run `python cluster.py` with the current "
            "settings to create one."
        )
    return centroids, descriptors


def check_netvlad_settings(num_clusters: Any, version: Any) -> None:
    """NetVLAD's K (a whole number >= 2) and version (v1 or v2); anything else is a ValueError naming it."""
    if version not in _VERSIONS:
        raise ValueError(f"Unknown NetVLAD version={version!r}; choose 'v1' or 'v2'.")
    if not isinstance(num_clusters, int) or num_clusters < 2:
        raise ValueError(
            f"num_clusters={num_clusters!r} (model.num_clusters): NetVLAD needs at least 2 clusters "
            "(its initialisation compares each descriptor's two nearest centroids)"
        )


class NetVLAD(nn.Module):
    """NetVLAD head: (B, D, H, W) feature map -> (B, K * D) L2-normalised descriptor.

    Args:
        num_clusters: K.
        dim: D, channels of the input map (the backbone's ``out_channels``).
        normalize_input: L2-normalise each location over channels first (the paper does).
        version: initialisation rule, ``v1`` (conv weight = alpha * c / |c|, no bias: the default) or ``v2``
            (weight = 2 * alpha * c, bias = -alpha * |c|^2: the soft-assignment is then exactly
            softmax_k(-alpha * |x - c_k|^2)). Only v2 has a bias parameter.
        eps: guard of every L2 normalisation.

    Until :meth:`init_from_centroids` (or :meth:`init_from_file`) runs, the parameters are random and
    ``is_initialised`` is False; the flag is a buffer, so it survives checkpoints. ``needs_centroids`` tells the
    runs to initialise it from a k-means file (cluster.py) before training.
    """

    needs_centroids = True

    def __init__(
        self,
        num_clusters: int = 64,
        dim: int = 512,
        normalize_input: bool = True,
        version: str = "v1",
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        check_netvlad_settings(num_clusters, version)
        self.num_clusters = num_clusters
        self.dim = dim
        self.normalize_input = normalize_input
        self.version = version
        self.eps = eps
        self.out_dim = num_clusters * dim
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=(version == "v2"))
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def is_initialised(self) -> bool:
        return bool(self.initialised)

    @torch.no_grad()
    def init_from_centroids(
        self,
        centroids: np.ndarray | torch.Tensor,
        descriptors: np.ndarray | torch.Tensor,
        version: str | None = None,
    ) -> float:
        """Initialise the assignment conv and the centroids from k-means; returns alpha.

        centroids: (K, D) k-means centres; descriptors: (N, D) the (L2-normalised) descriptors they came from.
        version: must match the constructor's (it decides whether the conv has a bias); None uses it.
        """
        version = self.version if version is None else version
        if version != self.version:
            raise ValueError(
                f"NetVLAD was built with version={self.version!r} but init_from_centroids got version={version!r}; "
                "set the head's `version` setting instead (it decides whether the assignment conv has a bias)."
            )
        c = _as_float_tensor(centroids, "centroids")
        if tuple(c.shape) != (self.num_clusters, self.dim):
            raise ValueError(
                f"centroids have shape {tuple(c.shape)} but NetVLAD expects (num_clusters, dim) = "
                f"({self.num_clusters}, {self.dim})."
            )
        if _as_float_tensor(descriptors, "descriptors").shape[1] != self.dim:
            raise ValueError(f"descriptors must have {self.dim} columns, got shape {tuple(np.shape(descriptors))}.")
        weight_shape = (self.num_clusters, self.dim, 1, 1)
        if version == "v1":
            alpha = alpha_v1(c, descriptors)
            weight = alpha * F.normalize(c, dim=1)
        else:
            alpha = alpha_v2(c, descriptors)
            weight = 2.0 * alpha * c
            self.conv.bias.copy_(-alpha * c.pow(2).sum(dim=1))
        self.conv.weight.copy_(weight.reshape(weight_shape))
        self.centroids.copy_(c)
        self.initialised.fill_(True)
        return alpha

    def init_from_file(self, path: str | os.PathLike) -> float:
        """Initialise from the HDF5 file of ``cluster.py`` (datasets ``centroids``, ``descriptors``); returns alpha."""
        centroids, descriptors = load_centroid_file(path, self.num_clusters, self.dim)
        return self.init_from_centroids(centroids, descriptors)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, D, H, W), weights: (B, 1, H, W) or None -> (B, K * D), cluster-major, unit L2 norm."""
        b, d, h, w = x.shape
        if d != self.dim:
            raise ValueError(f"NetVLAD expects {self.dim} input channels (head.dim), got {d}.")
        # The head runs in float32 under mixed precision: its assignment logits are alpha-scaled (errors of a
        # bf16 rounding are a fraction of a logit) and sum_i a_ki x_i - c_k sum_i a_ki subtracts close numbers.
        # Its FLOPs are under 0.1% of VGG16's at 640x480.
        with torch.autocast(x.device.type, enabled=False):
            return self._aggregate(x.float(), None if weights is None else weights.float())

    def _aggregate(self, x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        b, d, h, w = x.shape
        if self.normalize_input:
            x = F.normalize(x, p=2, dim=1, eps=self.eps)
        assignment = F.softmax(self.conv(x).flatten(2), dim=1)  # (B, K, N), N = H * W
        if weights is not None:
            if weights.shape != (b, 1, h, w):
                raise ValueError(
                    f"NetVLAD weights must have shape (B, 1, H, W) = {(b, 1, h, w)}, got {tuple(weights.shape)}."
                )
            assignment = assignment * weights.flatten(2)  # (B, 1, N) broadcast over K
        # sum_i a_ki (x_i - c_k) = sum_i a_ki x_i - c_k * sum_i a_ki, without the (B, K, D, N) residual tensor.
        vlad = torch.bmm(assignment, x.flatten(2).transpose(1, 2))  # (B, K, D)
        vlad = vlad - self.centroids.unsqueeze(0).float() * assignment.sum(dim=2, keepdim=True)
        vlad = F.normalize(vlad, p=2, dim=2, eps=self.eps)  # intra-normalisation
        return F.normalize(vlad.flatten(1), p=2, dim=1, eps=self.eps)

    def extra_repr(self) -> str:
        return (
            f"num_clusters={self.num_clusters}, dim={self.dim}, normalize_input={self.normalize_input}, "
            f"version={self.version!r}"
        )
