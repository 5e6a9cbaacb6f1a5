"""Common interface of the attention modules applied to the backbone's last feature map.

Every attention module maps a feature map x: (B, C, h, w) to an :class:`AttentionOutput`:

- ``features``: (B, C, h, w), what the head pools;
- ``weights``: (B, 1, h, w) per-location aggregation weights for the head, or None (uniform).
  NetVLAD L2-normalises every location before aggregating, so a positive per-location factor applied
  to the *features* is erased by that normalisation; a spatial mask only changes the descriptor when it
  weights the aggregation (docs/method.md section 5). That is why spatial modules can hand their mask here.
- ``mask``: (B, 1, h, w) the spatial mask to visualise or supervise (auxiliary loss), or None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from torch import Tensor, nn


def hidden_channels(channels: int, reduction: int, owner: str) -> int:
    """C / r for the bottleneck MLPs of SE, CBAM and BAM, with a clear error when it would be 0."""
    if channels < 1 or reduction < 1:
        raise ValueError(f"{owner}: channels ({channels}) and reduction ({reduction}) must be positive.")
    hidden = channels // reduction
    if hidden < 1:
        raise ValueError(
            f"{owner}: channels // reduction = {channels} // {reduction} = 0; set attention.reduction <= {channels}."
        )
    return hidden


class AttentionOutput(NamedTuple):
    """What an attention module returns (see the module docstring for the meaning of each field)."""

    features: Tensor
    weights: Tensor | None
    mask: Tensor | None


class Identity(nn.Module):
    """No attention: features pass through unchanged, no weights, no mask.

    ``channels`` is accepted (and ignored) so that every attention config can pass
    ``channels: ${backbone.out_channels}`` uniformly.
    """

    def __init__(self, channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> AttentionOutput:
        """x: (B, C, h, w) -> AttentionOutput(x, None, None)."""
        return AttentionOutput(x, None, None)


class Combined(nn.Module):
    """Chain attention modules, e.g. de-attention then SE (the paper's ``deattention_se`` model).

    Features flow through the modules in order (each sees the previous one's ``features``).
    Aggregation weights: those of the modules that produce weights, multiplied together (each one
    down-weights locations independently; with a single producer this is just its weights).
    Mask: the first module's mask that is not None (in ``deattention_se`` the de-attention mask, which
    the auxiliary loss supervises).

    Args:
        modules: the attention modules, applied in order (at least one), or factories taking ``channels``
            (a Hydra config lists them with ``_partial_: true`` so that ``channels`` is passed once:
            ``modules: [{_target_: ...DeAttention, _partial_: true}, {_target_: ...SE, _partial_: true}]``).
        channels: passed to the factories.
    """

    def __init__(self, modules: Sequence[nn.Module | Callable[..., nn.Module]], channels: int | None = None) -> None:
        super().__init__()
        modules = [m if isinstance(m, nn.Module) else m(channels=channels) for m in modules]
        if not modules:
            raise ValueError(
                "Combined attention (vpr/models/attention/base.py) needs at least one module; "
                "use attention=none for no attention."
            )
        self.stages = nn.ModuleList(modules)

    @property
    def supervised_mask(self) -> bool:
        """True when its mask (the first stage's that has one) comes from a module the guidance supervises."""
        return any(getattr(stage, "supervised_mask", False) for stage in self.stages)

    def forward(self, x: Tensor) -> AttentionOutput:
        """x: (B, C, h, w) -> AttentionOutput(features (B, C, h, w), weights, mask)."""
        features = x
        weights: Tensor | None = None
        mask: Tensor | None = None
        for stage in self.stages:
            out = stage(features)
            if not isinstance(out, AttentionOutput):
                raise TypeError(
                    f"Combined attention: stage {type(stage).__name__} returned {type(out).__name__}; "
                    "every attention module must return vpr.models.attention.base.AttentionOutput."
                )
            features = out.features
            if out.weights is not None:
                weights = out.weights if weights is None else weights * out.weights
            if mask is None and out.mask is not None:
                mask = out.mask
        return AttentionOutput(features, weights, mask)
