"""Image transforms: the loaders resize to the configured size and hand over uint8 pixels; the network's side
turns them into floats with ImageNet's normalisation (:func:`normalise_pixels`), on its own device.

Why uint8 across the loader: a 480x640 image is 0.9 MB as uint8 and 3.7 MB as float32. Converting and normalising
in the worker cost as much CPU as decoding the JPEG, and every byte is then copied between processes, into pinned
memory and to the GPU. On the device the conversion is one cheap pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
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
    """PIL image -> (3, H, W) uint8 tensor; ``image_size`` is (height, width), e.g. (480, 640) for Pittsburgh.
    The network normalises it (:func:`normalise_pixels`)."""
    return T.Compose([T.Resize(checked_image_size(image_size), antialias=True), T.PILToTensor()])


def pixel_statistics(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's mean and std as (1, 3, 1, 1) float32 tensors on ``device``."""
    return (
        torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1),
    )


def normalise_pixels(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """(B, 3, H, W) uint8 pixels -> float32 ``(x / 255 - mean) / std``, the same operations in the same order as
    torchvision's ToTensor + Normalize, so the values are the same. Any other dtype is taken as already
    normalised and passed through. ``channels_last``: the result in that memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if images.dtype != torch.uint8:
        return images.contiguous(memory_format=fmt) if channels_last else images
    return images.to(dtype=torch.float32, memory_format=fmt).div_(255).sub_(mean).div_(std)
