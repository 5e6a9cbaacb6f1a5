"""vpr: NetVLAD-style visual place recognition with Lightning and Hydra."""

from pathlib import Path

from omegaconf import OmegaConf

#: The project's config folder (an editable install or a clone: next to the vpr package).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _job_name(variant, task_name, seed, ckpt_path=None) -> str:
    """``${vpr.job_name:${variant},${task_name},${seed},${oc.select:ckpt_path,null}}``: a sweep job's folder name,
    ``<variant>_seed<seed>``. Without a variant (eval.py over checkpoints): the variant and seed of the training run
    that wrote ``ckpt_path`` (its ``config.yaml``, two folders up; ``<task>_seed<its seed>`` when it had no variant),
    else ``<task>_seed<seed>``."""
    if variant is None and ckpt_path not in (None, "", "last"):
        try:
            trained = OmegaConf.load(Path(str(ckpt_path)).parent.parent / "config.yaml")
            if trained.get("seed") is not None:
                return f"{trained.get('variant') or task_name}_seed{trained.get('seed')}"
        except Exception:  # no training run's config beside the checkpoint (a released file): the task's name
            pass
    return f"{variant if variant is not None else task_name}_seed{seed}"


#: Config groups whose choice on the command line names a variant of its own (``experiment=city_baseline
#: attention=se`` is not the baseline).
VARIANT_GROUPS = ("backbone", "attention", "head", "loss")


def experiment_choices(name: str, config_dir: Path | None = None) -> dict[str, str]:
    """The group choices (``override /attention: se``) of ``configs/experiment/<name>.yaml`` and of the experiments
    it builds on, its own last."""
    folder = (config_dir or CONFIG_DIR) / "experiment"
    choices: dict[str, str] = {}
    try:
        defaults = OmegaConf.to_container(OmegaConf.load(folder / f"{name}.yaml")).get("defaults") or []
    except Exception:  # not a file of this project (an experiment elsewhere on the search path): none known
        return choices
    for entry in defaults:
        if isinstance(entry, str) and entry not in ("_self_",):
            choices.update(experiment_choices(entry, config_dir))
        elif isinstance(entry, dict):
            for key, value in entry.items():
                if str(key).startswith("override /"):
                    choices[str(key)[len("override /") :]] = str(value)
    return choices


def default_choices(config_dir: Path | None = None) -> dict[str, str]:
    """The group choices of ``configs/base.yaml``'s defaults (``backbone: vgg16``): a run without an experiment
    that names them on its command line is the same network as one that does not."""
    try:
        defaults = OmegaConf.to_container(OmegaConf.load((config_dir or CONFIG_DIR) / "base.yaml")).get("defaults")
    except Exception:  # noqa: BLE001 - no base.yaml there
        return {}
    return {str(k): str(v) for entry in defaults or [] if isinstance(entry, dict) for k, v in entry.items()}


def variant_with_overrides(variant, overrides) -> str | None:
    """``variant`` with ``+<choice>`` for every group of :data:`VARIANT_GROUPS` the command line ``overrides``
    choose other than the experiment's own (``experiment=city_baseline attention=se``: ``baseline+se``), unless the
    command line sets ``variant`` itself. Without a variant (no experiment) the choices other than the defaults
    name it (``backbone=resnet18 attention=se``: ``resnet18+se``; ``backbone=vgg16 attention=se``: ``se``), and
    without such choices it stays unset."""
    keys = [str(o).lstrip("+~").split("=", 1) for o in overrides or ()]
    if any(k[0] == "variant" for k in keys):
        return None if variant is None else str(variant)
    chosen = dict(k for k in keys if len(k) == 2)
    own = experiment_choices(chosen["experiment"]) if "experiment" in chosen else default_choices()
    parts = [] if variant is None else str(variant).split("+")
    for group in VARIANT_GROUPS:
        choice = chosen.get(group)
        if choice and choice != own.get(group) and choice not in parts:
            parts.append(choice)
    return "+".join(parts) or None


def variant_tags(tags, variant) -> list[str]:
    """A run's W&B tags: ``tags`` (the experiment's) with ``variant`` added. A variant that the command line's
    component choices made from the experiment's (``baseline+se`` from ``baseline``) leaves out the experiment's
    own variant tag, so that filtering runs on ``baseline`` finds the baseline network only."""
    out = [str(t) for t in tags or ()]
    if not variant:
        return out
    variant = str(variant)
    base, *added = variant.split("+")
    if added:
        out = [t for t in out if t != base]
    return out if variant in out else [*out, variant]


def _command_line_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _job_variant(variant):
    """``${vpr.variant:${variant}}``: the variant of this job, its command line's component choices added."""
    return variant_with_overrides(variant, _command_line_overrides())


# OmegaConf's resolver registry is per process; the scripts import vpr before Hydra composes their config.
if not OmegaConf.has_resolver("vpr.job_name"):
    OmegaConf.register_new_resolver("vpr.job_name", _job_name)
if not OmegaConf.has_resolver("vpr.variant"):
    OmegaConf.register_new_resolver("vpr.variant", _job_variant)
