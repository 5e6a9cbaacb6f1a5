"""Image transforms: resize to the configured size, tensor, ImageNet normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(image_size: Sequence[int]) -> T.Compose:
    """PIL image -> (3, H, W) float tensor; ``image_size`` is (height, width), e.g. (480, 640) for Pittsburgh."""
    if len(image_size) != 2 or min(image_size) < 16:
        raise ValueError(f"data.image_size must be [height, width] with both >= 16, got {list(image_size)}")
    return T.Compose(
        [
            T.Resize(tuple(int(s) for s in image_size), antialias=True),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) normalised -> [0, 1] RGB, for pictures."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)
