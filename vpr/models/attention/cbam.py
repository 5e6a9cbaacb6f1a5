"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vpr.models.attention.base import AttentionOutput, hidden_channels


class CBAM(nn.Module):
    """Channel gate then spatial gate, both multiplicative, no residual (docs/method.md section 4).

    Channel gate: average-pool and max-pool over H x W, each through one shared MLP C -> C/r -> C (with
    biases), summed, sigmoid. Spatial gate: per location [max over C; mean over C] -> kxk conv 2 -> 1 (no
    bias, same padding) -> BatchNorm2d(1) -> sigmoid. That BatchNorm's running statistics move by 0.01 per
    training batch (momentum 0.01, as in CBAM's authors' code and the paper's copy of it; torch's default is 0.1).

    Parameters: 2 * C * (C // r) + C // r + C (MLP) + 2 * k * k (conv) + 2 (BatchNorm).

    Args:
        channels: C.
        reduction: r.
        kernel_size: k of the spatial conv (odd).
        spatial_to_aggregation: False (the paper): features = x * Mc * Ms, weights None. NetVLAD
            L2-normalises each location, so the spatial factor Ms then has no effect on its descriptor
            (docs/method.md section 5). True: features = x * Mc and Ms is handed to the head as aggregation
            weights, so the spatial gate really changes the descriptor.

    Returns mask = Ms (B, 1, H, W) in both cases.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        spatial_to_aggregation: bool = False,
    ) -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction, "CBAM (vpr/models/attention/cbam.py)")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"CBAM (vpr/models/attention/cbam.py): kernel_size must be a positive odd number so the "
                f"spatial gate keeps the grid size, got {kernel_size}."
            )
        self.channels = channels
        self.spatial_to_aggregation = spatial_to_aggregation
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1, momentum=0.01)

    def channel_gate(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> Mc: (B, C, 1, 1) in (0, 1)."""
        avg = x.mean(dim=(2, 3))
        mx = x.amax(dim=(2, 3))
        return torch.sigmoid(self.channel_mlp(avg) + self.channel_mlp(mx))[:, :, None, None]

    def spatial_gate(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> Ms: (B, 1, H, W) in (0, 1)."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_bn(self.spatial_conv(pooled)))

    def forward(self, x: Tensor) -> AttentionOutput:
        """x: (B, C, H, W) -> AttentionOutput(features (B, C, H, W), weights (B,1,H,W) | None, mask (B,1,H,W))."""
        refined = x * self.channel_gate(x)
        spatial = self.spatial_gate(refined)
        if self.spatial_to_aggregation:
            return AttentionOutput(refined, spatial, spatial)
        return AttentionOutput(refined * spatial, None, spatial)
