"""Pictures people look at after a run: queries, their attention mask and semantic target, top-5 retrievals."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vpr.data.guidance import area_target
from vpr.errors import DataError, user_message
from vpr.viz.retrievals import save_retrieval_figure

log = logging.getLogger(__name__)


def _rgb(path: Path, size_hw: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size_hw[1], size_hw[0]), Image.BILINEAR))


@torch.no_grad()
def save_retrieval_pictures(
    module,
    datamodule,
    stage: str,
    path: Path,
    num_queries: int = 4,
    top_k: int = 5,
    queries: Sequence[int] | None = None,
    caption: str = "query",
) -> Path | None:
    """A PNG of ``num_queries`` evenly spread queries (or the given ``queries``) of the ``stage`` split (after
    ``trainer.test``/validate).

    Retrievals are framed green when within the evaluation radius (25 m), red otherwise. The mask is the
    attention module's spatial mask (de-attention, CRN, CBAM, BAM), the target the semantic guidance's.
    """
    predictions = module.predictions.get(stage)
    if predictions is None:
        return None
    split = getattr(datamodule, f"{stage}_split")
    if queries is None:
        chosen = np.linspace(0, split.num_q - 1, num=min(num_queries, split.num_q)).round().astype(int)
    else:
        chosen = np.asarray(list(queries), dtype=int)
    if len(chosen) == 0:
        return None
    positives = split.eval_positives()
    size = datamodule.image_size
    masks, targets = [], []
    source = None
    if datamodule.guidance is not None and module.aux_weight > 0:
        try:
            source = datamodule.label_source(download=False)  # eval.py must not reach the network for a picture
            suppressed = sorted({i for g in datamodule.guidance.get("suppress", []) for i in source.group_ids(g)})
        except Exception as e:  # pictures are a bonus: never fail the run for them
            log.warning("no semantic targets in the pictures: %s", e)
            source = None
    was_training = module.training
    module.eval()
    for q in chosen:
        x = datamodule.transform(Image.open(split.q_paths[q]).convert("RGB"))[None].to(module.device)
        _, mask = module.describe(x)
        masks.append(None if mask is None else mask[0, 0].float().clamp(0, 1).cpu().numpy())
        if source is not None:
            grid = mask.shape[-2:] if mask is not None else (size[0] // 16, size[1] // 16)
            try:
                targets.append(area_target(source.labels(split.q_paths[q]), suppressed, tuple(grid)))
            except DataError as e:  # label maps under mask_dir need only cover the training images
                log.warning("no semantic targets in the pictures: %s", user_message(e))
                source = None
    module.train(was_training)
    out = save_retrieval_figure(
        path,
        queries=[_rgb(split.q_paths[q], size) for q in chosen],
        retrieved=[[_rgb(split.db_paths[i], size) for i in predictions[q, :top_k] if i >= 0] for q in chosen],
        correct=[[bool(np.isin(i, positives[q])) for i in predictions[q, :top_k] if i >= 0] for q in chosen],
        masks=masks if any(m is not None for m in masks) else None,
        targets=targets if source is not None else None,
        titles=[f"{caption} {q}" for q in chosen],
    )
    log.info("retrieval pictures: %s", out)
    return out
