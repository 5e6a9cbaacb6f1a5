"""Mask-quality metrics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vpr.eval.masks import mask_quality, roc_auc


def test_auc_hand_examples():
    # every positive above every negative: 1; the reverse: 0; all tied: 0.5
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5], [1, 0, 0]) == 0.5
    # by hand: positives {0.8, 0.4}, negatives {0.6, 0.2, 0.4}; pairs won: 0.8 beats 3, 0.4 beats 1 and ties 1
    # -> (3 + 1 + 0.5) / (2 * 3) = 0.75
    assert roc_auc([0.8, 0.4, 0.6, 0.2, 0.4], [1, 1, 0, 0, 0]) == pytest.approx(0.75)
    assert math.isnan(roc_auc([0.3, 0.4], [1, 1]))


def test_a_mask_equal_to_the_target_scores_one_a_constant_mask_one_half():
    rng = np.random.default_rng(0)
    keep = rng.uniform(0, 1, (5, 6, 8))  # fraction of static pixels per cell
    keep[keep > 0.45] = np.clip(keep[keep > 0.45], 0.55, 1.0)  # no cell sits exactly at the 0.5 boundary
    perfect = mask_quality(keep, keep)
    assert perfect["auc"] == 1.0
    constant = mask_quality(np.full_like(keep, 0.7), keep)
    assert constant["auc"] == 0.5
    assert constant["mask_on_suppressed"] == pytest.approx(0.7) and constant["mask_on_static"] == pytest.approx(0.7)
    inverted = mask_quality(1 - keep, keep)
    assert inverted["auc"] == 0.0


def test_means_are_area_weighted_by_hand():
    # two cells: one fully suppressed (keep 0) with mask 0.2, one half suppressed (keep 0.5) with mask 0.6
    q = mask_quality(np.array([0.2, 0.6]), np.array([0.0, 0.5]))
    # suppressed shares 1 and 0.5: (0.2 * 1 + 0.6 * 0.5) / 1.5 = 1/3; static shares 0 and 0.5: 0.6
    assert q["mask_on_suppressed"] == pytest.approx(1 / 3)
    assert q["mask_on_static"] == pytest.approx(0.6)
    assert q["suppressed_share"] == pytest.approx(0.75)
