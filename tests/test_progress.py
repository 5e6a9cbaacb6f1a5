"""Progress bars into a log file redraw rarely; on a terminal they stay live."""

from __future__ import annotations

import io

from vpr.progress import LOG_INTERVAL_S, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_a_few_lines_not_one_per_update():
    log = io.StringIO()
    for _ in progress(range(5000), desc="cache", file=log):
        pass
    assert progress(range(1), file=io.StringIO()).mininterval == LOG_INTERVAL_S
    redraws = log.getvalue().count("\r") + log.getvalue().count("\n")
    assert redraws <= 4, log.getvalue()[-500:]  # the first draw and the last, not thousands


def test_a_terminal_keeps_a_live_bar():
    assert progress(range(1), file=Terminal()).mininterval < 1
