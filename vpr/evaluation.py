"""eval.py's work: Recall@N of a checkpoint (or of the untrained network) on a split, results.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from vpr.builders import build_datamodule, build_module, command_line_overrides, init_netvlad, uses_netvlad
from vpr.errors import ConfigError
from vpr.eval.results import format_table
from vpr.io import write_json_atomic
from vpr.test_sets import prepare_test_sets, resolve_test_sets, run_test_sets, shared_data_overrides
from vpr.training import resolve_ckpt_path, single_log_stream

log = logging.getLogger(__name__)

# Settings that define the network: taken from the checkpoint, whatever the command line says.
MODEL_KEYS = ("backbone", "attention", "head", "loss", "model", "seed")


def load_checkpoint_config(path: str) -> tuple[dict, dict | None]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ConfigError(f"ckpt_path={path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if "state_dict" not in state:
        raise ConfigError(f"ckpt_path={path} has no state_dict: not a Lightning checkpoint of train.py")
    return state, state.get("vpr_config")


def fit_pca(module, dm, dim: int) -> None:
    """PCA-whitening to ``dim`` fitted on the training database's descriptors, applied before the search."""
    from vpr.data.dataset import ImageDataset
    from vpr.eval.pca import PCAWhitening

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
        state, stored = load_checkpoint_config(ckpt_path)
        if stored is not None:
            cfg = cfg.copy()
            OmegaConf.set_struct(cfg, False)
            for key in MODEL_KEYS:
                if key in stored:
                    cfg[key] = stored[key]
            cfg.backbone.pretrained = False  # the checkpoint holds the weights: nothing to download
            trained_size = stored["data"]["image_size"]
            if not any(o.startswith("data.image_size") for o in command_line_overrides()):
                cfg.data.image_size = trained_size
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
        module.load_state_dict(state["state_dict"])
    elif uses_netvlad(cfg):
        dm.prepare_data()
        dm.setup("fit")  # clustering (cluster.auto) reads the training split
        init_netvlad(cfg, module, dm)
    if cfg.get("pca_dim"):
        fit_pca(module, dm, int(cfg.pca_dim))
    trainer = L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=cfg.paths.output_dir,
    )
    out_dir = Path(cfg.paths.output_dir)
    if prepared:
        label = "trained" if ckpt_path else "untrained"
        record = {"checkpoint": ckpt_path, **({"pca_dim": int(cfg.pca_dim)} if cfg.get("pca_dim") else {})}
        return run_test_sets(prepared, module, trainer, out_dir, record=record,
                             title=f"Recall (%) of the {label} network" + (f" ({ckpt_path})" if ckpt_path else ""))
    trainer.test(module, datamodule=dm, verbose=False)
    results = dict(module.results["test"])
    results["checkpoint"] = ckpt_path
    if cfg.get("pca_dim"):
        results["pca_dim"] = int(cfg.pca_dim)
    write_json_atomic(out_dir / "results.json", results)
    label = "trained" if ckpt_path else "untrained"
    print("\n" + format_table({label: results}, title="Recall (%)") + f"\n\nresults: {out_dir / 'results.json'}\n")
    return results
