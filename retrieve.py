"""Top-k database images for each query image, from two folders: python retrieve.py ckpt_path=PATH database=DIR queries=DIR."""

import hydra
from omegaconf import DictConfig

from vpr.errors import launch, report_user_errors


@hydra.main(version_base="1.3", config_path="configs", config_name="retrieve")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from vpr.run.retrieve import run_retrieval

    run_retrieval(cfg)


if __name__ == "__main__":
    launch(main, "retrieve")
