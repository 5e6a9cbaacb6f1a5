"""The errors a user fixes by changing a setting or a file, and the scripts' one-line reporting of them.

Every check on a setting or an input file raises one of these with a message that names the setting or the
file and the fix; the scripts print it as one ``error:`` line (exit status 2) instead of a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException


class ConfigError(ValueError):
    """A wrong or inconsistent setting; the message names the setting and the fix."""


class DataError(RuntimeError):
    """A dataset problem the user must fix (missing file, malformed split, corrupt image)."""


# What ends a script with one clear message instead of a traceback: errors whose message is written for the user.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, FileNotFoundError)


def user_message(e: BaseException) -> str:
    """The error's own message. An error raised in a DataLoader worker comes back re-raised with the worker's
    traceback as its text ("Caught DataError in DataLoader worker process 0. Original Traceback ..."): keep
    only the original message, its last line."""
    text = str(e)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
        return last[len(prefix) :] if last.startswith(prefix) else last.split(": ", 1)[-1]
    return text


def missing_value_message(key: str) -> str:
    """A ``???`` setting that no config or command line filled (OmegaConf's "Missing mandatory value"), as a fix."""
    hint = ""
    if key.endswith("guidance.mask_dir"):
        hint = (
            " (the folder of precomputed label maps that guidance=mask_dir reads; or choose another source: "
            "guidance=deeplab_cityscapes guidance.weights=<the paper's segmentation weights>, "
            "guidance=torchvision, guidance=auto (on the synthetic city: its own label maps), or guidance=none)"
        )
    return f"{key} must be set: the chosen configs leave it empty (???); add {key}=<value> to the command line{hint}"


def find_user_error(e: BaseException) -> BaseException | None:
    """The user error behind ``e``: itself, or one of the project's (or an unfilled ``???`` setting) that it was
    raised from or while handling. A user error raised inside a loop Lightning runs can come back wrapped in, or
    followed by, an error of Lightning's own cleanup (a DataLoader that failed while starting: "Please call
    iter(combined_loader) first"). A FileNotFoundError deeper in the chain is not taken: code may have handled it."""
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(e, (*USER_ERRORS, MissingMandatoryValue)):
        return e
    seen = {id(e)}
    e = e.__cause__ or e.__context__
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ConfigError, DataError, MissingMandatoryValue)):
            return e
        e = e.__cause__ or e.__context__
    return None


INTERRUPTED = (
    "interrupted (Ctrl-C): nothing half-written is kept (files are written whole or not at all); run the command "
    "again to continue (train.py: ckpt_path=last resumes the last checkpoint, written where training stopped)"
)
#: Ctrl-C and SIGTERM in cluster.py, eval.py and retrieve.py: they keep no state to continue from.
INTERRUPTED_WORK = (
    "interrupted (Ctrl-C): nothing half-written is kept (files are written whole or not at all); run the same "
    "command again to redo it"
)
SIGTERM_STOPPED_WORK = (
    "stopped by SIGTERM: nothing half-written is kept (files are written whole or not at all); run the same "
    "command again to redo it"
)
#: ... and in a train.py run stopped before it wrote a checkpoint (the city, k-means, the untrained test, the first
#: validation): ckpt_path=last would find nothing, or resume an older run of the same settings.
BEFORE_CHECKPOINT = (
    "before this run wrote a checkpoint: nothing half-written is kept; run the same command again (without "
    "ckpt_path=last, which would resume an older run of these settings, if there is one)"
)


#: set by :func:`_stop_on_sigterm`: a library that catches BaseException (torch's imports of optional modules do)
#: may swallow its exception, or an import it interrupts fails with an ImportError of a partly imported module.
_SIGTERM: dict[str, bool] = {"received": False}


#: Passes a SIGTERM on to the DDP processes this one started (Lightning's launcher's ``kill``; set by train.py once
#: its Trainer exists). Inside Lightning's loops its handler passes the signal on; outside them (a test's set-up,
#: the pictures, the next test set) only :func:`_stop_on_sigterm` runs, and a signal to the first process alone
#: stopped it and left the others to fail in their next collective ("Connection closed by peer").
_PASS_ON: dict[str, Callable[[int], None] | None] = {"kill": None}


def pass_sigterm_on(kill: Callable[[int], None] | None) -> None:
    """Have a SIGTERM that stops this script outside Lightning's loops passed on with ``kill(signum)`` first."""
    _PASS_ON["kill"] = kill


def _forget_sigterm() -> None:
    _SIGTERM["received"] = False
    _PASS_ON["kill"] = None


def sigterm_received() -> bool:
    """Whether :func:`_stop_on_sigterm` ran since the script's task started. (A plain flag read through module
    functions: a task function that submitit pickles for its jobs must not refer to a lock.)"""
    return _SIGTERM["received"]


SIGTERM_STOPPED = (
    "stopped by SIGTERM; ckpt_path=last continues the run from its last checkpoint (written where it stopped when "
    "it was training)"
)


def _stop_line(sigterm: bool, task: tuple[Any, ...]) -> str:
    """The line a script stopped by SIGTERM (else Ctrl-C) ends with: what running it again does. ``task``: the
    arguments of its task function (a Hydra script's config first): cluster.py, eval.py and retrieve.py are run
    again; train.py is resumed from its checkpoint, or run again when it stopped before writing one (a job of a
    sweep: the sweep is continued with ckpt_path=last, which starts the jobs without a checkpoint anew)."""
    from omegaconf import DictConfig, OmegaConf

    cfg = task[0] if task and isinstance(task[0], DictConfig) else None
    name = OmegaConf.select(cfg, "task_name", default=None, throw_on_resolution_failure=False) if cfg else None
    if name in ("cluster", "eval", "retrieve"):
        return SIGTERM_STOPPED_WORK if sigterm else INTERRUPTED_WORK
    resuming = OmegaConf.select(cfg, "ckpt_path", default=None, throw_on_resolution_failure=False) if cfg else None
    # A sweep is continued with ckpt_path=last whatever its jobs reached: the ones without a checkpoint start anew.
    if name == "train" and not resuming and sweep_job() is None:
        folders = [
            OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
            for key in ("callbacks.last_checkpoint.dirpath", "callbacks.checkpoint.dirpath")
        ]
        folders = [Path(str(f)) for f in folders if f]
        try:
            written = any((f / "last.ckpt").is_file() for f in folders)
        except OSError:  # a folder it cannot look into: say what a checkpoint allows
            written = True
        if folders and not written:
            return f"{'stopped by SIGTERM' if sigterm else 'interrupted (Ctrl-C)'} {BEFORE_CHECKPOINT}"
    return SIGTERM_STOPPED if sigterm else INTERRUPTED


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM outside Lightning's loops (the data's preparation, k-means, the pictures after the test): stop here,
    through the script's ``finally`` blocks (loggers closed), with the interrupt's line. Inside a loop Lightning's
    own handler is installed and calls this one too: it then stops at the next step, where it can save."""
    if signal.getsignal(signal.SIGTERM) is not _stop_on_sigterm:
        return
    _SIGTERM["received"] = True  # the exception below may be swallowed or turned into another one (an import's)
    kill, _PASS_ON["kill"] = _PASS_ON["kill"], None  # once
    if kill is not None:
        with contextlib.suppress(Exception):  # a process that already ended
            kill(signum)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    raise SIGTERMException(128 + signum)


def stop_if_sigterm_was_swallowed() -> None:
    """Stop here (the SIGTERM line, status 143) when a SIGTERM came and a library swallowed its exception (torch's
    imports of optional modules catch BaseException). The scripts' work calls it first, once their imports are
    done: a signal at start-up then stops the script before its work, not after hours of training."""
    if sigterm_received():
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        raise SIGTERMException(128 + signal.SIGTERM)


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """:func:`_stop_on_sigterm` as the SIGTERM handler while a script's task runs, where no other handler was set
    (a job manager's stays) and in the main thread only."""
    installed = False
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        try:
            signal.signal(signal.SIGTERM, _stop_on_sigterm)
            installed = True
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        if installed and signal.getsignal(signal.SIGTERM) is _stop_on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def report_user_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a script's task function: user errors print ``error: <message>`` and exit with status 2; Ctrl-C and
    SIGTERM end with a line that says so (status 130 and 143)."""
    from omegaconf.errors import MissingMandatoryValue

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _forget_sigterm()
        try:
            with _sigterm_stops():
                result = main(*args, **kwargs)
        except KeyboardInterrupt:  # outside Lightning's loops (city generation, k-means, a cache pass of eval.py)
            _stop(_stop_line(False, args), 130, _first_of_its_node())
        except SystemExit as e:
            if type(e).__name__ == "SIGTERMException":  # Lightning's, raised between two steps on SIGTERM
                _stop(_stop_line(True, args), 143, _first_of_its_node())
            if e.code == 1 and isinstance(e.__context__, KeyboardInterrupt):
                _stop(
                    _stop_line(False, args), 130, _first_of_its_node()
                )  # Ctrl-C inside Lightning's loops: it shuts down, then exits with status 1
            raise
        except Exception as e:  # noqa: BLE001 - re-raised unless a user error is behind it
            if sigterm_received():  # what the signal's exception became (an import it interrupted)
                _stop(_stop_line(True, args), 143, _first_of_its_node())
            found = find_user_error(e)
            if found is None:
                raise
            logging.getLogger("vpr").debug("user error", exc_info=True)
            if isinstance(found, MissingMandatoryValue):
                text = missing_value_message(found.full_key or str(found).split(":", 1)[-1].strip().splitlines()[0])
            else:
                text = user_message(found)
            job = sweep_job()
            if job is None:
                _stop(text, 2)
            _say(text)
            # A job of a multirun: an Exception, not SystemExit, so that Hydra records this job as failed and runs
            # the sweep's other jobs; it raises the first failure once they have run (launch exits 2 on it).
            raise SweepJobFailed(f"error: sweep job {job[0]} failed ({job[1]}): {text}; the other jobs ran") from None
        if sigterm_received():  # its exception was swallowed: the task went on, but it did not finish
            _stop(_stop_line(True, args), 143, _first_of_its_node())
        return result

    return wrapper


class SweepJobFailed(CompactHydraException):
    """A user error that ended one job of a multirun; Hydra prints its message alone (no traceback: a compact
    exception of its own kind) once the sweep has run."""


def sweep_job() -> tuple[int, str] | None:
    """(this job's number, its folder) in a multirun of Hydra's own launchers; None otherwise."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return None
        hc = HydraConfig.get()
        return int(hc.job.num), str(hc.runtime.output_dir)
    except Exception:  # noqa: BLE001 - outside a Hydra job
        return None


def swept_settings() -> list[str]:
    """The settings this job's Hydra multirun varies: the keys given several values on its command line
    (``optimizer.lr=1e-3,1e-1``, ``attention=none,se``), read from the sweep folder's ``multirun.yaml``; [] outside
    a multirun or when that file is missing."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return []
        saved = OmegaConf.load(os.path.join(HydraConfig.get().sweep.dir, "multirun.yaml"))
        overrides = [str(o) for o in saved.hydra.overrides.task]
        return [o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]
    except Exception:  # noqa: BLE001 - outside a Hydra job, or a sweep folder without its multirun.yaml
        return []


def _stop(text: str, status: int, console: bool = True) -> None:
    """End a script with ``error: <text>`` on stderr (``console``) and in the run's log files (a sweep job's or a
    cluster job's log then says why it stopped), and exit ``status``."""
    _say(text, console)
    raise SystemExit(status) from None


def _first_of_its_node() -> bool:
    """The first process of a DDP run (Lightning's launcher, torchrun, SLURM's srun), or a run of one: a signal to
    the process group (or srun's to every task) reaches them all, and the first one says it on the console (the
    others in their log files)."""
    return all(os.environ.get(key, "0") in ("0", "") for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


def _say(text: str, console: bool = True) -> None:
    if console:
        print(f"error: {text}", file=sys.stderr)
    record = logging.LogRecord("vpr", logging.ERROR, __file__, 0, text, None, None)
    for handler in {*logging.getLogger().handlers, *logging.getLogger("vpr").handlers}:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


# Launchers of hydra-submitit-launcher (the [slurm] extra): without it Hydra only says it cannot load the config.
PLUGIN_LAUNCHERS = {"slurm", "submitit_slurm", "submitit_local"}


def launch(main: Callable[[], Any], config_name: str) -> Any:
    """A script's entry point: check the command line for what Hydra would only fail on obscurely, then ``main()``
    (the ``@hydra.main`` function of the config ``config_name``). When Hydra refuses the command line (exit status
    1), a ``hint:`` line names the setting or option closest to each one that does not exist."""
    sys.argv[1:] = sweep_job_argv(sys.argv[1:], os.environ)
    require_one_hydra_mode(sys.argv[1:])
    require_launcher_plugin(sys.argv[1:])
    require_writable_run_folder(sys.argv[1:], os.environ)
    try:
        return main()
    except SystemExit as e:
        if e.code == 1 and isinstance(e.__context__, SweepJobFailed):
            raise SystemExit(2) from None  # a job's user error (Hydra printed it): the status of user errors
        if e.code == 1:
            for hint in override_hints(sys.argv[1:], config_name):
                print(f"hint: {hint}", file=sys.stderr)
        raise


def run_folder_parent(argv: list[str], environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(the folder Hydra will make the run's folder in, the setting that names it), read from the command line and
    the environment as configs/paths and configs/hydra compose them; None when Hydra alone can tell (a setting
    interpolated with ``${...}`` or swept over several values, or a command line it cannot parse)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
        given = {}
        for o in parsed:
            if not o.is_delete():
                given[o.key_or_group] = None if o.is_sweep_override() else str(o.value())  # unquoted
    except Exception:  # noqa: BLE001 - Hydra says what it cannot parse
        return None
    multirun = bool({"-m", "--multirun"} & set(argv))
    for key, parent in (
        ("hydra.sweep.dir" if multirun else "hydra.run.dir", lambda v: os.path.dirname(os.path.abspath(v))),
        ("paths.log_dir", lambda v: v),
    ):
        if key in given:
            value = given[key]
            return None if value is None or "${" in value else (parent(value), key)
    if environ.get("VPR_LOG_DIR"):
        return environ["VPR_LOG_DIR"], "VPR_LOG_DIR"
    root = given.get("paths.root_dir", environ.get("VPR_ROOT", "."))
    return None if root is None or "${" in root else (os.path.join(root, "outputs"), "paths.root_dir/VPR_ROOT")


def require_writable_run_folder(argv: list[str], environ: Mapping[str, str]) -> None:
    """Before Hydra makes the run's folder (a failure there is a traceback): the folder it is made in exists or can
    be made, else one ``error:`` line naming the setting to change (exit status 2)."""
    printing = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}
    if printing & {a.split("=", 1)[0] for a in argv}:
        return  # Hydra only prints: no run folder
    found = run_folder_parent(argv, environ)
    if found is None:
        return
    folder, setting = found
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        fix = setting if setting.startswith(("hydra.", "paths.log_dir")) else "paths.log_dir (or VPR_LOG_DIR)"
        print(
            f"error: the run's folder cannot be made in {folder} ({setting}): {e.strerror or e}; point {fix} at a "
            "folder you can write",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def override_hints(argv: list[str], config_name: str) -> list[str]:
    """For each override of ``argv`` that names a config group, an option or a setting that does not exist: the
    closest that does (``data.preset=tiny``: did you mean data.prepare.preset?). Nothing when the command line
    cannot be read or composed (the error is then not a name), when Hydra's own flags change the config, and for
    Hydra's own groups (``hydra/launcher``: their options come from plugins too)."""
    try:
        braces = _unquoted_brace_hints(argv)
    except Exception:  # noqa: BLE001 - only a hint
        braces = {}
    try:  # the other overrides too: fixing the braces alone would end in Hydra's next error
        names = _override_hints([a for a in argv if a not in braces], config_name)
    except Exception:  # noqa: BLE001 - only a hint: Hydra's own message stands (glob/interval sweeps and such)
        names = []
    return [*braces.values(), *names]


def _unquoted_brace_hints(argv: list[str]) -> dict[str, str]:
    """Values with braces that Hydra cannot read (``data.split_file={name}_{split}.mat``: braces open a mapping
    on Hydra's command line), each with its hint: the same text quoted, which Hydra takes as it is."""
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    hints = {}
    for arg in argv:
        key, _, value = arg.partition("=")
        # a text with {placeholders} (a mapping holds key: value pairs), neither quoted nor inside a list
        if arg.startswith("-") or not re.search(r"\{\w*\}", value) or value[0] in "'\"[":
            continue
        try:
            parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - Hydra's OverrideParseException (and whatever its grammar raises)
            hints[arg] = f"{key}={value}: Hydra reads braces as a mapping; quote text with braces: '{key}=\"{value}\"'"
    return hints


def _override_hints(argv: list[str], config_name: str) -> list[str]:
    import difflib

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from vpr import CONFIG_DIR

    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return []
    parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    groups = sorted(
        str(d.relative_to(CONFIG_DIR)) for d in CONFIG_DIR.rglob("*") if d.is_dir() and any(d.glob("*.yaml"))
    )
    hints, choices, settings = [], [], []
    top_level: set[str] | None = None  # the config's top-level settings, composed once when first needed
    for o in parsed:
        key = o.key_or_group
        if o.is_add() or o.is_force_add() or o.is_delete() or key.startswith("hydra/"):
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        if key in groups:
            options = sorted(f.stem for f in (CONFIG_DIR / key).glob("*.yaml"))
            for value in values:
                if value not in options and value != "null":
                    close = difflib.get_close_matches(value, options, n=1)
                    hints.append(
                        f"{key}={value}: no such option"
                        + (f"; did you mean {key}={close[0]}?" if close else f" (options: {', '.join(options)})")
                    )
            if all(v in options for v in values[:1]):
                choices.append(f"{key}{'@' + o.package if o.package else ''}={values[0]}")
            continue
        if "." not in key and top_level is None:
            top_level = {k for k in _setting_names(config_name, []) or () if "." not in k}
        if "/" in key or "." not in key and key not in (top_level or ()):
            close = difflib.get_close_matches(key, groups, n=1)
            if close:
                hints.append(f"{key}: no such config group; did you mean {close[0]}={values[0]}?")
            else:
                settings.append(key)
        else:
            settings.append(key)
    known = _setting_names(config_name, choices) if settings else None
    for key in settings:
        if known is None or key in known:
            continue
        last = key.rsplit(".", 1)[-1]
        same_name = [k for k in known if k.rsplit(".", 1)[-1] == last]  # the right name in another place
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        found = _most_shared_prefix(key, same_name) if same_name else (close[0] if close else None)
        if found:
            hints.append(f"{key} is not a setting; did you mean {found}?")
    return hints


def _setting_names(config_name: str, choices: list[str]) -> list[str] | None:
    """Every setting's dotted name in the script's config composed with the command line's group ``choices``
    (Hydra's own ``hydra.*`` included); None when it cannot be composed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig

    from vpr import CONFIG_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose(config_name=config_name, overrides=choices, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - only a hint
        return None
    names: list[str] = []

    def walk(node: DictConfig, prefix: str) -> None:
        for k in node.keys():
            name = f"{prefix}{k}"
            names.append(name)
            child = node._get_node(k)
            if isinstance(child, DictConfig):
                walk(child, f"{name}.")

    walk(cfg, "")
    return names


def _most_shared_prefix(key: str, candidates: list[str]) -> str:
    """The candidate that shares the longest leading run of dotted parts with ``key`` (the first of equals)."""

    def shared(c: str) -> int:
        n = 0
        for a, b in zip(key.split("."), c.split(".")):
            if a != b:
                break
            n += 1
        return n

    return max(candidates, key=shared)


#: Set by a sweep job before Lightning starts its other DDP processes: that job's overrides and folder (JSON).
SWEEP_JOB_ENV = "VPR_SWEEP_JOB"
#: What Lightning appends to the command line of the DDP processes it starts under Hydra.
_LIGHTNING_HYDRA_ARGS = ("hydra.run.dir=", "hydra.job.name=", "hydra.output_subdir=")


def export_sweep_job(environ: MutableMapping[str, str]) -> None:
    """In a job of a Hydra multirun (``-m``): record the job's own overrides and folder for the DDP processes that
    Lightning starts. Lightning re-runs the command line with ``-m`` and the sweep's lists, so each of its processes
    would run the whole sweep again, in a sweep folder of its own; :func:`sweep_job_argv` turns that command line
    back into this one job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hc = HydraConfig.get()
    environ[SWEEP_JOB_ENV] = json.dumps({"overrides": list(hc.overrides.task), "output_dir": hc.runtime.output_dir})


def sweep_job_argv(argv: list[str], environ: Mapping[str, str]) -> list[str]:
    """The command line of a DDP process (LOCAL_RANK > 0) that Lightning started from a sweep job: the job's own
    overrides as a single run in the job's folder, with Lightning's own additions (job name, no .hydra folder).
    Any other command line is returned as it is."""
    job = environ.get(SWEEP_JOB_ENV)
    if not job or environ.get("LOCAL_RANK", "0") == "0" or not {"-m", "--multirun"} & set(argv):
        return argv
    spec = json.loads(job)
    lightning = [a for a in argv if a.startswith(_LIGHTNING_HYDRA_ARGS) and not a.startswith("hydra.run.dir=")]
    return [*spec["overrides"], f"hydra.run.dir={spec['output_dir']}", *lightning]


def require_one_hydra_mode(argv: list[str]) -> None:
    """Before Hydra starts: two of its modes at once (``-m`` with ``--cfg job``, ``--info`` or ``--run``), or
    ``--resolve`` without ``--cfg``, end with one ``error:`` line saying what to give instead (exit status 2); Hydra
    refuses them with a ValueError whose traceback ends the script."""
    try:
        from hydra._internal.utils import get_args_parser
    except ImportError:  # another Hydra: it says what it refuses itself
        return
    import io

    try:  # argparse prints its usage message before it exits: Hydra prints the same one, once
        with contextlib.redirect_stderr(io.StringIO()):
            args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:  # a flag argparse refuses (--cfg bogus): Hydra's own message says so
        return
    modes = [
        flag
        for flag, given in (
            ("-m (--multirun)", args.multirun),
            (f"--cfg {args.cfg}", args.cfg is not None),
            ("--info" + (f" {args.info}" if args.info not in (None, "all") else ""), args.info is not None),
            ("--run", args.run),
            ("--shell-completion", args.shell_completion),
        )
        if given
    ]
    if len(modes) > 1:
        if args.multirun and (args.cfg is not None or args.info is not None):
            advice = (
                f"{modes[1]} describes the configuration of one job, not a sweep: drop -m and give the values of one job "
                "(seed=1, not seed=1,2)"
            )
        else:
            advice = "give one of them"
        print(f"error: {' and '.join(modes)} cannot be given together: {advice}", file=sys.stderr)
        raise SystemExit(2)
    if args.resolve and args.cfg is None and not args.help:
        print(
            "error: --resolve only works with --cfg (job, hydra or all): add --cfg job, or drop --resolve",
            file=sys.stderr,
        )
        raise SystemExit(2)


def require_launcher_plugin(argv: list[str]) -> None:
    """Before Hydra starts: a ``hydra/launcher=`` choice whose plugin is not installed ends with one ``error:`` line
    naming the install command (exit status 2)."""
    import importlib.util

    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "hydra/launcher" and value in PLUGIN_LAUNCHERS:
            try:  # the namespace package hydra_plugins itself is missing when no Hydra plugin is installed
                found = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
            except ImportError:
                found = False
            if not found:
                print(
                    f"error: hydra/launcher={value} needs hydra-submitit-launcher, which is not installed: "
                    "pip install -e '.[slurm]' (or pip install hydra-submitit-launcher)",
                    file=sys.stderr,
                )
                raise SystemExit(2)
            if value != "submitit_local" and not shutil.which("srun"):
                print(
                    f"error: hydra/launcher={value} submits SLURM jobs, but this machine has no SLURM (no srun on "
                    "the PATH): run the sweep on the cluster's login node, or use hydra/launcher=submitit_local "
                    "(parallel processes here) or no launcher",
                    file=sys.stderr,
                )
                raise SystemExit(2)
