"""Figures of retrieval results: query, its attention mask and semantic target, and the top-K database images.

One row per query::

    query | attention mask over the query | semantic target over the query | top-1 | top-2 | ... | top-K

Every retrieved image is framed green when it is a true positive (within the positive radius, 25 m on
Pittsburgh) and red otherwise; its title also says "hit" / "miss" so the figure reads without colour.
Masks and targets are low-resolution maps (h, w) in [0, 1], upsampled to the image size and drawn as a
semi-transparent heat map.

Everything goes through :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot): no global figure
state, works headless, and nothing changes the process-wide backend. Files are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from vpr.io import atomic_path

GREEN: tuple[int, int, int] = (0, 190, 0)
RED: tuple[int, int, int] = (220, 0, 0)

__all__ = [
    "GREEN",
    "RED",
    "frame",
    "overlay",
    "resize_mask",
    "save_figure_atomic",
    "save_retrieval_figure",
]


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: expected an RGB image of shape (H, W, 3), got shape {image.shape}.")
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name}: expected dtype uint8 (0..255), got {image.dtype}; "
            "convert with (np.clip(x, 0, 1) * 255).round().astype(np.uint8) for float images in [0, 1]."
        )
    return image


def _check_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask, dtype=np.float64)
    if mask.ndim == 3 and mask.shape[0] == 1:  # a (1, h, w) slice of an attention output
        mask = mask[0]
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"{name}: expected a 2-D map of shape (h, w), got shape {mask.shape}.")
    if not np.isfinite(mask).all():
        raise ValueError(f"{name}: contains NaN or inf values.")
    # A small tolerance: sigmoid outputs in float32 can round a hair past 1.
    if mask.min() < -1e-6 or mask.max() > 1 + 1e-6:
        raise ValueError(
            f"{name}: values must lie in [0, 1], got [{mask.min():.4g}, {mask.max():.4g}]; "
            "normalise it first, e.g. (m - m.min()) / (m.max() - m.min())."
        )
    return np.clip(mask, 0.0, 1.0)


def _source_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sampling positions with half-pixel centres (torch's align_corners=False), edges clamped."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def resize_mask(mask: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize a map to ``size`` = (H, W).

    mask: (h, w) float. Returns (H, W) float64.
    ``bilinear`` uses half-pixel centres with clamped edges (same numbers as torch's
    ``F.interpolate(mode="bilinear", align_corners=False)``), ``nearest`` picks ``floor(i * h / H)``.
    """
    mask = np.asarray(mask, dtype=np.float64)
    if mask.ndim != 2:
        raise ValueError(f"resize_mask: expected a 2-D map (h, w), got shape {mask.shape}.")
    out_h, out_w = (int(s) for s in size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resize_mask: target size must be positive, got {size}.")
    in_h, in_w = mask.shape
    if mode == "nearest":
        rows = np.minimum(np.floor(np.arange(out_h) * in_h / out_h).astype(np.int64), in_h - 1)
        cols = np.minimum(np.floor(np.arange(out_w) * in_w / out_w).astype(np.int64), in_w - 1)
        return mask[rows][:, cols]
    if mode != "bilinear":
        raise ValueError(f"resize_mask: mode must be 'bilinear' or 'nearest', got {mode!r}.")
    r0, r1, wr = _source_index(in_h, out_h)
    m = mask[r0] * (1.0 - wr)[:, None] + mask[r1] * wr[:, None]  # (H, w)
    c0, c1, wc = _source_index(in_w, out_w)
    return m[:, c0] * (1.0 - wc)[None, :] + m[:, c1] * wc[None, :]  # (H, W)


def frame(image: np.ndarray, color: Sequence[int], width: int) -> np.ndarray:
    """A copy of ``image`` with its outer ``width`` pixels on every side painted ``color``.

    image: (H, W, 3) uint8; color: (r, g, b) in 0..255. Returns (H, W, 3) uint8, same size: the border
    covers the edge of the picture instead of growing it, so framed and plain images line up in a grid.
    """
    image = _check_image(image, "frame: image")
    rgb = np.asarray(color)
    if rgb.shape != (3,) or rgb.min() < 0 or rgb.max() > 255:
        raise ValueError(f"frame: color must be three values in 0..255, got {color!r}.")
    h, w = image.shape[:2]
    width = int(width)
    if width < 1 or 2 * width >= min(h, w):
        raise ValueError(
            f"frame: width must be between 1 and {max((min(h, w) - 1) // 2, 0)} for a {h}x{w} image, got {width}."
        )
    out = image.copy()
    out[:width] = rgb
    out[-width:] = rgb
    out[:, :width] = rgb
    out[:, -width:] = rgb
    return out


def overlay(
    image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, cmap: str = "jet", mode: str = "bilinear"
) -> np.ndarray:
    """Blend a heat map of ``mask`` over ``image``: ``(1 - alpha) * image + alpha * 255 * cmap(mask)``.

    image: (H, W, 3) uint8; mask: (h, w) in [0, 1], resized to (H, W) with ``mode`` (see :func:`resize_mask`).
    Returns (H, W, 3) uint8 (rounded).
    """
    image = _check_image(image, "overlay: image")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must lie in [0, 1], got {alpha}.")
    mask = _check_mask(mask, "overlay: mask")
    resized = np.clip(resize_mask(mask, image.shape[:2], mode=mode), 0.0, 1.0)
    try:
        colormap = colormaps[cmap]
    except KeyError:
        raise ValueError(f"overlay: unknown matplotlib colormap {cmap!r}; try 'jet', 'inferno' or 'gray'.") from None
    heat = colormap(resized)[..., :3] * 255.0  # (H, W, 3)
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * heat
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_figure_atomic(fig: Figure, path: str | os.PathLike, dpi: float | None = None) -> Path:
    """Save ``fig`` through a temporary file in the target folder and rename it: readers never see half a PNG."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path


def _optional_list(values: Sequence | None, n: int, name: str) -> list | None:
    if values is None:
        return None
    values = list(values)
    if len(values) != n:
        raise ValueError(
            f"save_retrieval_figure: {name} has {len(values)} entries for {n} queries; give one per query."
        )
    return values


def save_retrieval_figure(
    path: str | os.PathLike,
    queries: Sequence[np.ndarray],
    retrieved: Sequence[Sequence[np.ndarray]],
    correct: Sequence[Sequence[bool]],
    masks: Sequence[np.ndarray | None] | None = None,
    targets: Sequence[np.ndarray | None] | None = None,
    titles: Sequence[str] | None = None,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    cell_inches: float = 2.0,
    dpi: float = 100,
) -> Path:
    """Write the retrieval figure to ``path`` (format from the suffix, PNG by default) and return the path.

    queries: Q images (H, W, 3) uint8. retrieved[i]: the top-K images of query i (best first), each (H', W', 3)
    uint8. correct[i][k]: whether retrieved[i][k] is a true positive. masks / targets: per query a map (h, w)
    in [0, 1] or None (an empty cell); leave the whole argument None to drop the column. titles: one per query.
    """
    if len(queries) == 0:
        raise ValueError("save_retrieval_figure: no queries given; pass at least one query image.")
    n_q = len(queries)
    queries = [_check_image(q, f"save_retrieval_figure: queries[{i}]") for i, q in enumerate(queries)]
    if len(retrieved) != n_q or len(correct) != n_q:
        raise ValueError(
            f"save_retrieval_figure: {n_q} queries but {len(retrieved)} retrieved lists and {len(correct)} "
            "correct lists; give one list of each per query."
        )
    for i, (imgs, flags) in enumerate(zip(retrieved, correct)):
        if len(imgs) != len(flags):
            raise ValueError(
                f"save_retrieval_figure: query {i} has {len(imgs)} retrieved images but {len(flags)} correct flags."
            )
    masks_l = _optional_list(masks, n_q, "masks")
    targets_l = _optional_list(targets, n_q, "targets")
    titles_l = _optional_list(titles, n_q, "titles")

    top_k = max(len(r) for r in retrieved)
    extra = [("attention mask", masks_l)] if masks_l is not None else []
    extra += [("semantic target", targets_l)] if targets_l is not None else []
    n_cols = 1 + len(extra) + top_k
    h0, w0 = queries[0].shape[:2]
    cell_w, cell_h = cell_inches, cell_inches * h0 / w0 + 0.35  # + room for the title line
    fig = Figure(figsize=(n_cols * cell_w, n_q * cell_h), layout="constrained")
    axes = fig.subplots(n_q, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()

    for i, query in enumerate(queries):
        row = axes[i]
        row[0].imshow(query)
        row[0].set_title(titles_l[i] if titles_l is not None else f"query {i}", fontsize=9)
        for j, (label, maps) in enumerate(extra, start=1):
            m = maps[i]
            if m is None:
                row[j].set_title(f"{label}: none", fontsize=9)
                continue
            row[j].imshow(overlay(query, _check_mask(m, f"save_retrieval_figure: {label} of query {i}"), alpha, cmap))
            row[j].set_title(label, fontsize=9)
        for k, (img, ok) in enumerate(zip(retrieved[i], correct[i])):
            img = _check_image(img, f"save_retrieval_figure: retrieved[{i}][{k}]")
            width = max(2, round(0.05 * min(img.shape[:2])))
            width = min(width, (min(img.shape[:2]) - 1) // 2)
            shown = frame(img, GREEN if ok else RED, width) if width >= 1 else img
            ax = row[1 + len(extra) + k]
            ax.imshow(shown)
            ax.set_title(
                f"top-{k + 1} {'hit' if ok else 'miss'}",
                fontsize=9,
                color=np.array(GREEN if ok else RED) / 255,
            )
    return save_figure_atomic(fig, path, dpi=dpi)
