"""Build the pieces of a run from the composed Hydra config (shared by train.py, eval.py and cluster.py)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vpr.errors import ConfigError

log = logging.getLogger(__name__)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """A context in which torch's global RNG is seeded, restored afterwards.

    Model construction runs inside it, so the same seed gives the same random weights in cluster.py, train.py and
    eval.py (k-means centroids of a randomly initialised backbone are only valid for those exact weights).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def build_backbone(cfg: DictConfig) -> nn.Module:
    with seeded(cfg.seed):
        return instantiate(cfg.backbone)


def build_network(cfg: DictConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(backbone, attention, head) with deterministic initialisation for ``cfg.seed``."""
    with seeded(cfg.seed):
        backbone = instantiate(cfg.backbone)
        channels = int(backbone.out_channels)
        attention = instantiate(cfg.attention, channels=channels)
        head = instantiate(cfg.head, dim=channels)
    return backbone, attention, head


def backbone_tag(cfg: DictConfig) -> str:
    """Identifies the backbone weights the centroids were computed with (file names, fingerprints)."""
    b = cfg.backbone
    tag = str(b.name)
    if "cut_at" in b and str(b.name).startswith("resnet"):
        tag += f"-{b.cut_at}"
    tag += "" if b.get("pretrained", False) else f"-random{cfg.seed}"
    return tag


def centroid_path(cfg: DictConfig) -> Path:
    """``<centroids_dir>/<backbone>_<dataset>_<K>_desc_cen.hdf5`` unless ``cluster.file`` names one."""
    if cfg.cluster.get("file"):
        return Path(cfg.cluster.file)
    k = int(cfg.head.get("num_clusters", 0))
    return Path(cfg.paths.centroids_dir) / f"{backbone_tag(cfg)}_{cfg.data.name}_{k}_desc_cen.hdf5"


def backbone_fingerprint(backbone: nn.Module) -> float:
    """A number that changes with the weights: the sum of every parameter, in float64."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in backbone.parameters()))


def uses_netvlad(cfg: DictConfig) -> bool:
    return str(cfg.head.get("_target_", "")).endswith("NetVLAD")


def mining_margin(cfg: DictConfig) -> float:
    """``mining.margin``, or when null the loss's own: margin (+ margin_pn for sTML, as the paper's runs)."""
    if cfg.mining.get("margin") is not None:
        return float(cfg.mining.margin)
    margin = float(cfg.loss.get("margin", 0.1))
    if "margin_pn" in cfg.loss and int(cfg.loss.get("version", 1)) == 1:
        margin += float(cfg.loss.margin_pn)
    return margin


def build_datamodule(cfg: DictConfig, data_cfg: DictConfig | None = None, with_training: bool = True):
    """The data module of ``cfg.data`` (or of ``data_cfg``, a test set's); ``eval.spatial_nms`` overrides the data's.

    Without training (a test set) neither mining nor semantic guidance is set up.
    """
    data_cfg = cfg.data if data_cfg is None else data_cfg
    kwargs: dict[str, Any] = {"seed": cfg.seed}
    if with_training:
        kwargs["mining"] = OmegaConf.to_container(cfg.mining, resolve=True)
        kwargs["mining"]["margin"] = mining_margin(cfg)
        guidance = cfg.get("guidance") or {}
        kwargs["guidance"] = OmegaConf.to_container(guidance, resolve=True) if guidance.get("source") else None
    nms = (cfg.get("eval") or {}).get("spatial_nms")
    if nms is not None:
        kwargs["spatial_nms"] = bool(nms)
    return instantiate(data_cfg, **kwargs, _recursive_=True)


def build_module(cfg: DictConfig, with_training: bool = True):
    from vpr.models.module import PlaceRecognitionModule

    backbone, attention, head = build_network(cfg)
    guidance = cfg.get("guidance") or {}
    kwargs: dict[str, Any] = {}
    if with_training:
        kwargs["optimizer"] = instantiate(cfg.optimizer)
        kwargs["scheduler"] = instantiate(cfg.scheduler) if cfg.get("scheduler") and "_target_" in cfg.scheduler else None
    return PlaceRecognitionModule(
        backbone=backbone,
        attention=attention,
        head=head,
        loss=instantiate(cfg.loss),
        lr_multipliers=cfg.model.get("lr_multipliers"),
        recall_at=list(cfg.model.recall_at),
        freeze_batchnorm=bool(cfg.model.get("freeze_batchnorm", False)),
        encode_batch_size=int(cfg.data.eval_batch_size),
        encode_workers=int(cfg.data.num_workers),
        run_config=OmegaConf.to_container(cfg, resolve=True),
        aux_loss=str(guidance.get("loss", "mse")),
        aux_weight=float(guidance.get("weight", 0.0)) if guidance.get("source") else 0.0,
        aux_weight_after=guidance.get("weight_after"),
        aux_switch_epoch=guidance.get("switch_epoch"),
        **kwargs,
    )


def init_netvlad(cfg: DictConfig, module, datamodule) -> None:
    """Initialise a NetVLAD head from the centroid file; cluster first when ``cluster.auto`` and it is missing."""
    if not uses_netvlad(cfg):
        return
    path = centroid_path(cfg)
    if not path.is_file():
        if not cfg.cluster.get("auto", False):
            raise ConfigError(
                f"NetVLAD centroid file {path} not found. Create it with\n"
                f"  python cluster.py {' '.join(_overrides())}\n"
                "(same data/backbone/head settings as training), or add cluster.auto=true to cluster first. "
                "NetVLAD without centroid initialisation trains badly, so there is no random fallback."
            )
        from vpr.clustering import cluster_and_save

        log.info("centroid file %s missing and cluster.auto=true: clustering now", path)
        cluster_and_save(cfg, module.backbone, datamodule, path)
    check_fingerprint(path, module.backbone)
    check_image_size(path, datamodule.image_size)
    alpha = module.head.init_from_file(path)
    log.info("NetVLAD initialised from %s (alpha %.2f)", path, alpha)


def check_fingerprint(path: Path, backbone: nn.Module) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        stored = f.attrs.get("backbone_fingerprint")
    if stored is None:
        return
    now = backbone_fingerprint(backbone)
    if not math.isclose(float(stored), now, rel_tol=1e-6, abs_tol=1e-6):
        raise ConfigError(
            f"centroid file {path} was computed with other backbone weights (fingerprint {float(stored):.6g}, "
            f"this backbone {now:.6g}): the seed or backbone settings differ from cluster.py's. Re-run cluster.py "
            "with the training settings, or delete the file and use cluster.auto=true."
        )


def check_image_size(path: Path, image_size) -> None:
    """Centroids sampled at another image size still initialise NetVLAD, but say so: it is not the recipe."""
    import h5py

    with h5py.File(path, "r") as f:
        stored = f.attrs.get("image_size")
    if stored is not None and [int(x) for x in stored] != [int(x) for x in image_size]:
        log.warning(
            "centroid file %s was sampled from %s images, this run uses %s: re-run cluster.py (overwrite=true) "
            "for centroids of this size",
            path, [int(x) for x in stored], list(image_size),
        )


def command_line_overrides() -> list[str]:
    """The overrides this Hydra run was given on the command line ([] when not run by Hydra, e.g. in tests)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def _overrides() -> list[str]:
    # what cluster.py needs: data, backbone, head, seed; not the training-only settings
    skip = ("ckpt_path", "trainer", "cluster.auto", "logger", "callbacks", "test_", "optimizer", "scheduler")
    return [o for o in command_line_overrides() if not o.startswith(skip)]

