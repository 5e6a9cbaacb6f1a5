"""The bodies of the three scripts, side by side: :mod:`.train` (train.py), :mod:`.evaluate` (eval.py),
:mod:`.cluster` (cluster.py), and :mod:`.test_sets` (several test sets in one command, for the first two).

Each reads the composed config top to bottom: build the pieces (:mod:`vpr.build`), initialise the head
(:mod:`vpr.centroids`), load weights (:mod:`vpr.checkpoints`), run, write results atomically (:mod:`vpr.io`).
"""

from __future__ import annotations

import logging


def single_log_stream() -> None:
    """Lightning logs through its own console handler and Hydra's root handler: keep only Hydra's (console + file)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).handlers.clear()
