"""The loaders hand over uint8 pixels and the network normalises them on its device: the values must be those of
torchvision's ToTensor + Normalize (the numbers every earlier run and released checkpoint saw)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from vpr.data.transforms import eval_transform, normalise_pixels, pixel_statistics


def test_normalise_pixels_follows_the_formula():
    # ImageNet's statistics written out here, not read from the module under test.
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    values = [0, 1, 37, 128, 254, 255]
    pixels = torch.tensor(values, dtype=torch.uint8).view(1, 1, 1, -1).expand(2, 3, 1, -1).contiguous()
    got = normalise_pixels(pixels, *pixel_statistics())
    assert got.dtype == torch.float32 and got.shape == pixels.shape
    for c in range(3):
        for j, v in enumerate(values):
            expected = (v / 255.0 - mean[c]) / std[c]
            assert got[1, c, 0, j].item() == pytest.approx(expected, abs=1e-6)


def test_loader_pixels_normalised_on_the_device_equal_torchvision_in_the_worker():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    pixels = eval_transform((24, 40))(image)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 24, 40)
    reference = T.Compose(
        [
            T.Resize((24, 40), antialias=True),
            T.ToTensor(),
            T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )(image)
    torch.testing.assert_close(normalise_pixels(pixels[None], *pixel_statistics())[0], reference, atol=0, rtol=0)


def test_float_images_pass_through_and_channels_last_is_applied():
    mean, std = pixel_statistics()
    floats = torch.randn(2, 3, 5, 7)
    assert normalise_pixels(floats, mean, std) is floats
    out = normalise_pixels(floats, mean, std, channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, floats, atol=0, rtol=0)
    pixels = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    out = normalise_pixels(pixels, mean, std, channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, normalise_pixels(pixels, mean, std), atol=0, rtol=0)
