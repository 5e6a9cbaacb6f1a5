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


def test_lightning_bar_into_a_log_file_redraws_by_time_not_by_step():
    from vpr.callbacks import LogFileProgressBar

    now = [0.0]
    bar = LogFileProgressBar(interval_s=30.0, clock=lambda: now[0])
    drawn = []
    for step in range(1, 1001):  # 1000 steps of 0.125 s (exact in binary): 125 s
        now[0] = step * 0.125
        if bar._should_update(step, 1000):
            drawn.append(step)
    # the first step, then every 240 steps (30 s), and the last one
    assert drawn == [1, 241, 481, 721, 961, 1000]


def test_training_into_a_pipe_gets_the_log_file_bar():
    from omegaconf import OmegaConf

    from vpr.build import build_callbacks
    from vpr.callbacks import LogFileProgressBar

    cfg = OmegaConf.create({"callbacks": {}, "trainer": {"enable_progress_bar": True}})
    assert any(isinstance(c, LogFileProgressBar) for c in build_callbacks(cfg))  # pytest captures stdout
    cfg.trainer.enable_progress_bar = False
    assert not any(isinstance(c, LogFileProgressBar) for c in build_callbacks(cfg))


def test_the_iterable_is_iterated_once():
    """A DataLoader starts its worker processes in iter(): a bar that called it twice started them twice."""

    class Counted:
        iters = 0

        def __len__(self) -> int:
            return 3

        def __iter__(self):
            Counted.iters += 1
            return iter(range(3))

    assert list(progress(Counted(), file=io.StringIO())) == [0, 1, 2]
    assert Counted.iters == 1


def test_a_log_line_between_two_redraws_starts_a_line_of_its_own():
    """Into a file tqdm draws as for a terminal (a carriage return before each redraw, no newline until the end),
    so a log line or an error line written while a bar is open was glued to the bar's last drawing."""
    log = io.StringIO()
    for i in progress(range(3), desc="cache", file=log):
        if i == 1:
            log.write("a log line\n")
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue()
    assert "a log line" in lines
    assert lines[0].startswith("cache:") and lines[-2].startswith("cache: 100%")


def test_lightning_bars_into_a_log_file_leave_log_lines_whole(capsys):
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from vpr.callbacks import LogFileProgressBar

    class Says(BoringModel):
        def test_step(self, batch, batch_idx):
            if batch_idx == 1:
                print("a log line")
            return super().test_step(batch, batch_idx)

    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[LogFileProgressBar()],
        logger=False,
        limit_test_batches=3,
        enable_model_summary=False,
    )
    trainer.test(Says(), verbose=False)
    out = capsys.readouterr().out
    assert "\r" not in out
    assert "a log line" in out.split("\n")
    assert any(line.startswith("Testing DataLoader 0: 100%") for line in out.split("\n"))


def test_evaluation_into_a_pipe_gets_the_log_file_bar():
    from omegaconf import OmegaConf

    from vpr.build import build_trainer
    from vpr.callbacks import LogFileProgressBar

    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu"}, "paths": {"output_dir": "."}})
    trainer = build_trainer(cfg, training=False)  # pytest captures stdout: not a terminal
    assert isinstance(trainer.progress_bar_callback, LogFileProgressBar)
