"""The bodies of the scripts, side by side: :mod:`.train` (train.py), :mod:`.evaluate` (eval.py),
:mod:`.cluster` (cluster.py), :mod:`.retrieve` (retrieve.py), and :mod:`.test_sets` (several test sets in one
command, for train.py and eval.py).

Each reads the composed config top to bottom: build the pieces (:mod:`vpr.build`), initialise the head
(:mod:`vpr.centroids`), load weights (:mod:`vpr.checkpoints`), run, write results atomically (:mod:`vpr.io`).
"""

from __future__ import annotations

import logging
import os
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
#: Where a run folder keeps an earlier run's outputs (hidden: the sweep table never reads them as a run).
EARLIER_RUNS_DIR = ".earlier"


def set_aside_earlier_outputs(out_dir: Path, keep: tuple[str, ...] = ()) -> Path | None:
    """Move what an earlier run left in this run's folder (a sweep started again with the same ``hydra.sweep.dir``,
    ``hydra.run.dir`` given twice) into ``<out_dir>/.earlier/<its time>/``, before this run does anything: its
    results would otherwise pass for this run's, also when this one fails (the sweep table would count them under
    the settings Hydra has just written for this run). Nothing is deleted. ``keep``: file names left in place (a
    resumed training keeps the untrained network's results, which it does not measure again). Returns the folder,
    None when there was nothing to move (or in another process than the first)."""
    if process_rank(os.environ) > 0:  # the first process moved them before it started the others
        return None
    found = sorted({p for pattern in FINISHED_RUN_OUTPUTS for p in Path(out_dir).glob(pattern) if p.name not in keep})
    if not found:
        return None
    newest = max(p.stat().st_mtime for p in found)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(newest))
    dest, k = Path(out_dir) / EARLIER_RUNS_DIR / stamp, 1
    while dest.exists():
        k += 1
        dest = Path(out_dir) / EARLIER_RUNS_DIR / f"{stamp}_{k}"
    try:
        dest.mkdir(parents=True)
        for path in found:
            os.replace(path, dest / path.name)  # the same file system: a rename, nothing copied or lost
    except OSError as e:
        from vpr.errors import ConfigError

        raise ConfigError(
            f"{out_dir} holds the results of an earlier run ({', '.join(p.name for p in found)}) and they could "
            f"not be moved to {dest} ({e.strerror}): give this run another folder (hydra.sweep.dir, hydra.run.dir) "
            "or move them yourself"
        ) from None
    log.warning(
        "%s held the results of an earlier run (%s): moved to %s; this run's results replace them when it finishes",
        out_dir,
        ", ".join(p.name for p in found),
        dest,
    )
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
