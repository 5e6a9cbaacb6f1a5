"""Tests for vpr/viz/retrievals.py: frame / resize / overlay against hand-worked pixels, and the saved figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from vpr.viz.retrievals import GREEN, RED, frame, overlay, resize_mask, save_retrieval_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image(h: int, w: int, value: int | None = None, seed: int = 0) -> np.ndarray:
    if value is not None:
        return np.full((h, w, 3), value, dtype=np.uint8)
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ frame


def test_frame_paints_the_border_and_leaves_the_interior():
    img = image(10, 12)
    original = img.copy()
    out = frame(img, (1, 2, 3), width=2)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    for y in range(10):
        for x in range(12):
            on_border = y < 2 or y >= 8 or x < 2 or x >= 10
            expected = (1, 2, 3) if on_border else tuple(original[y, x])
            assert tuple(out[y, x]) == expected, (y, x)
    assert np.array_equal(img, original)  # the input is not modified


@pytest.mark.parametrize("width", [0, 5, 7])
def test_frame_rejects_widths_that_leave_no_interior(width):
    with pytest.raises(ValueError, match="width"):
        frame(image(10, 12), (0, 255, 0), width)


def test_frame_rejects_bad_colour_and_images():
    with pytest.raises(ValueError, match="color"):
        frame(image(10, 12), (0, 300, 0), 1)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        frame(np.zeros((10, 12), np.uint8), (0, 255, 0), 1)
    with pytest.raises(ValueError, match="uint8"):
        frame(np.zeros((10, 12, 3), np.float32), (0, 255, 0), 1)


# ----------------------------------------------------------------------------------------------- resize


def test_bilinear_resize_matches_hand_worked_row():
    # Output x samples input position (x + 0.5) * 2 / 8 - 0.5, clamped to [0, 1]:
    # -0.375, -0.125, 0.125, 0.375, 0.625, 0.875, 1.125, 1.375 -> 0, 0, .125, .375, .625, .875, 1, 1.
    got = resize_mask(np.array([[0.0, 1.0]]), (1, 8))
    np.testing.assert_allclose(got, [[0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1]])


def test_bilinear_resize_of_a_linear_ramp_in_2d():
    # m[r, c] = 2 r + c is linear, so bilinear sampling returns 2 * row_pos + col_pos exactly;
    # 2 -> 4 samples at -0.25, 0.25, 0.75, 1.25 -> clamped 0, 0.25, 0.75, 1.
    pos = np.array([0.0, 0.25, 0.75, 1.0])
    got = resize_mask(np.array([[0.0, 1.0], [2.0, 3.0]]), (4, 4))
    np.testing.assert_allclose(got, 2 * pos[:, None] + pos[None, :])


def test_bilinear_resize_matches_torch():
    torch = pytest.importorskip("torch")
    mask = np.random.default_rng(1).random((3, 5))
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(mask)[None, None], size=(7, 13), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(resize_mask(mask, (7, 13)), ref, atol=1e-12)


def test_nearest_resize():
    np.testing.assert_array_equal(resize_mask(np.array([[0.0, 1.0]]), (2, 4), mode="nearest"), [[0, 0, 1, 1]] * 2)


# ---------------------------------------------------------------------------------------------- overlay


def test_overlay_follows_the_blend_formula():
    img = image(4, 8, value=100)
    mask = np.zeros((4, 8))
    mask[:, 4:] = 1.0
    out = overlay(img, mask, alpha=0.4, cmap="gray")  # gray(0) = black, gray(1) = white
    assert out.shape == (4, 8, 3) and out.dtype == np.uint8
    assert (out[:, :4] == 60).all()  # 0.6 * 100 + 0.4 * 0
    assert (out[:, 4:] == 162).all()  # 0.6 * 100 + 0.4 * 255 = 162


def test_overlay_upsamples_a_small_mask():
    out = overlay(image(6, 8, value=100), np.array([[0.0, 1.0]]), alpha=0.4, cmap="gray")
    assert out.shape == (6, 8, 3)
    # Columns 0, 1 sample mask 0; columns 6, 7 sample mask 1 (see the hand-worked resize row above).
    assert (out[:, :2] == 60).all() and (out[:, 6:] == 162).all()
    middle = out[0, 2:6, 0].astype(int)
    assert (np.diff(middle) > 0).all() and 60 < middle[0] and middle[-1] < 162


def test_overlay_alpha_zero_is_the_image_and_bad_masks_raise():
    img = image(5, 7)
    assert np.array_equal(overlay(img, np.full((2, 2), 0.7), alpha=0.0), img)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay(img, np.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, np.zeros((2, 2)), alpha=1.5)


# ----------------------------------------------------------------------------------------------- figure


def count_near(img: np.ndarray, rgb: tuple[int, int, int]) -> int:
    """Pixels of a loaded PNG (floats in [0, 1]) within 1% of ``rgb``."""
    return int((np.abs(img[..., :3] - np.array(rgb) / 255.0).max(axis=-1) < 1e-2).sum())


def test_figure_has_one_row_per_query_and_a_column_per_image(tmp_path: Path):
    q = image(60, 80, seed=1)
    retrieved = [[image(60, 80, seed=s) for s in range(2, 6)]]  # query + mask + target + 4 = 7 columns
    path = save_retrieval_figure(
        tmp_path / "fig" / "retrievals.png",
        [q],
        retrieved,
        [[True, False, False, True]],
        masks=[np.random.default_rng(0).random((6, 8))],
        targets=[np.eye(6, 8)],
        titles=["query 17"],
    )
    assert path == tmp_path / "fig" / "retrievals.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = imread(path)
    h, w = img.shape[:2]
    assert w > 3 * h  # 7 cells of aspect 4:3 side by side
    # Two framed images per colour: a ~7-pixel band around a 200 x 150 cell is thousands of pixels, far more
    # than the coloured title text alone could give.
    assert count_near(img, GREEN) > 2000 and count_near(img, RED) > 2000
    assert not list(path.parent.glob(".*"))  # temporary file renamed away


def test_figure_without_masks_or_targets(tmp_path: Path):
    queries = [image(60, 80, seed=s) for s in range(3)]
    retrieved = [[image(60, 80, seed=10 + s)] for s in range(3)]  # 3 rows x 2 columns: taller than wide
    path = save_retrieval_figure(tmp_path / "r.png", queries, retrieved, [[True], [True], [True]])
    img = imread(path)
    assert img.shape[0] > img.shape[1]
    assert count_near(img, GREEN) > 2000 and count_near(img, RED) == 0


def test_figure_accepts_none_entries_and_ragged_top_k(tmp_path: Path):
    queries = [image(30, 40, seed=0), image(30, 40, seed=1)]
    retrieved = [[image(30, 40, seed=2), image(30, 40, seed=3)], [image(30, 40, seed=4)]]
    path = save_retrieval_figure(
        tmp_path / "r.png", queries, retrieved, [[True, False], [False]], masks=[None, np.ones((3, 4))]
    )
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_figure_rejects_mismatched_inputs(tmp_path: Path):
    q = [image(30, 40)]
    with pytest.raises(ValueError, match="correct"):
        save_retrieval_figure(tmp_path / "r.png", q, [[image(30, 40)]], [[True, False]])
    with pytest.raises(ValueError, match="masks"):
        save_retrieval_figure(tmp_path / "r.png", q, [[image(30, 40)]], [[True]], masks=[None, None])
    with pytest.raises(ValueError, match="no queries"):
        save_retrieval_figure(tmp_path / "r.png", [], [], [])
    assert not (tmp_path / "r.png").exists()
