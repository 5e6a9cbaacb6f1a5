"""Reading images as users bring them: phone photos stored sideways with an EXIF orientation, 16-bit PNGs, files
too large to decode safely. Expected pixels come from the formats' definitions, not from the reader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vpr.data.dataset import load_image
from vpr.errors import DataError


def asymmetric(h=24, w=36) -> np.ndarray:
    """An RGB picture whose rotations all differ: a bright top-left block on a horizontal ramp."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[..., 0] = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
    a[: h // 3, : w // 4] = 255
    return a


def test_an_exif_orientation_6_photo_is_read_upright(tmp_path):
    """Orientation 6 (EXIF): the stored pixels must be turned 90 degrees clockwise to be seen upright, so a picture
    stored turned 90 degrees counter-clockwise with that tag reads as the upright picture."""
    upright = asymmetric()
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))  # k=1: counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    stored.save(tmp_path / "phone.jpg", quality=98, exif=exif)
    read = np.asarray(load_image(tmp_path / "phone.jpg"), dtype=np.float64)
    assert read.shape == upright.shape
    assert np.abs(read - upright).mean() < 4.0  # JPEG's loss only
    assert np.abs(read - np.rot90(np.rot90(upright))).mean() > 30.0  # not merely any turn of it


def test_a_16_bit_png_is_scaled_to_8_bits(tmp_path):
    values = np.array([[0, 257, 32768], [65535, 1000, 50000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "depth.png")
    read = np.asarray(load_image(tmp_path / "depth.png"))
    want = np.round(values / 65535.0 * 255.0).astype(np.uint8)
    assert read.shape == (2, 3, 3)
    np.testing.assert_array_equal(read[..., 0], want)
    np.testing.assert_array_equal(read[..., 1], want)


def test_an_image_too_large_to_decode_safely_is_one_error_naming_it(tmp_path, monkeypatch):
    Image.new("RGB", (40, 40)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 pixels: over twice the limit
    with pytest.raises(DataError, match=r"huge.png is too large to decode safely"):
        load_image(tmp_path / "huge.png")
