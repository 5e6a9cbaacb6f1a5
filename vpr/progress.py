"""Progress bars that suit where the output goes.

On a terminal: a live tqdm bar. Into a file or pipe (CI, SLURM logs, ``| tee``): the same bar redrawn at most
every ``LOG_INTERVAL_S`` seconds, so a cache pass over 100k images writes a handful of lines instead of
thousands.
"""

from __future__ import annotations

import sys
from typing import Any

# tqdm.std, not tqdm.auto: the latter's class (made for async loops too) calls iter() on the iterable when it is
# made and again when it is looped over, so a DataLoader would start its worker processes twice (and throw away
# the batches the first ones had already loaded).
from tqdm.std import tqdm

LOG_INTERVAL_S = 30.0


def interactive(stream: Any = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, redrawn at most every LOG_INTERVAL_S seconds when not on a terminal."""
    if not interactive(kwargs.get("file")):
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL_S)
        kwargs.setdefault("dynamic_ncols", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
