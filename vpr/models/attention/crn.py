"""CRN: contextual reweighting network (Kim, Dunn, Frahm, CVPR 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpr.models.attention.base import AttentionOutput
from vpr.models.attention.deattention import DeAttention

# (kernel size, output channels) of the three parallel context filters of the paper.
CONTEXT_FILTERS: tuple[tuple[int, int], ...] = ((3, 32), (5, 32), (7, 20))


class CRN(nn.Module):
    """Per-location reweighting mask m (B, 1, H, W) for the head's aggregation (docs/method.md section 4).

    x -> avg-pool 3x3 stride 2 (padding 1, so any size works, including 1x1) -> three parallel convs
    3x3 -> 32, 5x5 -> 32, 7x7 -> 20 (same padding) each + ReLU -> concat (84) -> 1x1 conv -> 1 + ReLU ->
    bilinear upsampling to exactly the input grid (H, W) -> m.

    The features are returned unchanged and m is passed as aggregation weights, so the head computes
    V[k] = sum_i m_i a_k(x_i) (x_i - c_k) (multiplying the features by m would be erased by NetVLAD's
    per-location L2 normalisation).

    The last layer starts with bias ``initial_weight`` and weights ~ N(0, init_std^2), so m starts nearly
    constant and positive: a CRN added to a trained NetVLAD initially leaves its descriptor (nearly) as it
    was, since a constant weight is removed by NetVLAD's intra-normalisation.

    Parameters: sum over filters (k, n) of (C*k*k*n + n) + (84 + 1).
    """

    #: torch has no deterministic CUDA backward for bilinear upsampling (vpr.build checks trainer.deterministic=true)
    cuda_backward_deterministic = False

    def __init__(self, channels: int, initial_weight: float = 1.0, init_std: float = 1e-3) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"CRN (vpr/models/attention/crn.py): channels must be positive, got {channels}.")
        if initial_weight <= 0:
            raise ValueError(
                "CRN (vpr/models/attention/crn.py): initial_weight must be > 0, otherwise the final ReLU "
                f"starts at 0 and no gradient flows; got {initial_weight}."
            )
        self.channels = channels
        self.context = nn.ModuleList(
            nn.Conv2d(channels, out, kernel_size=k, padding=k // 2) for k, out in CONTEXT_FILTERS
        )
        concat = sum(out for _, out in CONTEXT_FILTERS)
        self.accumulate = nn.Conv2d(concat, 1, kernel_size=1)
        nn.init.normal_(self.accumulate.weight, mean=0.0, std=init_std)
        nn.init.constant_(self.accumulate.bias, initial_weight)

    def forward(self, x: Tensor) -> AttentionOutput:
        """x: (B, C, H, W) -> AttentionOutput(x, weights=m (B, 1, H, W), mask=m)."""
        height, width = x.shape[-2:]
        # count_include_pad=False: border cells average only real locations, not zero padding.
        pooled = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
        context = torch.cat([F.relu(conv(pooled)) for conv in self.context], dim=1)
        low_res = F.relu(self.accumulate(context))
        m = F.interpolate(low_res, size=(height, width), mode="bilinear", align_corners=False)
        return AttentionOutput(x, m, m)


class PaperCRN(DeAttention):
    """The paper code's "CRN" row, which is not Kim et al.'s CRN: the de-attention mask head without guidance.

    x is L2-normalised over channels, the mask comes from the same three branches (3x3 -> 32, 5x5 -> 32,
    7x7 -> 20, each conv -> ReLU -> BatchNorm, reflect padding) and 1x1 conv -> ReLU -> BatchNorm -> sigmoid, and
    the features become normalise(x) * mask; there is no pooling before the branches and no upsampling. With a
    NetVLAD head this leaves the descriptor unchanged (every location is L2-normalised again), which is what that
    code evaluated. It exists to load and evaluate that code's released CRN checkpoints (``attention=crn_paper``);
    the mask is not supervised.
    """

    supervised_mask = False

    def __init__(self, channels: int) -> None:
        super().__init__(channels, version=1, apply="features", normalize_input=True)

    def forward(self, x: Tensor) -> AttentionOutput:
        """x: (B, C, H, W) -> AttentionOutput(normalise(x) * mask, None, mask (B, 1, H, W))."""
        normalised = F.normalize(x, p=2, dim=1)
        mask = self.compute_mask(x)
        return AttentionOutput(normalised * mask, None, mask)
