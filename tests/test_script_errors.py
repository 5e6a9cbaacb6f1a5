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


def lightning_exit_after(raised: BaseException) -> SystemExit:
    """What Lightning's trainer raises after handling ``raised`` in its loops: exit(1) inside its except block."""
    try:
        try:
            raise raised
        except BaseException:
            raise SystemExit(1)  # noqa: B904 - as Lightning does it, the handled error as its context
    except SystemExit as e:
        return e


def test_ctrl_c_inside_lightnings_loops_is_an_interrupt_not_an_exit_status_1(capsys):
    status, err = ending(lightning_exit_after(KeyboardInterrupt()), capsys)
    assert status == 130 and err.startswith("error: interrupted (Ctrl-C): nothing half-written is kept")
    assert ending(lightning_exit_after(ValueError("x")), capsys) == (1, "")  # any other exit(1) stays as it was


def test_a_bug_stays_a_traceback():
    @report_user_errors
    def main():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        main()


# The names below are read from configs/ by hand: data/synthetic.yaml's prepare.preset, trainer/default.yaml's
# max_epochs, the attention/ options, optimizer/sgd.yaml's lr, retrieve.yaml's top_k.
@pytest.mark.parametrize(
    ("config", "argv", "expected"),
    [
        ("train", ["data.preset=tiny"], "data.preset is not a setting; did you mean data.prepare.preset?"),
        ("train", ["trainer.max_epoch=1"], "trainer.max_epoch is not a setting; did you mean trainer.max_epochs?"),
        ("train", ["lr=1e-3"], "lr is not a setting; did you mean optimizer.lr?"),
        (
            "train",
            ["attention=deatention"],
            "attention=deatention: no such option; did you mean attention=deattention?",
        ),
        ("train", ["attentoin=se"], "attentoin: no such config group; did you mean attention=se?"),
        (
            "train",
            ["-m", "seed=1,2", "attention=se,cbm"],
            "attention=cbm: no such option; did you mean attention=cbam?",
        ),
        ("train", ["hydra.run.dirr=x"], "hydra.run.dirr is not a setting; did you mean hydra.run.dir?"),
        ("retrieve", ["topk=3"], "topk is not a setting; did you mean top_k?"),
        # Hydra's own groups take plugins' options: no hint for them, and the real mistake still gets its own
        (
            "train",
            ["hydra/launcher=submitit_local", "data.preset=tiny"],
            "data.preset is not a setting; did you mean data.prepare.preset?",
        ),
        # a setting the chosen group adds is known: data=synthetic has prepare, so no hint for it
        ("train", ["data=synthetic", "data.prepare.preset=tiny", "trainer.max_epochs=x"], None),
    ],
)
def test_a_misspelt_name_gets_the_closest_real_one(config, argv, expected):
    from vpr.errors import override_hints

    assert override_hints(argv, config) == ([expected] if expected else [])


def test_added_or_deleted_keys_and_hydras_own_flags_get_no_hint():
    from vpr.errors import override_hints

    assert override_hints(["+trainer.max_epoch=1", "~seed"], "train") == []
    assert override_hints(["--config-name", "eval", "topk=3"], "train") == []


def test_the_script_prints_the_hint_after_hydras_message(tmp_path):
    from tests.conftest import run_script

    proc = run_script("train.py", "data.prepare.presett=tiny", f"hydra.run.dir={tmp_path}/r", tmp=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.rstrip().endswith(
        "hint: data.prepare.presett is not a setting; did you mean data.prepare.preset?"
    )


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, ("./outputs", "paths.root_dir/VPR_ROOT")),
        ([], {"VPR_ROOT": "/r"}, ("/r/outputs", "paths.root_dir/VPR_ROOT")),
        (["paths.root_dir=/q"], {"VPR_ROOT": "/r"}, ("/q/outputs", "paths.root_dir/VPR_ROOT")),
        ([], {"VPR_LOG_DIR": "/logs"}, ("/logs", "VPR_LOG_DIR")),
        (["paths.log_dir=/l"], {"VPR_LOG_DIR": "/logs"}, ("/l", "paths.log_dir")),
        (["hydra.run.dir=/runs/a"], {}, ("/runs", "hydra.run.dir")),
        (["-m", "hydra.sweep.dir=/sweeps/b", "hydra.run.dir=/x/y"], {}, ("/sweeps", "hydra.sweep.dir")),
        (["paths.log_dir=${oc.env:HOME}/l"], {}, None),
        # Lightning's DDP processes get the run folder quoted; a user may quote a path with spaces
        (['hydra.run.dir="/runs/a"', "hydra.job.name=train_ddp_process_1"], {}, ("/runs", "hydra.run.dir")),
        (["paths.log_dir='/my logs'"], {}, ("/my logs", "paths.log_dir")),
        (["-m", "paths.log_dir=/a,/b"], {}, None),  # a sweep: one folder per job, Hydra's to make
    ],
)
def test_the_run_folders_parent_follows_configs_paths(argv, environ, expected):
    """configs/paths/default.yaml: log_dir = VPR_LOG_DIR, else <root_dir>/outputs, root_dir = VPR_ROOT or '.'."""
    from vpr.errors import run_folder_parent

    assert run_folder_parent(argv, environ) == expected


def test_an_unmakeable_run_folder_is_one_line_naming_the_setting(tmp_path):
    from tests.conftest import run_script

    (tmp_path / "file").write_text("not a folder")
    proc = run_script("train.py", f"paths.log_dir={tmp_path}/file/logs", tmp=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"error: the run's folder cannot be made in {tmp_path}/file/logs (paths.log_dir): ")
    assert "point paths.log_dir at a folder you can write" in proc.stderr


def test_both_a_wrong_option_and_a_wrong_setting_get_their_hint():
    from vpr.errors import override_hints

    assert override_hints(["attention=cbm", "trainer.max_epoch=1"], "train") == [
        "attention=cbm: no such option; did you mean attention=cbam?",
        "trainer.max_epoch is not a setting; did you mean trainer.max_epochs?",
    ]


def test_sweeps_hydra_cannot_list_outside_its_loader_give_no_hint_and_no_traceback():
    from vpr.errors import override_hints

    assert override_hints(["-m", "experiment=glob(city_b*)", "data.preset=tiny"], "train") == []
    assert override_hints(["-m", "model.num_clusters=interval(1,4)"], "train") == []
    assert override_hints(["hydra/job_logging=none"], "train") == []


@pytest.mark.parametrize("flag", [["--cfg", "job"], ["--cfg=job"], ["--info=config"], ["--help"]])
def test_a_command_that_only_prints_makes_no_folder(flag, tmp_path):
    from vpr.errors import require_writable_run_folder

    require_writable_run_folder([*flag, f"paths.log_dir={tmp_path}/logs"], {})
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["-m", "seed=1,2", "--cfg", "job"],
            "error: -m (--multirun) and --cfg job cannot be given together: --cfg job describes the configuration "
            "of one job, not a sweep: drop -m and give the values of one job (seed=1, not seed=1,2)",
        ),
        (
            ["--multirun", "seed=1,2", "-i", "defaults"],
            "error: -m (--multirun) and --info defaults cannot be given together: --info defaults describes the "
            "configuration of one job, not a sweep: drop -m and give the values of one job (seed=1, not seed=1,2)",
        ),
        (["-r", "-m", "seed=1"], "error: -m (--multirun) and --run cannot be given together: give one of them"),
        (["seed=1", "--resolve"], "error: --resolve only works with --cfg (job, hydra or all): add --cfg job, or drop"),
    ],
)
def test_two_hydra_modes_at_once_are_one_line_not_hydras_traceback(argv, line, capsys):
    """Hydra refuses these command lines with a ValueError raised outside its own error handling: a traceback."""
    from vpr.errors import require_one_hydra_mode

    with pytest.raises(SystemExit) as stop:
        require_one_hydra_mode(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(line) and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "argv", [["-m", "seed=1,2"], ["seed=1", "--cfg", "job", "--resolve"], ["--info"], ["-c", "hydra", "-p", "data"]]
)
def test_one_hydra_mode_passes(argv, capsys):
    from vpr.errors import require_one_hydra_mode

    require_one_hydra_mode(argv)
    assert capsys.readouterr().err == ""


def test_a_flag_value_argparse_refuses_is_left_to_hydra_without_a_second_usage_message(capsys):
    """--cfg bogus: Hydra's parser prints its usage and error once; the check before it prints nothing."""
    from vpr.errors import require_one_hydra_mode

    assert require_one_hydra_mode(["--cfg", "bogus", "seed=1"]) is None
    assert capsys.readouterr().err == ""


def test_a_sweep_with_cfg_job_ends_with_one_line(tmp_path):
    from tests.conftest import run_script

    proc = run_script("train.py", "-m", "seed=1,2", "--cfg", "job", tmp=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: -m (--multirun) and --cfg job cannot be given together") and not proc.stdout


def test_sigterm_outside_lightnings_loops_stops_through_finally_blocks(capsys):
    """SIGTERM while the task runs, where Lightning has no handler (data preparation, k-means, the pictures after
    the test): the ``finally`` blocks run (loggers closed), one line, status 143, and the default handler is back."""
    import os
    import signal
    import time

    closed = []

    @report_user_errors
    def main():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal arrives first
            closed.append("not stopped")
        finally:
            closed.append("finally")

    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 143 and closed == ["finally"]
    assert capsys.readouterr().err.startswith("error: stopped by SIGTERM; ckpt_path=last continues")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_outside_lightnings_loops_is_passed_on_to_the_ddp_processes(capsys):
    """A SIGTERM to the first DDP process alone (``kill <pid>``) while it is outside Lightning's loops (a test's
    set-up, the pictures): it stopped, and the processes Lightning started for it ran on into their next
    collective and failed there with gloo's "Connection closed by peer" traceback. It is passed on to them first
    (Lightning's launcher's ``kill``); a later task does not inherit the processes of an earlier one."""
    import os
    import signal
    import time

    from vpr.errors import pass_sigterm_on

    passed_on = []

    @report_user_errors
    def finished():  # registers, and ends without a signal
        pass_sigterm_on(passed_on.append)
        return "done"

    @report_user_errors
    def signalled(register: bool):
        if register:
            pass_sigterm_on(passed_on.append)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first

    assert finished() == "done"
    with pytest.raises(SystemExit) as stop:
        signalled(register=False)
    assert stop.value.code == 143 and passed_on == []  # the finished task's processes are not this one's
    with pytest.raises(SystemExit) as stop:
        signalled(register=True)
    assert stop.value.code == 143 and passed_on == [signal.SIGTERM]
    assert capsys.readouterr().err.startswith("error: stopped by SIGTERM")


def sigterm_swallowed_by_a_library() -> None:
    """A SIGTERM to this process, arriving inside code that catches BaseException (as torch's imports of optional
    modules do), which swallows the exception the handler raises."""
    import os
    import signal
    import time

    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first
    except BaseException:  # noqa: BLE001 - what such a library does
        pass


@pytest.mark.parametrize("then", ["returns", "fails"])
def test_sigterm_whose_exception_a_library_swallowed_still_stops_the_script(capsys, then):
    """SIGTERM while a library runs code that catches BaseException (torch's imports of optional modules do, and
    the scripts import torch inside their task): its exception is swallowed and the task goes on, or what it
    interrupted fails with another error (an ImportError of a partly imported module). Either way the script
    ends as stopped by SIGTERM, 128 + 15 = 143, not as finished (0) nor with that error's traceback."""
    import signal

    @report_user_errors
    def main():
        sigterm_swallowed_by_a_library()
        if then == "fails":
            raise ImportError("cannot import name 'x' from partially initialized module 'y'")
        return "finished"

    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 128 + signal.SIGTERM == 143
    assert capsys.readouterr().err.startswith("error: stopped by SIGTERM; ckpt_path=last continues")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    @report_user_errors
    def next_task():  # a sweep's next job in the same process is not stopped by the earlier signal
        return "finished"

    assert next_task() == "finished"


@pytest.mark.parametrize(
    "task",
    [
        "vpr.run.train:run_training",
        "vpr.run.evaluate:run_evaluation",
        "vpr.run.cluster:run_clustering",
        "vpr.run.retrieve:run_retrieval",
    ],
)
def test_a_swallowed_sigterm_stops_a_scripts_work_before_it_starts(capsys, task):
    """A SIGTERM swallowed while the script imported torch stops the work at its start, before it reads a
    setting, not after a whole training."""
    import importlib

    module, name = task.split(":")
    work = getattr(importlib.import_module(module), name)

    @report_user_errors
    def main():
        sigterm_swallowed_by_a_library()
        return work(cfg)

    read = []

    class Config:  # records what the work reads of its settings
        def __getattr__(self, key):
            read.append(key)
            raise AttributeError(key)

    cfg = Config()
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 143
    assert capsys.readouterr().err.startswith("error: stopped by SIGTERM")
    assert read == []  # stopped before it read a setting


def test_sigterm_inside_a_loop_is_left_to_lightnings_handler_and_a_job_managers_stays():
    """Lightning's handler (installed in its loops) calls the one it found: that one must not raise, Lightning stops
    at the next step itself. A handler set before the script (a job manager's) is left in place."""
    import os
    import signal

    received = []

    @report_user_errors
    def main():
        found = signal.getsignal(signal.SIGTERM)

        def lightnings(signum, frame):  # as Lightning composes them: its own flag, then the handler it found
            received.append(signum)
            found(signum, frame)

        signal.signal(signal.SIGTERM, lightnings)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            signal.signal(signal.SIGTERM, found)  # Lightning's teardown restores it
        return "finished"

    assert main() == "finished" and received == [signal.SIGTERM]

    def managers(signum, frame):
        received.append("manager")

    previous = signal.signal(signal.SIGTERM, managers)
    try:

        @report_user_errors
        def job():
            assert signal.getsignal(signal.SIGTERM) is managers
            os.kill(os.getpid(), signal.SIGTERM)
            return "ran on"

        assert job() == "ran on" and received[-1] == "manager"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_lightnings_sigterm_handler_runs_no_collective_inside_the_signal(monkeypatch):
    """Lightning's SIGTERM notifier broadcasts from inside the signal handler; with another DDP process waiting in
    an all_gather (the mining cache) both hung. After SigtermWithoutCollectives' start hooks (a callback of every run) the handler sets the flag and
    passes the signal on to the processes this one started, and calls no collective."""
    import signal
    from types import SimpleNamespace

    import torch.distributed as dist
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    from vpr.callbacks import SigtermWithoutCollectives

    killed, broadcasts = [], []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "broadcast", lambda *a, **k: broadcasts.append(a))
    trainer = SimpleNamespace(
        local_rank=0,
        world_size=2,
        _accelerator_connector=SimpleNamespace(cluster_environment=None),
        strategy=SimpleNamespace(launcher=SimpleNamespace(kill=killed.append), root_device="cpu"),
    )
    connector = _SignalConnector(trainer)
    trainer._signal_connector = connector
    connector.register_signal_handlers()
    try:
        SigtermWithoutCollectives().on_train_start(trainer, None)
        SigtermWithoutCollectives().on_train_start(trainer, None)  # a second time changes nothing
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
    finally:
        connector.teardown()
    assert connector.received_sigterm and killed == [signal.SIGTERM] and broadcasts == []


def _two_process_connector(monkeypatch, all_reduce):
    """Lightning's signal connector of the first of two DDP processes, its handlers registered; the collectives are
    ``all_reduce`` (the other process simulated), and a broadcast inside the signal handler fails the test."""
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "broadcast", lambda *a, **k: pytest.fail("a collective inside the signal handler"))
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    trainer = SimpleNamespace(
        local_rank=0,
        world_size=2,
        _accelerator_connector=SimpleNamespace(cluster_environment=None),
        strategy=SimpleNamespace(launcher=None, root_device=torch.device("cpu")),
    )
    connector = _SignalConnector(trainer)
    trainer._signal_connector = connector
    connector.register_signal_handlers()
    return trainer, connector


@pytest.mark.parametrize(
    ("mine", "other", "stops"),
    [(True, False, True), (False, True, True), (False, False, False)],
    ids=["signal-here", "signal-in-the-other-process", "no-signal"],
)
def test_ddp_evaluation_stops_after_the_same_batch_in_every_process(monkeypatch, mine, other, stops):
    """Lightning's evaluation loop stops a process after any batch but the last once its own flag is set, with no
    collective: a SIGTERM that reached one DDP process during its last batch left the other waiting for it in the
    gather of the descriptors (gloo: "Connection closed by peer", a traceback and exit status 1). While a
    validation or test loop runs, the handler only notes the signal; after each batch (before Lightning's check)
    every process's flag is the maximum over the processes, so all stop after the same batch or none does."""
    import signal

    import torch
    import torch.distributed as dist

    from vpr.callbacks import SigtermWithoutCollectives

    reduced = []

    def all_reduce(tensor, op):  # the other process's flag, combined as a MAX reduction does
        assert op == dist.ReduceOp.MAX
        reduced.append(int(tensor.item()))
        tensor.copy_(torch.maximum(tensor, torch.tensor([int(other)])))

    trainer, connector = _two_process_connector(monkeypatch, all_reduce)
    callback = SigtermWithoutCollectives()
    try:
        callback.on_validation_start(trainer, None)
        if mine:  # during a batch: Lightning's own check right after it must not stop this process alone
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert connector.received_sigterm is False
        callback.on_validation_batch_end(trainer, None, None, None, 0)
        assert connector.received_sigterm is stops  # what Lightning's check after this batch reads, in both
        assert reduced == [int(mine)]
        callback.on_validation_end(trainer, None)
        assert len(reduced) == 2  # once more at the loop's end: a signal after the last batch is agreed on too
        # Outside the evaluation loop the handler sets the flag at once, as Lightning's own does.
        connector.received_sigterm = False
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert connector.received_sigterm is True
    finally:
        connector.teardown()


def test_a_sigterm_after_the_last_evaluation_batch_is_agreed_on_at_the_loops_end(monkeypatch):
    """A signal noted after the last batch's agreement (while the descriptors are gathered and ranked) is not lost:
    the loop's end agrees once more, and every process's flag is set, so all stop after the loop."""
    import signal

    from vpr.callbacks import SigtermWithoutCollectives

    trainer, connector = _two_process_connector(monkeypatch, lambda tensor, op: None)  # the other had no signal
    callback = SigtermWithoutCollectives()
    try:
        callback.on_test_start(trainer, None)
        callback.on_test_batch_end(trainer, None, None, None, 0)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert connector.received_sigterm is False
        callback.on_test_end(trainer, None)
        assert connector.received_sigterm is True
    finally:
        connector.teardown()


def test_a_stop_before_the_training_state_is_restored_saves_nothing(tmp_path):
    """A SIGTERM while the fit is being set up (guidance targets, before Lightning restores a resumed run's state)
    must not write last.ckpt: it would hold the state before the restore (epoch 0) over the resumed run's."""
    from types import SimpleNamespace

    from lightning.pytorch.trainer.states import RunningStage

    from vpr.callbacks import CheckpointOnStop

    saved = []
    trainer = SimpleNamespace(
        state=SimpleNamespace(stage=RunningStage.TRAINING),
        sanity_checking=False,
        save_checkpoint=saved.append,
        is_global_zero=True,
        current_epoch=3,
        global_step=12,
    )
    stop = CheckpointOnStop(tmp_path)
    stop.on_fit_start(trainer, None)
    stop.on_exception(trainer, None, SIGTERMException())
    assert saved == []
    stop.on_train_start(trainer, None)
    stop.on_exception(trainer, None, SIGTERMException())
    assert saved == [str(tmp_path / "last.ckpt")]


def test_a_sigterm_that_only_set_lightnings_flag_stops_after_the_call():
    from types import SimpleNamespace

    from vpr.callbacks import stop_if_signalled

    stop_if_signalled(SimpleNamespace(received_sigterm=False))
    with pytest.raises(SIGTERMException):
        stop_if_signalled(SimpleNamespace(received_sigterm=True))


@pytest.mark.parametrize(
    "environ, first",
    [
        ({}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"SLURM_PROCID": "3"}, False),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),
    ],
)
def test_the_first_process_alone_prints_an_interrupt(environ, first, monkeypatch, capsys):
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    status, err = ending(SIGTERMException(), capsys)
    assert status == 143 and err.startswith("error: stopped by SIGTERM") is first


def test_a_split_file_template_on_the_command_line_is_shown_quoted():
    """data.split_file={name}_{split}.mat: Hydra's grammar reads the braces as a mapping and refuses the line; the
    hint gives the quoted form, which Hydra reads as the text itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from vpr.errors import override_hints

    hints = override_hints(["data=pitts30k", "data.split_file={name}_{split}.mat"], "eval")
    assert hints == [
        "data.split_file={name}_{split}.mat: Hydra reads braces as a mapping; quote text with braces: "
        "'data.split_file=\"{name}_{split}.mat\"'"
    ]
    quoted = hints[0].rsplit(": ", 1)[1].strip("'")
    assert OverridesParser.create().parse_overrides([quoted])[0].value() == "{name}_{split}.mat"
    # mappings in a list, and quoted text, are Hydra's to read: no hint
    assert override_hints(["test_sets=[pitts30k,{data:tokyo247,root:/x}]"], "eval") == []
    assert override_hints(["data.split_file='{name}_{split}.mat'"], "eval") == []


def test_unquoted_braces_and_a_misspelt_name_both_get_their_hint():
    """Hydra stops at the braces it cannot read; the hints name the other mistake too (attention/ has deattention,
    data/synthetic.yaml has prepare.preset), so that quoting the braces is not followed by Hydra's next error."""
    from vpr.errors import override_hints

    argv = ["data.split_file={name}_{split}.mat", "attention=deatention", "data.preset=tiny"]
    assert override_hints(argv, "train") == [
        "data.split_file={name}_{split}.mat: Hydra reads braces as a mapping; quote text with braces: "
        "'data.split_file=\"{name}_{split}.mat\"'",
        "attention=deatention: no such option; did you mean attention=deattention?",
        "data.preset is not a setting; did you mean data.prepare.preset?",
    ]


def test_a_trainer_setting_lightning_refuses_is_a_setting_error():
    from omegaconf import OmegaConf

    from vpr.build import instantiate_setting

    conf = OmegaConf.create({"_target_": "lightning.pytorch.Trainer", "accelerator": "cpu", "devices": 0})
    with pytest.raises(ConfigError, match=r"^trainer \(lightning\.pytorch\.Trainer\): `Trainer\(devices=0\)`"):
        instantiate_setting("trainer", conf, logger=False)


def test_a_wrapped_task_can_be_pickled_for_submitit_jobs():
    """hydra/launcher=submitit_local|slurm pickles the script's task function (with cloudpickle, by value when it
    is not importable): everything the wrapper refers to must pickle; a lock in its globals stopped every sweep."""
    import cloudpickle

    @report_user_errors
    def main():
        return "finished"

    assert cloudpickle.loads(cloudpickle.dumps(main))() == "finished"


def test_a_signal_landing_while_the_flags_are_read_counts_at_the_next_agreement(monkeypatch):
    """A SIGTERM whose handler runs right after an evaluation batch's agreement read this process's note is not
    dropped: the next agreement counts it."""
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist

    from vpr.callbacks import SigtermWithoutCollectives

    callback = SigtermWithoutCollectives()
    reduced = []
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op: reduced.append(int(tensor.item())))

    class Connector:
        """Lightning's flag; reading it the first time is when the signal lands (its handler notes it)."""

        landed = False

        @property
        def received_sigterm(self) -> bool:
            if not self.landed:
                self.landed = True
                callback.noted = True  # what _note_sigterm does while the processes agree
            return False

        @received_sigterm.setter
        def received_sigterm(self, value: bool) -> None:
            self.stopped = value

    trainer = SimpleNamespace(_signal_connector=Connector(), strategy=SimpleNamespace(root_device=torch.device("cpu")))
    callback.agreeing = True
    callback._agree(trainer)
    callback._agree(trainer)
    assert reduced == [0, 1] and trainer._signal_connector.stopped is True


def _stopped(raised: BaseException, cfg, capsys) -> tuple[int, str]:
    @report_user_errors
    def main(cfg):
        raise raised

    with pytest.raises(SystemExit) as stop:
        main(cfg)
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize("task", ["cluster", "eval", "retrieve"])
def test_a_stop_of_a_script_without_checkpoints_says_to_run_it_again(task, capsys):
    """cluster.py, eval.py and retrieve.py keep no state to resume: their SIGTERM and Ctrl-C lines say to run the
    command again, not ckpt_path=last (which these scripts do not take)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"task_name": task, "ckpt_path": "/runs/r/checkpoints/last.ckpt"})
    for raised, status in ((SIGTERMException(), 143), (KeyboardInterrupt(), 130)):
        code, err = _stopped(raised, cfg, capsys)
        assert code == status
        assert err.startswith("error: stopped by SIGTERM: " if status == 143 else "error: interrupted (Ctrl-C): ")
        assert "run the same command again to redo it" in err and "ckpt_path" not in err


def test_a_training_stopped_before_its_first_checkpoint_is_run_again_not_resumed(tmp_path, capsys, monkeypatch):
    """train.py stopped before it wrote a checkpoint (the city, k-means, the untrained test, the first validation):
    ckpt_path=last would find nothing, or resume an older run of the same settings. Once last.ckpt is in its
    checkpoint folder, or when it resumes a checkpoint itself, the line says ckpt_path=last."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import OmegaConf

    folder = tmp_path / "checkpoints"
    cfg = OmegaConf.create(
        {
            "task_name": "train",
            "ckpt_path": None,
            "callbacks": {"checkpoint": {"dirpath": str(folder)}, "last_checkpoint": {"dirpath": str(folder)}},
        }
    )
    for raised, status, words in ((SIGTERMException(), 143, "stopped by SIGTERM"), (KeyboardInterrupt(), 130, "")):
        words = words or "interrupted (Ctrl-C)"
        code, err = _stopped(raised, cfg, capsys)
        assert code == status and err.startswith(f"error: {words} before this run wrote a checkpoint")
        assert "run the same command again (without ckpt_path=last" in err

    with monkeypatch.context() as m:  # a job of a sweep: the sweep goes on with ckpt_path=last, its other jobs too
        m.setattr("vpr.errors.sweep_job", lambda: (1, str(tmp_path / "1_baseline_seed1")))
        code, err = _stopped(SIGTERMException(), cfg, capsys)
        assert code == 143 and err.startswith("error: stopped by SIGTERM; ckpt_path=last continues the run")

    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"")  # written where it stopped
    code, err = _stopped(SIGTERMException(), cfg, capsys)
    assert code == 143 and err.startswith("error: stopped by SIGTERM; ckpt_path=last continues the run")
    code, err = _stopped(KeyboardInterrupt(), cfg, capsys)
    assert code == 130 and "ckpt_path=last resumes the last checkpoint" in err

    (folder / "last.ckpt").unlink()
    cfg.ckpt_path = str(tmp_path / "older" / "last.ckpt")  # a resumed run stopped while it sets up
    code, err = _stopped(SIGTERMException(), cfg, capsys)
    assert code == 143 and err.startswith("error: stopped by SIGTERM; ckpt_path=last continues the run")
