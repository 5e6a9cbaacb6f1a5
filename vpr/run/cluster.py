"""cluster.py's work: the k-means centroid file for the configured backbone, dataset and K."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from vpr.build import build_datamodule, build_network, check_common_settings
from vpr.centroids import (
    centroid_path,
    check_database,
    cluster_and_save,
    needs_centroids,
    read_attributes,
    readable_centroid_file,
)
from vpr.devices import reuse_freed_memory
from vpr.errors import ConfigError, stop_if_sigterm_was_swallowed
from vpr.models.heads.netvlad import load_centroid_file


def run_clustering(cfg: DictConfig) -> Path | None:
    """The centroid file of the configured head (computed unless it exists); None for a head that needs none."""
    stop_if_sigterm_was_swallowed()  # a signal during the imports: stop before the work
    reuse_freed_memory()  # the steps' large activations from freed memory, not fresh pages (glibc)
    check_common_settings(cfg, trainer=False)  # k-means runs on the GPU if there is one, else the CPU
    backbone, _, head = build_network(cfg)
    if not needs_centroids(head):  # a loop over configurations may include pooling heads: nothing to do
        print(f"head={cfg.head.get('_target_')} needs no centroids (needs_centroids is false): nothing to cluster")
        return None
    path = centroid_path(cfg, backbone, head)
    if path.is_file() and not cfg.get("overwrite", False):
        if readable_centroid_file(path):
            try:  # of this head's K and D: a file for another K would only fail in train.py or eval.py
                load_centroid_file(path, head.num_clusters, head.dim)
            except ValueError as e:
                raise ConfigError(f"{e} (overwrite=true replaces the file)") from None
            attrs = read_attributes(path)
            if attrs.get("database_fingerprint") is not None and not cfg.cluster.get("file"):
                dm = build_datamodule(cfg)  # a file of another dataset of the same name is not this one's
                dm.prepare_data()
                check_database(cfg, path, attrs, dm)
            print(f"{path} exists (overwrite=true to recompute)")
            return path
        if cfg.cluster.get("file"):  # the user's file: replaced only when asked
            raise ConfigError(
                f"cluster.file={path} exists but is not a readable centroid file: overwrite=true to "
                "replace it, or name another file"
            )
        print(f"{path} exists but is unreadable (an interrupted or foreign file): computing it again")
    dm = build_datamodule(cfg)
    dm.prepare_data()
    path = cluster_and_save(cfg, backbone, head, dm, path)
    print(f"wrote {path}")
    return path
