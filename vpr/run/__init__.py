"""The bodies of the scripts, side by side: :mod:`.train` (train.py), :mod:`.evaluate` (eval.py),
:mod:`.cluster` (cluster.py), :mod:`.retrieve` (retrieve.py), and :mod:`.test_sets` (several test sets in one
command, for train.py and eval.py).

Each reads the composed config top to bottom: build the pieces (:mod:`vpr.build`), initialise the head
(:mod:`vpr.centroids`), load weights (:mod:`vpr.checkpoints`), run, write results atomically (:mod:`vpr.io`).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def single_log_stream() -> None:
    """Lightning logs through its own console handler and Hydra's root handler: keep only Hydra's (console + file)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).handlers.clear()


def save_predictions(module, dm, out_dir: Path, suffix: str = "", worst: int = 6) -> None:
    """After ``trainer.test``: ``predictions<suffix>.csv/.json`` (every query's ranked database images, distances,
    correct or not) and ``pictures/worst_failures<suffix>.png`` (the queries whose true match ranked lowest)."""
    from vpr.eval.exports import worst_failures, write_split_predictions
    from vpr.viz.pictures import save_retrieval_pictures

    predictions, distances = module.predictions.get("test"), module.prediction_distances.get("test")
    if predictions is None or distances is None:
        return
    split = dm.test_split
    files = write_split_predictions(out_dir, split, predictions, distances, stem=f"predictions{suffix}")
    log.info("per-query predictions: %s", files[0])
    failures = worst_failures(predictions, distances, split.eval_positives(), worst)
    try:
        save_retrieval_pictures(module, dm, "test", out_dir / "pictures" / f"worst_failures{suffix}.png",
                                queries=failures, caption="failed query")
    except Exception as e:  # a picture is a bonus: never fail the run for it
        log.warning("no picture of the worst failures: %s", e)
