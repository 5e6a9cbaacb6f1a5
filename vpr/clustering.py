"""k-means centroids for NetVLAD's initialisation (method.md section 2).

Local descriptors are sampled from the backbone's feature maps of random training database images
(``descriptors_per_image`` random locations of each of ``images`` images, L2-normalised over channels), then
clustered by faiss k-means. The HDF5 file holds datasets ``descriptors`` (N, D) and ``centroids`` (K, D) and,
as attributes, what produced them (backbone tag, weights fingerprint, dataset, image size).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import faiss
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vpr.builders import backbone_fingerprint, backbone_tag
from vpr.data.dataset import ImageDataset
from vpr.errors import ConfigError
from vpr.io import atomic_path

log = logging.getLogger(__name__)


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
) -> np.ndarray:
    """(min(num_images, len) * per_image, C) L2-normalised local descriptors, float32.

    Each image contributes ``per_image`` distinct locations of its feature map (all of them when the map is
    smaller, then the total is smaller).
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(dataset), size=min(num_images, len(dataset)), replace=False))
    loader = DataLoader(Subset(dataset, chosen.tolist()), batch_size=batch_size, num_workers=num_workers)
    was_training = backbone.training
    backbone.eval().to(device)
    out = []
    for images, _ in tqdm(loader, desc="sampling local descriptors", dynamic_ncols=True):
        fmap = F.normalize(backbone(images.to(device)).float(), dim=1)  # (B, C, h, w)
        b, c, h, w = fmap.shape
        flat = fmap.flatten(2).transpose(1, 2).cpu().numpy()  # (B, h*w, C)
        take = min(per_image, h * w)
        for i in range(b):
            out.append(flat[i, rng.choice(h * w, size=take, replace=False)])
    backbone.train(was_training)
    return np.concatenate(out).astype(np.float32)


def kmeans(descriptors: np.ndarray, num_clusters: int, iterations: int = 100, seed: int = 0) -> np.ndarray:
    """faiss k-means: (N, D) -> (K, D) centroids."""
    n, d = descriptors.shape
    if n < num_clusters:
        raise ConfigError(
            f"only {n} descriptors for {num_clusters} clusters: raise cluster.images or "
            "cluster.descriptors_per_image, or lower model.num_clusters"
        )
    km = faiss.Kmeans(d, num_clusters, niter=iterations, seed=seed, verbose=False, max_points_per_centroid=10**7)
    km.train(np.ascontiguousarray(descriptors, dtype=np.float32))
    return km.centroids.copy()


def write_centroid_file(path: Path, descriptors: np.ndarray, centroids: np.ndarray, attrs: dict) -> None:
    """Write the HDF5 file atomically: a temporary file in the same folder, then a rename."""
    with atomic_path(path, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("descriptors", data=descriptors)
        f.create_dataset("centroids", data=centroids)
        for k, v in attrs.items():
            f.attrs[k] = v


def cluster_and_save(cfg: DictConfig, backbone: nn.Module, datamodule, path: Path) -> Path:
    """Sample descriptors from the training database with ``backbone``, run k-means, write ``path``."""
    if "num_clusters" not in cfg.head:
        raise ConfigError(f"head={cfg.head.get('_target_')} has no clusters; cluster.py serves NetVLAD heads")
    t0 = time.perf_counter()
    split = datamodule.train_split
    dataset = ImageDataset(split.db_paths, datamodule.transform)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    desc = sample_local_descriptors(
        backbone,
        dataset,
        num_images=int(cfg.cluster.images),
        per_image=int(cfg.cluster.descriptors_per_image),
        seed=int(cfg.seed),
        batch_size=int(cfg.data.eval_batch_size),
        num_workers=int(cfg.data.num_workers),
        device=device,
    )
    backbone.cpu()
    centroids = kmeans(desc, int(cfg.head.num_clusters), int(cfg.cluster.iterations), int(cfg.seed))
    write_centroid_file(
        path,
        desc,
        centroids,
        {
            "backbone": backbone_tag(cfg),
            "backbone_fingerprint": backbone_fingerprint(backbone),
            "dataset": f"{split.dataset}/{split.split}",
            "image_size": list(datamodule.image_size),
            "num_clusters": int(cfg.head.num_clusters),
        },
    )
    log.info(
        "wrote %s: %d descriptors -> %d centroids in %.1f s",
        path,
        len(desc),
        len(centroids),
        time.perf_counter() - t0,
    )
    return path


def run_clustering(cfg: DictConfig) -> Path:
    """cluster.py's work: the centroid file for the configured backbone, dataset and K."""
    from vpr.builders import build_backbone, build_datamodule, centroid_path, uses_netvlad

    if not uses_netvlad(cfg):
        raise ConfigError(f"head={cfg.head.get('_target_')}: only a NetVLAD head needs centroids")
    path = centroid_path(cfg)
    if path.is_file() and not cfg.get("overwrite", False):
        print(f"{path} exists (overwrite=true to recompute)")
        return path
    dm = build_datamodule(cfg)
    dm.prepare_data()
    path = cluster_and_save(cfg, build_backbone(cfg), dm, path)
    print(f"wrote {path}")
    return path
