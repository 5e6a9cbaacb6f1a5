"""The k-means file that initialises a NetVLAD head (docs/method.md section 2), from its name to ``init``.

Local descriptors are sampled from the backbone's feature maps of random training database images
(``descriptors_per_image`` random locations of each of ``images`` images, L2-normalised over channels), then
clustered by faiss k-means. The HDF5 file holds datasets ``descriptors`` (N, D) and ``centroids`` (K, D) and,
as attributes, what produced them (backbone tag, weights fingerprint, dataset, image size). Its name encodes
backbone, dataset, K and image size: ``<backbone tag>[-random<seed>]_<dataset>_<K>_<H>x<W>_desc_cen.hdf5``, the
dataset being ``data.tag`` when the data config sets one (the synthetic city: its preset and seed), else
``data.name``: two recipes or two cities never share a file.

``cluster.exclude_groups`` (e.g. ``[person, vehicle]``, the paper's de-attention centroids) samples each image's
locations only among the feature cells that those groups of the run's semantic guidance cover at most half of; the
file's name then ends ``_desc_cen_without-<group>+<group>.hdf5`` and its attributes record the groups.

Which heads need the file is the head's own answer (``head.needs_centroids``); nothing here reads config text
to decide it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Subset

from vpr.data.dataset import ImageDataset
from vpr.data.guidance import GuidanceTargets
from vpr.data.transforms import normalise_pixels, pixel_statistics
from vpr.devices import full_float32_matmul, loader_worker_init, loader_workers, work_device
from vpr.errors import ConfigError, DataError
from vpr.eval.search import faiss_missing, faiss_or_none
from vpr.io import atomic_path
from vpr.progress import progress

log = logging.getLogger(__name__)


def needs_centroids(head: nn.Module) -> bool:
    return bool(getattr(head, "needs_centroids", False))


def backbone_file_tag(backbone: nn.Module, seed: int) -> str:
    """The backbone's tag, plus ``-random<seed>`` for randomly initialised weights (valid for that seed only)."""
    return backbone.tag + ("" if getattr(backbone, "pretrained", False) else f"-random{int(seed)}")


#: The sampling and k-means seed of a pretrained backbone's file when the config has no ``cluster.seed``.
DEFAULT_CLUSTER_SEED = 42


def clustering_seed(cfg: DictConfig, backbone: nn.Module) -> int:
    """The seed of the descriptor sampling and k-means. Random weights: the run's seed, which the file's name
    carries. Pretrained weights: ``cluster.seed``, never the run's: their file is shared by runs of every seed, so
    its content must not depend on which of them (or cluster.py) made it first."""
    if not getattr(backbone, "pretrained", False):
        return int(cfg.seed)
    seed = cfg.cluster.get("seed")  # checked with every script's settings (build.check_common_settings)
    return DEFAULT_CLUSTER_SEED if seed is None else int(seed)


#: A feature cell is sampled under ``cluster.exclude_groups`` when at least this fraction of its pixels lies outside
#: those groups (its guidance target, computed for those groups, is >= it).
KEPT_CELL_FRACTION = 0.5
_GROUP_NAME = re.compile(r"[A-Za-z0-9_-]+")


def exclude_groups(cfg: DictConfig) -> list[str]:
    """``cluster.exclude_groups`` as a sorted list of guidance group names ([]: every location may be sampled).

    Anything but a list of names, or groups without a semantic guidance to label them (``guidance=none``), is a
    ConfigError naming the setting (checked with every script's settings, before any work)."""
    value = (cfg.get("cluster") or {}).get("exclude_groups")
    items = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if items is None:
        return []
    if not isinstance(items, list | tuple) or not all(isinstance(g, str) and _GROUP_NAME.fullmatch(g) for g in items):
        raise ConfigError(
            f"cluster.exclude_groups={items!r}: give a list of the guidance's group names, e.g. "
            "cluster.exclude_groups=[person,vehicle], or [] to sample every feature-map location"
        )
    groups = sorted(set(items))
    if groups and not (cfg.get("guidance") or {}).get("source"):
        raise ConfigError(
            f"cluster.exclude_groups=[{','.join(groups)}] leaves out the feature cells a semantic guidance labels as "
            "those groups, and this run has none (guidance=none): choose a guidance that labels the training images "
            "(guidance=synthetic on the city, guidance=mask_dir guidance.mask_dir=..., guidance=deeplab_cityscapes "
            "guidance.weights=...), or cluster.exclude_groups=[] for the plain centroids"
        )
    return groups


def centroid_path(cfg: DictConfig, backbone: nn.Module, head: nn.Module) -> Path:
    """``<centroids_dir>/<backbone>_<dataset>_<K>_<H>x<W>_desc_cen.hdf5`` unless ``cluster.file`` names one; absolute,
    so the logs say where it is whatever folder the command ran in. With ``cluster.exclude_groups`` the name ends
    ``_desc_cen_without-<groups joined by +>.hdf5``: the plain file and that one never replace each other."""
    if cfg.cluster.get("file"):
        return Path(cfg.cluster.file).expanduser().resolve()
    dataset = cfg.data.get("tag") or cfg.data.name
    height, width = (int(s) for s in cfg.data.image_size)
    groups = exclude_groups(cfg)
    without = f"_without-{'+'.join(groups)}" if groups else ""
    name = (
        f"{backbone_file_tag(backbone, cfg.seed)}_{dataset}_{int(head.num_clusters)}_{height}x{width}"
        f"_desc_cen{without}.hdf5"
    )
    return (Path(cfg.paths.centroids_dir).expanduser() / name).resolve()


def readable_centroid_file(path: Path) -> bool:
    """Whether ``path`` opens as HDF5 with a ``centroids`` dataset (a killed write or a foreign file does not)."""
    try:
        with h5py.File(path, "r") as f:
            return "centroids" in f
    except OSError:
        return False


def database_fingerprint(split) -> str:
    """A name for the database images a file was sampled from: a hash of their count and UTM positions (to the
    centimetre), the same wherever the dataset lies on disk; two cities or two folder datasets differ."""
    utm = np.round(np.asarray(split.db_utm, dtype=np.float64), 2).astype("<f8")
    return hashlib.sha1(len(split.db_paths).to_bytes(8, "little") + utm.tobytes()).hexdigest()[:16]


def backbone_fingerprint(backbone: nn.Module) -> float:
    """A number that changes with the weights: the sum of every parameter, in float64."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in backbone.parameters()))


# ---------------------------------------------------------------------------------------------------------
# Making the file
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_local_descriptors(
    backbone: nn.Module,
    dataset: ImageDataset,
    num_images: int,
    per_image: int,
    seed: int,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    allowed_cells: Callable[[np.ndarray], Sequence[np.ndarray]] | None = None,
) -> np.ndarray:
    """(min(num_images, len) * per_image, C) L2-normalised local descriptors, float32.

    Each image contributes ``per_image`` distinct locations of its feature map (all of them when the map is
    smaller, then the total is smaller). ``allowed_cells``: given the chosen images' dataset indices (sorted), the
    locations each of them may contribute, as indices into its row-major (h * w) feature map; the image's
    ``per_image`` locations are drawn among those (all of them when fewer, none when there are none).
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(dataset), size=min(num_images, len(dataset)), replace=False))
    allowed = None if allowed_cells is None else list(allowed_cells(chosen))
    loader = DataLoader(
        Subset(dataset, chosen.tolist()),
        batch_size=batch_size,
        num_workers=num_workers,
        worker_init_fn=loader_worker_init(),
        pin_memory=torch.device(device).type == "cuda",
    )
    was_training = backbone.training
    backbone.eval().to(device)
    out = []
    done = 0  # images sampled so far (the index into ``allowed``)
    mean, std = pixel_statistics(device)
    for images, _ in progress(loader, desc="sampling local descriptors"):
        fmap = F.normalize(backbone(normalise_pixels(images.to(device), mean, std)).float(), dim=1)  # (B, C, h, w)
        b, c, h, w = fmap.shape
        flat = fmap.flatten(2).transpose(1, 2).cpu().numpy()  # (B, h*w, C)
        take = min(per_image, h * w)
        for i in range(b):
            if allowed is None:
                out.append(flat[i, rng.choice(h * w, size=take, replace=False)])
                continue
            cells = np.asarray(allowed[done + i], dtype=np.int64)
            if len(cells) and (cells.min() < 0 or cells.max() >= h * w):
                raise ValueError(f"allowed cells of image {int(chosen[done + i])} lie outside its {h}x{w} feature map")
            if len(cells):
                out.append(flat[i, rng.choice(cells, size=min(per_image, len(cells)), replace=False)])
        done += b
    backbone.train(was_training)
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def feature_grid(backbone: nn.Module, image_size: Sequence[int], device: str | torch.device = "cpu") -> tuple[int, int]:
    """(h, w) of the backbone's feature map for (H, W) images (one zero image, in eval mode)."""
    was_training = backbone.training
    backbone.eval().to(device)
    h, w = backbone(torch.zeros(1, 3, *(int(s) for s in image_size), device=device)).shape[-2:]
    backbone.train(was_training)
    return int(h), int(w)


class KeptCells:
    """``allowed_cells`` for :func:`sample_local_descriptors` under ``cluster.exclude_groups``: the guidance targets of
    the chosen images for those groups on the feature grid (each cell's fraction of pixels outside them; computed
    and cached as the training's targets are), and per image the cells where it is >= :data:`KEPT_CELL_FRACTION`.
    The counts of images with fewer such cells than ``per_image`` are logged and kept for the file's attributes."""

    def __init__(
        self,
        source,
        groups: Sequence[str],
        image_paths: Sequence[Path],
        grid: tuple[int, int],
        per_image: int,
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
    ):
        self.source, self.groups, self.paths = source, list(groups), list(image_paths)
        self.grid, self.per_image = grid, int(per_image)
        self.cache_dir, self.num_workers = cache_dir, int(num_workers)
        self.fewer = self.without = 0

    def __call__(self, chosen: np.ndarray) -> list[np.ndarray]:
        targets = GuidanceTargets(
            self.source,
            self.groups,
            [self.paths[int(i)] for i in chosen],
            self.grid,
            self.cache_dir,
            num_workers=self.num_workers,
        ).table.numpy()
        cells = [np.flatnonzero(t.reshape(-1) >= KEPT_CELL_FRACTION) for t in targets]
        self.fewer = sum(len(c) < self.per_image for c in cells)
        self.without = sum(len(c) == 0 for c in cells)
        listed = "[" + ",".join(self.groups) + "]"
        if len(cells) and self.without == len(cells):
            raise ConfigError(
                f"cluster.exclude_groups={listed}: in none of the {len(cells)} sampled training images do these "
                f"groups leave a feature cell at least half free ({self.source.describe()}, {self.grid[0]}x"
                f"{self.grid[1]} grid), so there is nothing to cluster. Check the label maps and "
                "guidance.class_groups, or use cluster.exclude_groups=[] for the plain centroids"
            )
        log.info(
            "cluster.exclude_groups=%s: sampling among the feature cells at least half free of them (%s); %d of %d "
            "images have fewer than %d such cells and give all of theirs (%d none)",
            listed,
            self.source.describe(),
            self.fewer,
            len(cells),
            self.per_image,
            self.without,
        )
        return cells


def kmeans(
    descriptors: np.ndarray, num_clusters: int, iterations: int = 100, seed: int = 0, device: str | torch.device = "cpu"
) -> np.ndarray:
    """k-means: (N, D) -> (K, D) centroids; faiss's, or without faiss the same algorithm in torch on ``device``."""
    n, d = descriptors.shape
    if n < num_clusters:
        raise ConfigError(
            f"only {n} descriptors for {num_clusters} clusters: raise cluster.images or "
            "cluster.descriptors_per_image, or lower model.num_clusters"
        )
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    faiss = faiss_or_none()
    if faiss is None:
        log.warning("%s: k-means in torch instead", faiss_missing())
        return torch_kmeans(descriptors, num_clusters, iterations, seed, device)
    km = faiss.Kmeans(d, num_clusters, niter=iterations, seed=seed, verbose=False, max_points_per_centroid=10**7)
    km.train(descriptors)
    return km.centroids.copy()


def torch_kmeans(
    x: np.ndarray, k: int, iterations: int, seed: int, device: str | torch.device = "cpu", chunk: int = 65536
) -> np.ndarray:
    """Lloyd's k-means as faiss runs it: K distinct points drawn at random as the start, ``iterations`` rounds of
    nearest-centroid assignment and mean update; an emptied cluster restarts at the point farthest from its
    centroid. float32 on ``device``, points assigned in chunks. (N, D) -> (K, D)."""
    points = torch.from_numpy(x).to(device)
    gen = torch.Generator().manual_seed(seed)
    centroids = points[torch.randperm(len(points), generator=gen)[:k].to(points.device)].clone()
    with full_float32_matmul():
        for _ in range(iterations):
            c_sq = centroids.square().sum(1)
            sums, counts, dist = torch.zeros_like(centroids), torch.zeros_like(c_sq), []
            for part in points.split(chunk):
                d = part.square().sum(1, keepdim=True) - 2.0 * (part @ centroids.T) + c_sq
                best, which = d.min(dim=1)
                member = torch.nn.functional.one_hot(which, k).to(part.dtype)  # a product, not atomics: repeatable
                sums += member.T @ part
                counts += member.sum(0)
                dist.append(best)
            nearest = torch.cat(dist)
            new = sums / counts.clamp_min(1).unsqueeze(1)
            for j in torch.nonzero(counts == 0).flatten().tolist():  # empty: restart at the worst-served point
                far = int(nearest.argmax())
                new[j] = points[far]
                nearest[far] = -1.0
            centroids = new
    return centroids.cpu().numpy()


def write_centroid_file(path: Path, descriptors: np.ndarray, centroids: np.ndarray, attrs: dict) -> None:
    """Write the HDF5 file atomically: a temporary file in the same folder, then a rename."""
    with atomic_path(path, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("descriptors", data=descriptors)
        f.create_dataset("centroids", data=centroids)
        for k, v in attrs.items():
            f.attrs[k] = v


#: The ``cluster.*`` settings a centroid file records; its name carries none of them.
CLUSTER_SETTINGS = {
    "images": "training database images sampled for k-means",
    "descriptors_per_image": "feature-map locations sampled per image",
    "iterations": "k-means iterations",
}


def clustering_settings(cfg: DictConfig) -> dict[str, int]:
    """The ``cluster.*`` counts that made (or would make) a centroid file, as stored in its attributes."""
    return {name: int(value) for name in CLUSTER_SETTINGS if (value := cfg.cluster.get(name)) is not None}


def kept_cells(cfg: DictConfig, backbone: nn.Module, datamodule, split, device) -> KeptCells | None:
    """The cell chooser of ``cluster.exclude_groups`` for this run's guidance (None when no group is excluded). The
    label source is built and the groups looked up now, before any image is encoded."""
    groups = exclude_groups(cfg)
    if not groups:
        return None
    if getattr(datamodule, "guidance", None) is None:
        raise ConfigError(
            f"cluster.exclude_groups=[{','.join(groups)}] needs the training images' semantic labels, and this "
            "run's data has no guidance: choose one (guidance=synthetic, guidance=mask_dir guidance.mask_dir=..., "
            "guidance=deeplab_cityscapes guidance.weights=...), or cluster.exclude_groups=[]"
        )
    source = datamodule.label_source()  # the label maps or the network: a missing one is one error now
    for group in groups:
        try:
            source.group_ids(group)
        except DataError as e:
            raise ConfigError(
                f"cluster.exclude_groups=[{','.join(groups)}]: {str(e).removeprefix('guidance.suppress: ')}"
            ) from None
    return KeptCells(
        source,
        groups,
        split.db_paths,
        feature_grid(backbone, datamodule.image_size, device),
        int(cfg.cluster.descriptors_per_image),
        datamodule.guidance.get("cache_dir"),
        loader_workers(int(cfg.data.num_workers)),
    )


def cluster_and_save(cfg: DictConfig, backbone: nn.Module, head: nn.Module, datamodule, path: Path) -> Path:
    """Sample descriptors from the training database with ``backbone``, run k-means for ``head``, write ``path``."""
    if datamodule.splits.get("train") is None:
        raise ConfigError(
            f"clustering NetVLAD centroids ({path.name}) needs a training split, and dataset {datamodule.name} has "
            f"none (it is evaluation-only): cluster on the training dataset (python cluster.py data=<it> ...) and "
            f"pass that file with cluster.file=<path>, or evaluate a checkpoint (ckpt_path=...)"
        )
    t0 = time.perf_counter()
    split = datamodule.train_split
    dataset = ImageDataset(split.db_paths, datamodule.transform)
    device = work_device(cfg.trainer)
    seed = clustering_seed(cfg, backbone)
    cells = kept_cells(cfg, backbone, datamodule, split, device)
    desc = sample_local_descriptors(
        backbone,
        dataset,
        num_images=int(cfg.cluster.images),
        per_image=int(cfg.cluster.descriptors_per_image),
        seed=seed,
        batch_size=int(cfg.data.eval_batch_size),
        num_workers=loader_workers(int(cfg.data.num_workers)),
        device=device,
        allowed_cells=cells,
    )
    backbone.cpu()
    k = int(head.num_clusters)
    centroids = kmeans(desc, k, int(cfg.cluster.iterations), seed, device)
    excluded = {}  # recorded only when groups are excluded: the plain file stays as it always was
    if cells is not None:
        excluded = {
            "exclude_groups": ",".join(cells.groups),
            "guidance_source": cells.source.name,
            "images_with_fewer_cells": cells.fewer,
        }
    write_centroid_file(
        path,
        desc,
        centroids,
        {
            "backbone": backbone_file_tag(backbone, cfg.seed),
            "backbone_fingerprint": backbone_fingerprint(backbone),
            "dataset": f"{split.dataset}/{split.split}",
            "database_fingerprint": database_fingerprint(split),
            "image_size": list(datamodule.image_size),
            "num_clusters": k,
            "seed": seed,
            **clustering_settings(cfg),
            **excluded,
        },
    )
    log.info(
        "wrote %s: %d descriptors -> %d centroids in %.1f s", path, len(desc), len(centroids), time.perf_counter() - t0
    )
    return path


# ---------------------------------------------------------------------------------------------------------
# Using the file
# ---------------------------------------------------------------------------------------------------------


def init_head(cfg: DictConfig, module, datamodule, missing_hint: str = "") -> None:
    """Initialise the module's head from its centroid file when the head needs one; cluster first when
    ``cluster.auto`` and the file is missing. ``missing_hint``: the cluster.py command line to suggest."""
    if not needs_centroids(module.head):
        return
    path = centroid_path(cfg, module.backbone, module.head)
    auto = bool(cfg.cluster.get("auto", False))
    # only the project's own cache file is replaced; a file named by cluster.file is the user's
    if auto and not cfg.cluster.get("file") and path.is_file() and not readable_centroid_file(path):
        log.warning(
            "centroid file %s is unreadable (interrupted or foreign) and cluster.auto=true: clustering again", path
        )
        cluster_and_save(cfg, module.backbone, module.head, datamodule, path)
    if not path.is_file():
        if not auto:
            raise ConfigError(
                f"centroid file {path} (k-means initialisation of {type(module.head).__name__}) not found. Create it "
                "with\n"
                f"  python cluster.py {missing_hint}\n"
                "(same data/backbone/head settings as training), or add cluster.auto=true to cluster first. "
                "A head that needs centroids trains badly without them (NetVLAD), so there is no random fallback."
            )
        log.info("centroid file %s missing and cluster.auto=true: clustering now", path)
        cluster_and_save(cfg, module.backbone, module.head, datamodule, path)
    attrs = read_attributes(path)
    check_fingerprint(path, attrs, module.backbone)
    check_database(cfg, path, attrs, datamodule)
    check_image_size(path, attrs, datamodule.image_size)
    check_clustering_settings(path, attrs, cfg, module.backbone)
    try:
        alpha = module.head.init_from_file(path)
    except ValueError as e:  # truncated or foreign file, other K or D: the message names the file and the fix
        raise ConfigError(str(e)) from None
    log.info("%s initialised from %s (alpha %.2f)", type(module.head).__name__, path, alpha)


def read_attributes(path: Path) -> dict[str, Any]:
    try:
        with h5py.File(path, "r") as f:
            return dict(f.attrs)
    except OSError as e:
        raise ConfigError(
            f"centroid file {path} is not a readable HDF5 file ({e}); run cluster.py with overwrite=true and the "
            "training's settings, or delete it"
        ) from None


def check_fingerprint(path: Path, attrs: dict[str, Any], backbone: nn.Module) -> None:
    stored = attrs.get("backbone_fingerprint")
    if stored is None:
        return
    now = backbone_fingerprint(backbone)
    if not math.isclose(float(stored), now, rel_tol=1e-6, abs_tol=1e-6):
        raise ConfigError(
            f"centroid file {path} was computed with other backbone weights (fingerprint {float(stored):.6g}, "
            f"this backbone {now:.6g}): the seed or backbone settings differ from cluster.py's. Re-run cluster.py "
            "with the training settings, or delete the file and use cluster.auto=true."
        )


def check_clustering_settings(path: Path, attrs: dict[str, Any], cfg: DictConfig, backbone: nn.Module) -> None:
    """A file made with other ``cluster.*`` counts or another seed still initialises NetVLAD (its name carries
    none of them, so it is found), but say so: the run asked for other centroids. Files that predate these
    attributes are taken as they are. ``cluster.exclude_groups`` is in the name, so only a file named with
    ``cluster.file`` can differ in it: a file without the record sampled every location."""
    wanted = {**clustering_settings(cfg), "seed": clustering_seed(cfg, backbone)}
    differ = [
        f"{name} {int(attrs[name])} (this run: {value})"
        for name, value in wanted.items()
        if name in attrs and int(attrs[name]) != value
    ]
    made_without, run_without = str(attrs.get("exclude_groups", "")), ",".join(exclude_groups(cfg))
    if made_without != run_without:
        differ.append(f"exclude_groups [{made_without}] (this run: [{run_without}])")
    if differ:
        log.warning(
            "centroid file %s was made with other clustering settings: %s. It is used as it is; for centroids of "
            "this run's settings re-run cluster.py with them and overwrite=true (or delete the file and add "
            "cluster.auto=true), or keep both with cluster.file=<another path>",
            path,
            ", ".join(differ),
        )


def check_database(cfg: DictConfig, path: Path, attrs: dict[str, Any], datamodule) -> None:
    """The file under this dataset's name was sampled from this training database. Its name holds ``data.tag``
    or ``data.name``, which two folder datasets or two cities read with ``data=pittsburgh`` can share. A file the
    user names (``cluster.file``: another dataset's centroids, by choice) is not checked."""
    stored = attrs.get("database_fingerprint")
    if stored is None or cfg.cluster.get("file") or datamodule.splits.get("train") is None:
        return
    try:
        split = datamodule.train_split
    except (DataError, OSError):  # eval.py of a dataset whose training split is not on this machine
        return
    now = database_fingerprint(split)
    if str(stored) != now:
        raise ConfigError(
            f"centroid file {path} was sampled from another training database ({attrs.get('dataset')}, "
            f"fingerprint {stored}) than this run's "
            f"{split.dataset}/{split.split} (fingerprint {now}): the file name does not tell the datasets apart. "
            "Give this dataset its own name in centroid files with data.tag=<name>, or run cluster.py with "
            "overwrite=true to replace the file"
        )


def check_image_size(path: Path, attrs: dict[str, Any], image_size) -> None:
    """Centroids sampled at another image size still initialise NetVLAD, but say so: it is not the recipe."""
    stored = attrs.get("image_size")
    if stored is not None and [int(x) for x in stored] != [int(x) for x in image_size]:
        log.warning(
            "centroid file %s was sampled from %s images, this run uses %s: re-run cluster.py (overwrite=true) "
            "for centroids of this size",
            path,
            [int(x) for x in stored],
            list(image_size),
        )
