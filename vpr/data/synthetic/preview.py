"""Previews of a generated synthetic city: colourised label maps and a query / database contact sheet."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from vpr.data.mat import load_dbstruct
from vpr.data.synthetic.config import CLASS_COLOURS, DATASET_NAME
from vpr.data.synthetic.writer import _labels_path


def colourise_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 class ids -> (H, W, 3) uint8 colours (CLASS_COLOURS)."""
    return CLASS_COLOURS[np.clip(labels, 0, len(CLASS_COLOURS) - 1)]


def make_preview(
    root: str | os.PathLike, out_path: str | os.PathLike, split: str = "train", pairs: int = 4, scale: int = 2
) -> Path:
    """Contact sheet: rows of [query | nearest database image with the same yaw index | their label maps]."""
    root = Path(root)
    s = load_dbstruct(root / "datasets" / f"{DATASET_NAME}_{split}.mat")
    if s.num_q == 0:
        raise ValueError(f"make_preview: split {split!r} of {root} has no queries")
    rows = []
    picks = np.linspace(0, s.num_q - 1, pairs).astype(int)
    for qi in picks:
        q_name = s.q_image[qi]
        yaw_tag = q_name.rsplit("_", 1)[-1]
        dist = np.hypot(*(s.utm_db - s.utm_q[qi]).T)
        same_yaw = np.array([n.endswith(yaw_tag) for n in s.db_image])
        di = int(np.argmin(np.where(same_yaw, dist, np.inf)))
        q_path = root / "queries_real" / q_name
        d_path = root / s.db_image[di]
        tiles = [
            np.asarray(Image.open(q_path).convert("RGB")),
            np.asarray(Image.open(d_path).convert("RGB")),
            colourise_labels(np.asarray(Image.open(_labels_path(q_path)))),
            colourise_labels(np.asarray(Image.open(_labels_path(d_path)))),
        ]
        gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1))
    hgap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    sheet = np.concatenate([x for r in rows for x in (r, hgap)][:-1], axis=0)
    img = Image.fromarray(sheet)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path)
    return out_path
