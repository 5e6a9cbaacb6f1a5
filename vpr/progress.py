"""Progress bars that suit where the output goes.

On a terminal: a live tqdm bar. Into a file or pipe (CI, SLURM logs, ``| tee``): the same bar redrawn at most
every ``LOG_INTERVAL_S`` seconds, each redraw a line of its own, so a cache pass over 100k images writes a
handful of lines instead of thousands, and a log line (or an ``error:`` line) written between two redraws starts
a line of its own.
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


class LineWriter:
    """A progress bar's stream into a file or pipe: each redraw written as one line. tqdm draws for a terminal: a
    carriage return before each redraw, cursor moves for stacked bars, and no newline until the bar closes, so in
    a log file the redraws pile up on one line and the next log line is glued to the last of them."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> int:
        line = str(text).replace("\r", "").replace("\x1b[A", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str | None:
        return getattr(self.stream, "encoding", None)


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``; when not on a terminal, redrawn at most every LOG_INTERVAL_S seconds, a line
    per redraw."""
    if not interactive(kwargs.get("file")):
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL_S)
        kwargs["file"] = LineWriter(kwargs.get("file") or sys.stderr)
        kwargs.setdefault("dynamic_ncols", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
