"""Train a place-recognition model: python train.py [experiment=city_baseline] [group=option] [key=value]."""

import hydra
from omegaconf import DictConfig

from vpr.errors import launch, report_user_errors


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    from vpr.run.train import run_training

    results = run_training(cfg)
    trained = results.get("trained")
    return trained["recall_at"]["1"] if trained else None  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    launch(main, "train")
