"""Image transforms: resize to the configured size, tensor, ImageNet normalisation."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

# ImageNet statistics that torchvision's pretrained weights expect (RGB, images scaled to [0, 1]).
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
