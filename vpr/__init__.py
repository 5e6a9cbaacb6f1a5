"""vpr: NetVLAD-style visual place recognition with Lightning and Hydra."""

from pathlib import Path

from omegaconf import OmegaConf


def _job_name(variant, task_name, seed, ckpt_path=None) -> str:
    """``${vpr.job_name:${variant},${task_name},${seed},${oc.select:ckpt_path,null}}``: a sweep job's folder name,
    ``<variant>_seed<seed>``. Without a variant (eval.py over checkpoints): the variant and seed of the training run
    that wrote ``ckpt_path`` (its ``config.yaml``, two folders up), else ``<task>_seed<seed>``."""
    if variant is None and ckpt_path not in (None, "", "last"):
        try:
            trained = OmegaConf.load(Path(str(ckpt_path)).parent.parent / "config.yaml")
            if trained.get("variant") is not None:
                return f"{trained.variant}_seed{trained.get('seed')}"
        except Exception:  # no training run's config beside the checkpoint (a released file): the task's name
            pass
    return f"{variant if variant is not None else task_name}_seed{seed}"


# OmegaConf's resolver registry is per process; the scripts import vpr before Hydra composes their config.
if not OmegaConf.has_resolver("vpr.job_name"):
    OmegaConf.register_new_resolver("vpr.job_name", _job_name)
