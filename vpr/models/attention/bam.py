"""BAM: Bottleneck Attention Module (Park et al., BMVC 2018)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from vpr.models.attention.base import AttentionOutput, hidden_channels


class BAM(nn.Module):
    """out = (1 + sigmoid(Mc (+ or *) Ms)) * x (docs/method.md section 4).

    Channel branch Mc: (B, C, 1, 1): global average pool over the real H x W grid -> Linear C -> C/r ->
    BatchNorm1d -> ReLU -> Linear C/r -> C. (The paper's code's copy pools with a square H x H kernel, which ignores
    columns of a non-square map; here the pooling is a mean over all H x W locations.)

    Spatial branch Ms: (B, 1, H, W): 1x1 conv C -> C/r + BN + ReLU, two 3x3 convs C/r -> C/r with dilation d
    (padding d, so the grid size is kept) + BN + ReLU, 1x1 conv C/r -> 1.

    With h = C // r, parameters:
        channel: C*h + h (Linear) + 2*h (BN1d) + h*C + C (Linear)
        spatial: C*h + h + 2*h (1x1 + BN) + 2 * (9*h*h + h + 2*h) (dilated 3x3 + BN) + h + 1 (1x1 -> 1).

    Args:
        channels: C.
        reduction: r.
        dilation: d of the two 3x3 convs.
        combine: "sum" (the paper, default) broadcasts Mc + Ms; "product" (the official code) Mc * Ms.
        channel_pool: "mean" (default) averages Mc's input over all H x W locations; "square" reproduces the
            paper code's copy, which average-pools with an H x H window and stride H and so sees only the first
            H columns (its Linear layer then only works for H <= W < 2H, the case of every VGG16 map of a
            landscape image; other shapes are refused). Used to reproduce that code's released checkpoints.

    Returns features (B, C, H, W), weights None, mask = sigmoid(Ms) (B, 1, H, W) for visualisation.
    Note: BatchNorm1d in the channel branch needs a batch of at least 2 in training mode.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        dilation: int = 4,
        combine: Literal["sum", "product"] = "sum",
        channel_pool: Literal["mean", "square"] = "mean",
    ) -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction, "BAM (vpr/models/attention/bam.py)")
        if combine not in ("sum", "product"):
            raise ValueError(
                f"BAM (vpr/models/attention/bam.py): combine must be 'sum' (paper) or 'product' "
                f"(official code), got {combine!r}."
            )
        if channel_pool not in ("mean", "square"):
            raise ValueError(
                f"BAM (vpr/models/attention/bam.py): channel_pool must be 'mean' (every location) or 'square' "
                f"(the paper code's H x H window), got {channel_pool!r}."
            )
        if dilation < 1:
            raise ValueError(f"BAM (vpr/models/attention/bam.py): dilation must be >= 1, got {dilation}.")
        self.channels = channels
        self.combine = combine
        self.channel_pool = channel_pool
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )
        layers: list[nn.Module] = [
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        ]
        for _ in range(2):
            layers += [
                nn.Conv2d(hidden, hidden, kernel_size=3, padding=dilation, dilation=dilation),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(hidden, 1, kernel_size=1))
        self.spatial_branch = nn.Sequential(*layers)

    def channel_attention(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> Mc: (B, C, 1, 1) logits."""
        if self.channel_pool == "square":
            height, width = x.shape[-2:]
            if not height <= width < 2 * height:
                raise ValueError(
                    f"BAM channel_pool='square' (the paper code's H x H pooling) needs H <= W < 2H, the feature map "
                    f"is {height} x {width}; use channel_pool='mean' or a landscape image size."
                )
            return self.channel_mlp(x[..., :height].mean(dim=(2, 3)))[:, :, None, None]
        pooled = x.mean(dim=(2, 3))  # mean over every one of the H x W locations, square or not
        return self.channel_mlp(pooled)[:, :, None, None]

    def spatial_attention(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> Ms: (B, 1, H, W) logits."""
        return self.spatial_branch(x)

    def forward(self, x: Tensor) -> AttentionOutput:
        """x: (B, C, H, W) -> AttentionOutput(features (B, C, H, W), None, mask (B, 1, H, W))."""
        channel = self.channel_attention(x)
        spatial = self.spatial_attention(x)
        logits = channel + spatial if self.combine == "sum" else channel * spatial
        features = (1.0 + torch.sigmoid(logits)) * x
        return AttentionOutput(features, None, torch.sigmoid(spatial))
