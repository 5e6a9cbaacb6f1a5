"""vpr from Python (a notebook, another project): the composed configs, a checkpoint's network, descriptors.

    from vpr.api import load_model, encode_images
    model, cfg = load_model("outputs/train/runs/<time>/checkpoints/last.ckpt")
    descriptors = encode_images(model, ["a.jpg", "b.jpg"], cfg.data.image_size)   # (2, D), L2-normalised

The network is built as eval.py builds it (the checkpoint's stored settings, or a released file's), with the same
safety: weights only, and the stored config may build only the project's components and ``trusted_targets``'.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, OmegaConf

from vpr import CONFIG_DIR


def compose_config(config_name: str = "eval", overrides: Sequence[str] = ()) -> DictConfig:
    """A script's config (``train``, ``eval``, ``cluster``, ``retrieve``) with command-line style ``overrides``,
    composed outside a Hydra run: ``paths.output_dir`` (a script's run folder) is a folder under the system's
    temporary folder, named by the config and this process and made only if something is written there, unless
    the overrides give one."""
    cfg = _composed(config_name, overrides)
    OmegaConf.resolve(cfg)
    return cfg


def _composed(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """:func:`compose_config` with its interpolations unresolved: settings changed later (a released file's K in
    ``model.num_clusters``) still reach the settings that refer to them (``head.num_clusters``)."""
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(
            f"{CONFIG_DIR}: the project's configs are not next to the vpr package (install it "
            "from a clone: pip install -e .)"
        )
    overrides = list(overrides)
    if not any(o.lstrip("+~").startswith("paths.output_dir=") for o in overrides):
        unused = Path(tempfile.gettempdir()) / f"vpr_{config_name}_{os.getpid()}"
        overrides.append(f"paths.output_dir={unused}")
    if _searches_project_configs():  # inside this project's Hydra app (a script, a test)
        cfg = compose(config_name=config_name, overrides=overrides)
    else:  # no Hydra, or another project's: its state is set aside while ours composes, then put back
        outer = get_gh_backup()
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
                cfg = compose(config_name=config_name, overrides=overrides)
        finally:
            restore_gh_from_backup(outer)
    if config_name == "train" and cfg.get("variant") is not None:  # as train.py records it: baseline+se
        from vpr import variant_with_overrides

        cfg.variant = variant_with_overrides(cfg.variant, overrides)
    return cfg


def _searches_project_configs() -> bool:
    """Whether Hydra is initialised with this project's config folder in its search path."""
    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():
        return False
    mine = CONFIG_DIR.resolve()
    return any(
        source.scheme() == "file" and Path(source.path).resolve() == mine
        for source in hydra.config_loader().get_sources()
    )


def load_model(
    ckpt_path: str | Path, overrides: Sequence[str] = (), device: str | torch.device | None = None
) -> tuple[torch.nn.Module, DictConfig]:
    """(the network of a checkpoint in eval mode on ``device``, the config it was built from).

    ``ckpt_path``: a checkpoint of train.py, or a released file of the NetVLAD baseline or the paper code.
    ``overrides``: eval.py's settings, e.g. ``["trusted_targets=[myvpr]"]`` or ``["model.channels_last=false"]``.
    ``device``: None puts it on this process's GPU when there is one. ``cfg.data.image_size`` is the size it was
    trained at (a released file: 480x640), and ``cfg.data`` the data it was trained on (a synthetic city: that city
    on this machine) unless ``overrides`` choose the data (``data=...``, ``data.prepare.preset=...``).
    """
    from vpr.checkpoints import network_of_checkpoint

    ckpt = str(Path(ckpt_path).expanduser().resolve())
    cfg = _composed("eval", [f"ckpt_path={ckpt}", *overrides])
    module, cfg = network_of_checkpoint(cfg, ckpt, list(overrides), device, trained_data=True)
    OmegaConf.resolve(cfg)
    return module, cfg


def encode_images(
    model: torch.nn.Module, images: Sequence[str | Path] | str | Path, image_size: Sequence[int], batch_size: int = 32
) -> torch.Tensor:
    """(N, D) float32 descriptors of image files (or of one: a path alone is one image, not a string of them),
    resized to ``image_size`` (height, width) as in training and evaluation, on the model's device."""
    from vpr.data.dataset import ImageDataset
    from vpr.data.transforms import eval_transform
    from vpr.errors import DataError

    if isinstance(images, (str, os.PathLike)):
        images = [images]
    paths = [Path(p) for p in images]
    missing = [p for p in paths if not p.is_file()]
    if missing:  # said here: in a loader worker it would come back wrapped in the worker's traceback
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"image {missing[0]} not found{more}")
    size = tuple(int(s) for s in image_size)
    kept = model.encode_batch_size  # the model's own setting (its mining cache pass) is left as it was
    model.encode_batch_size = int(batch_size)
    try:
        return model.encode_dataset(ImageDataset(paths, eval_transform(size)), "encoding")
    finally:
        model.encode_batch_size = kept
