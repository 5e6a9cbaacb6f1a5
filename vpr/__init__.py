"""vpr: NetVLAD-style visual place recognition with Lightning and Hydra."""

from omegaconf import OmegaConf


def _first_set(*values):
    """``${vpr.first_set:${variant},run}``: the first argument that is not null (oc.select keeps a null value)."""
    return next((v for v in values if v is not None), None)


# OmegaConf's resolver registry is per process; the scripts import vpr before Hydra composes their config.
if not OmegaConf.has_resolver("vpr.first_set"):
    OmegaConf.register_new_resolver("vpr.first_set", _first_set)
