"""Image transforms: resize to the configured size, tensor, ImageNet normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision import transforms as T

# ImageNet statistics that torchvision's pretrained weights expect (RGB, images scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def checked_image_size(image_size: Any) -> tuple[int, int]:
    """``data.image_size`` as (height, width), two whole numbers >= 16; anything else is a ValueError."""
    try:
        size = [float(v) for v in image_size]
        ok = len(size) == 2 and all(v == int(v) and v >= 16 for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shown = list(image_size) if isinstance(image_size, Sequence) and not isinstance(image_size, str) else image_size
        raise ValueError(
            f"data.image_size={shown!r}: give [height, width] in pixels, both >= 16, e.g. data.image_size=[480,640]"
        )
    return int(size[0]), int(size[1])


def eval_transform(image_size: Sequence[int]) -> T.Compose:
    """PIL image -> (3, H, W) float tensor; ``image_size`` is (height, width), e.g. (480, 640) for Pittsburgh."""
    return T.Compose(
        [
            T.Resize(checked_image_size(image_size), antialias=True),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
