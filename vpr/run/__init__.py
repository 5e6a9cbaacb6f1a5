"""The bodies of the scripts, side by side: :mod:`.train` (train.py), :mod:`.evaluate` (eval.py),
:mod:`.cluster` (cluster.py), :mod:`.retrieve` (retrieve.py), and :mod:`.test_sets` (several test sets in one
command, for train.py and eval.py).

Each reads the composed config top to bottom: build the pieces (:mod:`vpr.build`), initialise the head
(:mod:`vpr.centroids`), load weights (:mod:`vpr.checkpoints`), run, write results atomically (:mod:`vpr.io`).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


#: Messages of the libraries that say nothing about a run of this project: an advertisement, a warning about the
#: frozen (eval-mode) BatchNorms and backbone stages that the recipes freeze on purpose, one about the checkpoint
#: folder a resumed run continues in (README: by design), and two deprecations inside Lightning itself (its
#: all_gather calls torch's deprecated torch.distributed.nn.functional.all_gather under DDP).
QUIET_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",
    r"Checkpoint directory .* exists and is not empty",
    r".*LeafSpec.* is deprecated",
    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
)
QUIET_LOG_PREFIXES = ("💡 Tip:",)


class _DropLibraryChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(QUIET_LOG_PREFIXES)


def single_log_stream() -> None:
    """Lightning logs through its own console handler and Hydra's root handler: keep only Hydra's (console + file),
    without the libraries' chatter listed above (a script's process only)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).handlers.clear()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLibraryChatter) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLibraryChatter())
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    if process_rank(os.environ) > 0:  # the other DDP processes log to their own file; the console is rank 0's
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(logging.WARNING)


def save_run_config(cfg, out_dir: Path) -> Path:
    """The run's resolved settings as ``<out_dir>/config.yaml``, written atomically: ckpt_path=last, eval.py and the
    report read a run's identity from it, and a run killed while writing it leaves the previous one whole."""
    from omegaconf import OmegaConf

    from vpr.io import write_text_atomic

    return write_text_atomic(Path(out_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


#: What a run writes when it finishes (results, per-query predictions, pictures), as names in its folder.
FINISHED_RUN_OUTPUTS = ("results*.json", "results*.md", "predictions*.csv", "predictions*.json", "pictures")


def set_aside_earlier_outputs(
    out_dir: Path, keep: tuple[str, ...] = (), outputs: tuple[str, ...] = FINISHED_RUN_OUTPUTS
) -> Path | None:
    """Move what an earlier run left in this run's folder (a sweep started again with the same ``hydra.sweep.dir``,
    ``hydra.run.dir`` given twice) into ``<out_dir>/.earlier/<its time>/``, before this run does anything: its
    results would otherwise pass for this run's, also when this one fails (the sweep table would count them under
    the settings Hydra has just written for this run). Nothing is deleted. ``keep``: file names left in place (a
    resumed training keeps the untrained network's results, which it does not measure again). ``outputs``: the
    script's output names (shell patterns; train.py's and eval.py's by default). Returns the folder,
    None when there was nothing to move (or in another process than the first)."""
    if process_rank(os.environ) > 0:  # the first process moved them before it started the others
        return None
    found = sorted({p for pattern in outputs for p in Path(out_dir).glob(pattern) if p.name not in keep})
    if not found:
        return None
    dest = _move_aside(out_dir, found, None, "results")
    log.warning(
        "%s held the results of an earlier run (%s): moved to %s; this run's results replace them when it finishes",
        out_dir,
        ", ".join(p.name for p in found),
        dest,
    )
    return dest


def set_aside_earlier_checkpoints(
    folder: Path, out_dir: Path, into: Path | None = None, copy: bool = False
) -> Path | None:
    """Move the checkpoints an earlier run left in ``folder``, this new (not resumed) run's checkpoint folder inside
    its run folder ``out_dir`` (``hydra.run.dir`` given again, a sweep started again in its folder), into
    ``<out_dir>/.earlier/<its time>/checkpoints/`` (``into``: the folder :func:`set_aside_earlier_outputs` moved
    that run's results to). Left there, they would pass for this run's beside the config.yaml it has just written:
    ``ckpt_path=last`` of this run's settings would resume the earlier run's network, also before this run saved a
    checkpoint of its own. Nothing is deleted; a checkpoint folder outside the run folder is not touched. ``copy``:
    copy them there instead, the files staying in place (this run's ``init_weights`` names one of them: it, and the
    DDP processes that read it again, find it where the command line says; this run's last.ckpt replaces the
    one in place, the copies keep the earlier run's). Returns where they went, None when there was nothing to move
    (or in another process than the first)."""
    from vpr.io import path_under

    if process_rank(os.environ) > 0 or path_under(folder, out_dir) is None:
        return None
    found = sorted(p for p in Path(folder).glob("*.ckpt") if p.is_file())
    if not found:
        return None
    dest = _move_aside(out_dir, found, into, "checkpoints", copy)
    if copy:
        log.warning(
            "%s holds the checkpoints of an earlier run (%s), one of them this run's init_weights: copied to %s; "
            "this run's last.ckpt replaces the one here",
            folder,
            ", ".join(p.name for p in found),
            dest,
        )
        return dest
    log.warning(
        "%s held the checkpoints of an earlier run (%s): moved to %s; a new run starts (to continue the earlier one "
        "instead, move them back and give ckpt_path=last)",
        folder,
        ", ".join(p.name for p in found),
        dest,
    )
    return dest


def _move_aside(out_dir: Path, found: list[Path], into: Path | None, what: str, copy: bool = False) -> Path:
    """Rename ``found`` into ``into`` (``<out_dir>/.earlier/<time of the newest>/`` when None; checkpoints into its
    ``checkpoints/``), or copy them there (``copy``: each copy written whole or not at all); the folder they went
    to. A failure is one ConfigError naming the files and the way out."""
    from vpr.io import EARLIER_RUNS_DIR, atomic_path

    if into is None:
        newest = max(p.stat().st_mtime for p in found)
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(newest))
        into, k = Path(out_dir) / EARLIER_RUNS_DIR / stamp, 1
        while into.exists():
            k += 1
            into = Path(out_dir) / EARLIER_RUNS_DIR / f"{stamp}_{k}"
    dest = into / "checkpoints" if what == "checkpoints" else into
    try:
        dest.mkdir(parents=True, exist_ok=what == "checkpoints")
        for path in found:
            if (dest / path.name).exists():
                raise FileExistsError(errno.EEXIST, "already there", str(dest / path.name))
            if copy:
                with atomic_path(dest / path.name) as tmp:
                    shutil.copy2(path, tmp)
            else:
                os.replace(path, dest / path.name)  # the same file system: a rename, nothing copied or lost
    except OSError as e:
        from vpr.errors import ConfigError

        raise ConfigError(
            f"{out_dir} holds the {what} of an earlier run ({', '.join(p.name for p in found)}) and they could "
            f"not be {'copied' if copy else 'moved'} to {dest} ({e.strerror}): give this run another folder (hydra.sweep.dir, hydra.run.dir) "
            "or move them yourself"
        ) from None
    return dest


def process_rank(environ) -> int:
    """This process's global rank as the launchers set it (Lightning's DDP processes, torchrun, SLURM); 0 alone."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if environ.get(key, "").isdigit():
            return int(environ[key])
    return 0


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
        save_retrieval_pictures(
            module,
            dm,
            "test",
            out_dir / "pictures" / f"worst_failures{suffix}.png",
            queries=failures,
            caption="failed query",
        )
    except Exception as e:  # a picture is a bonus: never fail the run for it
        log.warning("no picture of the worst failures: %s", e)


def log_test_results(loggers, columns: dict, out_dir: Path, split: str = "test") -> None:
    """For loggers that take tables and images (W&B): the ``split``'s table (a row per N, a column per network),
    the Recall@N curves and the run's pictures, under ``<split>/``."""
    media = [lg for lg in loggers if hasattr(lg, "log_table") and hasattr(lg, "log_image")]
    if not media or not columns:
        return
    from vpr.report import Run, plot_recall_curves

    names = list(columns)
    ns = sorted({int(n) for res in columns.values() for n in res["recall_at"]})
    data = [[n, *(100.0 * columns[c]["recall_at"].get(str(n), float("nan")) for c in names)] for n in ns]
    curves = []
    try:
        runs = [
            Run(
                c,
                None,
                columns[c]["dataset"],
                columns[c]["split"],
                {int(n): float(r) for n, r in columns[c]["recall_at"].items()},
                out_dir,
            )
            for c in names
        ]
        curves = [str(plot_recall_curves(runs, out_dir / "pictures" / f"{split}_recall_curves.png"))]
    except Exception as e:  # a picture is a bonus
        log.warning("no Recall@N curve picture: %s", e)
    pictures = {
        f"{split}/{key}": out_dir / "pictures" / f"{name}.png"
        for key, name in (("retrievals", f"{split}_retrievals"), ("worst_failures", "worst_failures"))
    }
    for lg in media:
        lg.log_table(key=f"{split}/recall_table", columns=["N", *(f"{c} R@N (%)" for c in names)], data=data)
        if curves:
            lg.log_image(key=f"{split}/recall_curves", images=curves)
        for key, path in pictures.items():
            if path.is_file():
                lg.log_image(key=key, images=[str(path)])
