"""Semantic-guided de-attention (the paper's contribution, docs/method.md section 5).

A small head on the backbone's feature map predicts a mask in (0, 1) per location, trained with an
auxiliary loss towards a target that is 0 on classes that do not identify a place (people, vehicles,
sky) and 1 elsewhere. The target comes from a frozen segmentation network, only during training.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpr.models.attention.base import AttentionOutput

# (kernel size, output channels) of the three parallel branches.
BRANCHES: tuple[tuple[int, int], ...] = ((3, 32), (5, 32), (7, 20))


class _PaddedBranch(nn.Module):
    """conv k x k (reflect padding) -> ReLU -> BatchNorm.

    Reflect padding needs the map to be larger than the padding in both directions; on smaller maps
    (e.g. 1x1 or 3x3 with the 7x7 branch) it falls back to replicate padding, which works for any size.
    """

    #: torch has no deterministic CUDA backward for reflection padding (vpr.build checks trainer.deterministic=true)
    cuda_backward_deterministic = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.pad = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=0)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H, W)."""
        height, width = x.shape[-2:]
        mode = "reflect" if min(height, width) > self.pad else "replicate"
        padded = F.pad(x, (self.pad, self.pad, self.pad, self.pad), mode=mode)
        return self.bn(F.relu(self.conv(padded)))


class DeAttention(nn.Module):
    """De-attention mask head.

    mask branch: x (L2-normalised over channels if ``normalize_input``) -> three parallel branches
    conv 3x3 -> 32, 5x5 -> 32, 7x7 -> 20 (each conv -> ReLU -> BatchNorm, reflect padding) -> concat (84)
    -> 1x1 conv -> 1 -> ReLU -> BatchNorm -> sigmoid -> mask (B, 1, H, W) in (0, 1).

    How the mask acts on the descriptor (``apply``):
        "aggregation" (default): features unchanged, weights = mask (version 1) or 1 + mask (version 2),
            so the head's aggregation really counts de-attended regions less.
        "features" (parity with the paper's code): features = x * mask (version 1) or x + x * mask
            (version 2), weights None. NetVLAD L2-normalises every location first, so this leaves its
            descriptor unchanged up to ~1e-7: the mask then acts only through the auxiliary loss and
            through modules placed after it (e.g. SE's pooling).
    The mask is returned in both cases (auxiliary loss, pictures).

    Parameters: sum over branches (k, n) of (C*k*k*n + n + 2*n) + (84 + 1) + 2.
    """

    #: The mask is trained to match the semantic guidance target (the auxiliary loss needs guidance).
    supervised_mask = True

    def __init__(
        self,
        channels: int,
        version: int = 1,
        apply: Literal["aggregation", "features"] = "aggregation",
        normalize_input: bool = True,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(
                f"DeAttention (vpr/models/attention/deattention.py): channels must be positive, got {channels}."
            )
        if version not in (1, 2):
            raise ValueError(
                "DeAttention (vpr/models/attention/deattention.py): version must be 1 (x * mask) or "
                f"2 (x + x * mask), got {version!r}."
            )
        if apply not in ("aggregation", "features"):
            raise ValueError(
                "DeAttention (vpr/models/attention/deattention.py): apply must be 'aggregation' (the mask "
                "weights the head's aggregation) or 'features' (the paper code's x * mask), got "
                f"{apply!r}."
            )
        self.channels = channels
        self.version = version
        self.apply = apply
        self.normalize_input = normalize_input
        self.branches = nn.ModuleList(_PaddedBranch(channels, n, k) for k, n in BRANCHES)
        self.fuse = nn.Conv2d(sum(n for _, n in BRANCHES), 1, kernel_size=1)
        self.fuse_bn = nn.BatchNorm2d(1)

    def compute_mask(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> mask: (B, 1, H, W) in (0, 1)."""
        if self.normalize_input:
            x = F.normalize(x, p=2, dim=1)
        context = torch.cat([branch(x) for branch in self.branches], dim=1)
        return torch.sigmoid(self.fuse_bn(F.relu(self.fuse(context))))

    def forward(self, x: Tensor) -> AttentionOutput:
        """x: (B, C, H, W) -> AttentionOutput(features (B, C, H, W), weights (B,1,H,W) | None, mask (B,1,H,W))."""
        mask = self.compute_mask(x)
        if self.apply == "aggregation":
            weights = mask if self.version == 1 else 1.0 + mask
            return AttentionOutput(x, weights, mask)
        features = x * mask if self.version == 1 else x + x * mask
        return AttentionOutput(features, None, mask)


def deattention_loss(mask: Tensor, target: Tensor, kind: Literal["mse", "bce"] = "mse") -> Tensor:
    """Auxiliary de-attention loss, a mean over every location of every image.

    mask: (B, 1, h, w) in (0, 1); target: (B, 1, h, w) in [0, 1] (see :func:`vpr.data.guidance.area_target`).
    kind: "mse" (the paper) or "bce". Returns a scalar.
    """
    if mask.shape != target.shape:
        raise ValueError(
            f"deattention_loss: mask {tuple(mask.shape)} and target {tuple(target.shape)} differ; build the "
            "target on the mask's grid (vpr.data.guidance.area_target(labels, suppressed, grid=mask.shape[-2:]))."
        )
    if kind == "mse":
        return F.mse_loss(mask, target.to(mask.dtype))
    if kind == "bce":
        # binary_cross_entropy refuses autocast (unsafe in half precision): compute it in float32.
        with torch.autocast(device_type=mask.device.type, enabled=False):
            return F.binary_cross_entropy(mask.float(), target.float())
    raise ValueError(f"deattention_loss: kind must be 'mse' or 'bce', got {kind!r}.")
