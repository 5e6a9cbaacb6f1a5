"""eval.py's work: Recall@N of a checkpoint (or of the untrained network) on a split or on several test sets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from vpr import variant_with_overrides
from vpr.build import (
    build_datamodule,
    build_loggers,
    build_module,
    build_trainer,
    check_common_settings,
    check_recall_at,
    cluster_command_overrides,
    command_line_overrides,
    finish_loggers,
    whole_number,
)
from vpr.callbacks import stop_if_signalled
from vpr.centroids import init_head, needs_centroids
from vpr.checkpoints import (
    load_network_weights,
    network_from_checkpoint,
    read_checkpoint,
    resolve_ckpt_path,
    with_checkpoint_city,
)
from vpr.data.dataset import ImageDataset
from vpr.devices import reuse_freed_memory, work_device
from vpr.errors import ConfigError, stop_if_sigterm_was_swallowed
from vpr.eval.pca import check_pca_file_free, load_or_fit_pca
from vpr.eval.tables import format_recall_table
from vpr.io import write_json_atomic, write_text_atomic
from vpr.run import (
    log_test_results,
    save_predictions,
    save_run_config,
    set_aside_earlier_outputs,
    single_log_stream,
)
from vpr.run.test_sets import prepare_test_sets, resolve_test_sets, run_test_sets, shared_data_overrides
from vpr.viz.pictures import save_retrieval_pictures

log = logging.getLogger(__name__)


def pca_source(cfg: DictConfig, dm, shared: dict[str, Any]):
    """The data module whose training database PCA is fitted on: ``pca_data`` (a data config name, or a mapping
    like a test_sets entry) or, by default, the run's own dataset."""
    if not cfg.get("pca_data"):
        return dm
    scratch = cfg.copy()
    OmegaConf.set_struct(scratch, False)
    scratch.test_sets = [cfg.pca_data]
    (ts,) = resolve_test_sets(scratch, shared)
    source = build_datamodule(cfg, data_cfg=ts.data, with_training=False)
    source.prepare_data()
    return source


def setup_pca(cfg: DictConfig, module, dm, shared: dict[str, Any]) -> dict[str, Any]:
    """PCA-whitening before the search: read from ``pca_file``, or fitted to ``pca_dim`` on a training database
    (and saved to ``pca_file`` when given, never over an existing file). Returns what results.json records."""
    dim, path = whole_number(cfg, "pca_dim", 1, "the PCA output dimension; null: no PCA"), cfg.get("pca_file")
    if not dim and not path:
        return {}
    source = pca_source(cfg, dm, shared) if dim else None
    split = source.train_split if source is not None else None

    def training_database():
        module.to(work_device(cfg.trainer))  # before any Trainer: on the GPU when there is one, not the CPU
        module.apply_memory_format()
        return module.encode_dataset(ImageDataset(split.db_paths, source.transform), "PCA: training database")

    pca, record = load_or_fit_pca(
        dim,
        path,
        module.head.out_dim,
        f"training database images of {split.dataset}" if split is not None else "",
        split.num_db if split is not None else 0,
        training_database,
    )
    module.descriptor_transform = pca.transform
    return {**record, **({"pca_fitted_on": split.dataset} if split is not None else {})}


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    stop_if_sigterm_was_swallowed()  # a signal during the imports: stop before the work
    reuse_freed_memory()  # the steps' large activations from freed memory, not fresh pages (glibc)
    single_log_stream()
    set_aside_earlier_outputs(Path(cfg.paths.output_dir))  # a job that fails here must not show an earlier result
    check_common_settings(cfg)
    check_recall_at(cfg)
    check_pca_file_free(whole_number(cfg, "pca_dim", 1, "the PCA output dimension; null: no PCA"), cfg.get("pca_file"))
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split}: choose test, val or train")
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.log_dir, "train")
    state, trained_size = None, None
    if ckpt_path is not None:
        ckpt_path = str(Path(ckpt_path).resolve())  # results.json names the file wherever the command ran
        state, stored = read_checkpoint(ckpt_path, str(cfg.get("ckpt_format") or "auto"), cfg.get("trusted_targets"))
        cfg = network_from_checkpoint(cfg, state, stored, ckpt_path, command_line_overrides())
        cfg = with_checkpoint_city(cfg, stored, command_line_overrides())
        if stored is not None:
            trained_size = stored["data"]["image_size"]
    else:  # the network of the command line: its component choices name its variant (baseline+se)
        cfg.variant = variant_with_overrides(cfg.get("variant"), command_line_overrides())
    h, w = (int(x) for x in cfg.data.image_size)
    log.info(
        "images at %dx%d (%s)",
        h,
        w,
        "the checkpoint's training size"
        if trained_size is not None and [h, w] == [int(x) for x in trained_size]
        else f"data.image_size of data={cfg.data.name}",
    )
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the settings this evaluation ran with, the checkpoint's network included (variant: the row of a table)
    save_run_config(cfg, out_dir)
    loggers = build_loggers(cfg)  # logger=wandb|csv|tensorboard: the recalls are logged (eval.yaml: none)
    L.seed_everything(int(cfg.seed), workers=True)
    shared = shared_data_overrides(cfg, command_line_overrides(), trained_size)
    sets = resolve_test_sets(cfg, shared)
    module = None
    if state is not None:  # a checkpoint whose weights do not fit the network fails before any data work
        module = build_module(cfg, with_training=False)
        load_network_weights(module, state, ckpt_path)
    dm = build_datamodule(cfg)
    if not sets:
        own = dict(cfg.data.splits).get(cfg.split)
        if own is None:
            have = [k for k, v in dict(cfg.data.splits).items() if v is not None]
            raise ConfigError(f"split={cfg.split}: dataset {cfg.data.name} has no {cfg.split} split (it has {have})")
        dm.splits["test"] = own
        dm.prepare_data()
        dm.setup("test")  # a missing dataset fails here, before any image is encoded
    prepared = prepare_test_sets(cfg, sets, cfg.split)  # so do the test sets'
    if module is None:  # the command line's network (pretrained weights: perhaps a download) after the data
        module = build_module(cfg, with_training=False)
        if needs_centroids(module.head):
            dm.prepare_data()  # the training split is read only if cluster.auto has to cluster
            init_head(cfg, module, dm, cluster_command_overrides())
    extra = setup_pca(cfg, module, dm, shared)
    trainer = build_trainer(cfg, training=False, loggers=loggers)
    failed = True
    try:
        results = evaluate(cfg, trainer, module, dm, prepared, ckpt_path, extra, out_dir)
        failed = False
        return results
    finally:
        finish_loggers(trainer, failed)  # each eval.py job (a sweep's too) is its own W&B run


def evaluate(cfg: DictConfig, trainer, module, dm, prepared, ckpt_path, extra, out_dir: Path) -> dict[str, Any]:
    """Test on the run's split (logged as ``<split>/R@N``, with the table and pictures for W&B) or on every test
    set (``test_<label>/R@N``), write the results and print the table."""
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    label = "trained" if ckpt_path else "untrained"
    if prepared:
        return run_test_sets(
            prepared,
            module,
            trainer,
            out_dir,
            record={"checkpoint": ckpt_path, **extra},
            title=f"Recall (%) of the {label} network"
            + (f" ({ckpt_path})" if ckpt_path else "")
            + (f", PCA-whitened to {extra['pca_dim']} dimensions" if extra.get("pca_dim") else ""),
        )
    module.test_log_prefix = str(cfg.split)
    trainer.test(module, datamodule=dm, verbose=False)
    stop_if_signalled(trainer)
    results = {**module.results["test"], "checkpoint": ckpt_path, **extra}
    write_json_atomic(out_dir / "results.json", results)
    pca = f" after PCA-whitening to {extra['pca_dim']} dimensions" if extra.get("pca_dim") else ""
    table = format_recall_table({label: results}, title=f"Recall (%){pca}")
    write_text_atomic(out_dir / "results.md", table + "\n")
    save_retrieval_pictures(module, dm, "test", out_dir / "pictures" / f"{cfg.split}_retrievals.png")
    save_predictions(module, dm, out_dir)
    log_test_results(trainer.loggers, {label: results}, out_dir, split=str(cfg.split))
    print("\n" + table + f"\n\nresults: {out_dir / 'results.json'}\n")
    return results
