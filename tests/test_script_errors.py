"""How a script ends: a user error, Ctrl-C outside Lightning's loops and Lightning's SIGTERM stop each end with one
``error:`` line and their own exit status; anything else stays a traceback."""

from __future__ import annotations

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vpr.errors import ConfigError, report_user_errors


def ending(raised: BaseException, capsys) -> tuple[int, str]:
    @report_user_errors
    def main():
        raise raised

    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def test_each_stop_has_its_line_and_exit_status(capsys):
    status, err = ending(ConfigError("data.root=/x does not exist"), capsys)
    assert (status, err) == (2, "error: data.root=/x does not exist\n")
    status, err = ending(KeyboardInterrupt(), capsys)
    assert status == 130 and err.startswith("error: interrupted (Ctrl-C): nothing half-written is kept")
    status, err = ending(SIGTERMException(), capsys)
    assert status == 143 and err.startswith("error: stopped by SIGTERM; ckpt_path=last continues")
    assert ending(SystemExit(0), capsys) == (0, "")  # a script's own exit is its own


def test_a_bug_stays_a_traceback():
    @report_user_errors
    def main():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        main()
