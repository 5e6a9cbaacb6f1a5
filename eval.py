"""Recall@N of a checkpoint (or the untrained network): python eval.py [ckpt_path=PATH] [split=val|test]."""

import hydra
from omegaconf import DictConfig

from vpr.errors import launch, report_user_errors


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from vpr.run.evaluate import run_evaluation

    run_evaluation(cfg)


if __name__ == "__main__":
    launch(main, "eval")
