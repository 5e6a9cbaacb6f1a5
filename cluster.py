"""k-means centroids for NetVLAD: python cluster.py [data=...] [backbone=...] [model.num_clusters=K]."""

import hydra
from omegaconf import DictConfig

from vpr.errors import launch, report_user_errors


@hydra.main(version_base="1.3", config_path="configs", config_name="cluster")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from vpr.run.cluster import run_clustering

    run_clustering(cfg)


if __name__ == "__main__":
    launch(main, "cluster")
