"""eval.py's work: Recall@N of a checkpoint (or of the untrained network) on a split or on several test sets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from vpr.build import (
    build_datamodule,
    build_module,
    build_trainer,
    cluster_command_overrides,
    command_line_overrides,
)
from vpr.centroids import init_head, needs_centroids
from vpr.checkpoints import load_network_weights, read_checkpoint, resolve_ckpt_path, with_stored_network
from vpr.data.dataset import ImageDataset
from vpr.errors import ConfigError
from vpr.eval.pca import PCAWhitening
from vpr.eval.tables import format_recall_table
from vpr.io import write_json_atomic
from vpr.run import single_log_stream
from vpr.run.test_sets import prepare_test_sets, resolve_test_sets, run_test_sets, shared_data_overrides

log = logging.getLogger(__name__)


def fit_pca(module, dm, dim: int) -> None:
    """PCA-whitening to ``dim`` fitted on the training database's descriptors, applied before the search."""
    split = dm.train_split
    if dim >= min(split.num_db, module.head.out_dim):
        raise ConfigError(
            f"pca_dim={dim} must be below the number of training database images ({split.num_db}) and the "
            f"descriptor size ({module.head.out_dim})"
        )
    desc = module.encode_dataset(ImageDataset(split.db_paths, dm.transform), "PCA: training database").cpu().numpy()
    pca = PCAWhitening(whiten=True).fit(desc, dim)
    module.descriptor_transform = pca.transform
    log.info("PCA-whitening %d -> %d fitted on %d training database descriptors", desc.shape[1], dim, len(desc))


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    single_log_stream()
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split}: choose val or test")
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.log_dir, "train")
    state, trained_size = None, None
    if ckpt_path is not None:
        state, stored = read_checkpoint(ckpt_path)
        if stored is not None:
            size_given = any(o.startswith("data.image_size") for o in command_line_overrides())
            cfg = with_stored_network(cfg, stored, size_given)
            trained_size = stored["data"]["image_size"]
        else:
            log.warning("%s stores no vpr config: the network is built from the command line's settings", ckpt_path)
    L.seed_everything(int(cfg.seed), workers=True)
    sets = resolve_test_sets(cfg, shared_data_overrides(cfg, command_line_overrides(), trained_size))
    dm = build_datamodule(cfg)
    if not sets:
        own = dict(cfg.data.splits).get(cfg.split)
        if own is None:
            have = [k for k, v in dict(cfg.data.splits).items() if v is not None]
            raise ConfigError(f"split={cfg.split}: dataset {cfg.data.name} has no {cfg.split} split (it has {have})")
        dm.splits["test"] = own
        dm.prepare_data()
        dm.setup("test")  # a missing dataset fails here, before any network is built
    prepared = prepare_test_sets(cfg, sets, cfg.split)  # so do the test sets'
    module = build_module(cfg, with_training=False)
    if state is not None:
        load_network_weights(module, state, ckpt_path)
    elif needs_centroids(module.head):
        dm.prepare_data()
        dm.setup("fit")  # clustering (cluster.auto) reads the training split
        init_head(cfg, module, dm, cluster_command_overrides())
    if cfg.get("pca_dim"):
        fit_pca(module, dm, int(cfg.pca_dim))
    trainer = build_trainer(cfg, training=False)
    out_dir = Path(cfg.paths.output_dir)
    label = "trained" if ckpt_path else "untrained"
    extra = {"pca_dim": int(cfg.pca_dim)} if cfg.get("pca_dim") else {}
    if prepared:
        return run_test_sets(prepared, module, trainer, out_dir, record={"checkpoint": ckpt_path, **extra},
                             title=f"Recall (%) of the {label} network" + (f" ({ckpt_path})" if ckpt_path else ""))
    trainer.test(module, datamodule=dm, verbose=False)
    results = {**module.results["test"], "checkpoint": ckpt_path, **extra}
    write_json_atomic(out_dir / "results.json", results)
    print("\n" + format_recall_table({label: results}, title="Recall (%)") + f"\n\nresults: {out_dir / 'results.json'}\n")
    return results
