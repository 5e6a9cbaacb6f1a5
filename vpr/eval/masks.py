"""How well an attention mask separates what the guidance suppresses (people, vehicles, sky) from the static scene.

Conventions of the project (vpr/data/guidance.py, vpr/models/attention/deattention.py): the guidance target of a
feature-grid cell is the fraction of its pixels NOT of a suppressed class (1 = static scene), and the
de-attention mask is trained towards it (1 = keep). Per cell, the suppressed share is ``1 - target``.

- ``mask_on_suppressed``: mean mask value over the suppressed area (cells weighted by their suppressed share);
  a mask that learned its task is low there.
- ``mask_on_static``: mean mask value over the static area (weighted by the static share); high when learned.
- ``auc``: ROC-AUC of ``1 - mask`` as a score for "this cell is mostly suppressed" (suppressed share > 0.5):
  1 for a mask that ranks every suppressed cell below every static one, 0.5 for a mask that learned nothing
  (e.g. a constant), NaN when the images hold only one kind of cell.
"""

from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U with average ranks for ties)."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"roc_auc: {scores.size} scores for {labels.size} labels")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mask_quality(masks: np.ndarray, keep_targets: np.ndarray) -> dict[str, float]:
    """masks / keep_targets: (N, h, w) (or any equal shapes) in [0, 1], on the same feature grid."""
    masks = np.asarray(masks, dtype=np.float64)
    keep = np.asarray(keep_targets, dtype=np.float64)
    if masks.shape != keep.shape:
        raise ValueError(f"mask_quality: masks {masks.shape} and targets {keep.shape} differ")
    suppressed = 1.0 - keep
    return {
        "mask_on_suppressed": float((masks * suppressed).sum() / suppressed.sum())
        if suppressed.sum() > 0
        else float("nan"),
        "mask_on_static": float((masks * keep).sum() / keep.sum()) if keep.sum() > 0 else float("nan"),
        "auc": roc_auc(1.0 - masks, suppressed > 0.5),
        "suppressed_share": float(suppressed.mean()),
    }
