"""Squeeze-and-Excitation channel attention (Hu et al., CVPR 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vpr.models.attention.base import AttentionOutput, hidden_channels


class SE(nn.Module):
    """GAP -> Linear(C, C/r, no bias) -> ReLU -> Linear(C/r, C, no bias) -> sigmoid -> scale channels.

    Parameters: 2 * C * (C // r). Returns weights None, mask None (no spatial component).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = hidden_channels(channels, reduction, "SE (vpr/models/attention/se.py)")
        self.channels = channels
        self.excitation = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
        )

    def forward(self, x: Tensor) -> AttentionOutput:
        """x: (B, C, H, W) -> features (B, C, H, W) = x * gate, gate: (B, C, 1, 1)."""
        squeezed = x.mean(dim=(2, 3))  # (B, C): global average over the real H x W grid
        gate = torch.sigmoid(self.excitation(squeezed))[:, :, None, None]
        return AttentionOutput(x * gate, None, None)
