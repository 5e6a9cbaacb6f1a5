"""Checkpoints released by other codes: the NetVLAD baseline's (pytorch-NetVlad) and the paper code's.

Both write ``torch.save({"epoch", "state_dict", "recalls", "best_score", "optimizer", ...})`` with numpy scalars
beside the tensors. Their ``state_dict`` names modules by attribute:

- ``encoder.<i>.*``: torchvision VGG16 ``features[<i>]`` up to conv5_3 (this project's ``backbone.features.<i>``);
- ``pool.conv.weight`` (K, D, 1, 1), ``pool.conv.bias`` (NetVLAD v2 only), ``pool.centroids`` (K, D): NetVLAD
  (this project's ``head.*``);
- the paper code adds its attention modules, applied in this order between encoder and pool: ``deattention``,
  then ``senet_attention``, ``bam_attention``, ``cbam_attention``, ``crn_attention``.

With several GPUs the codes wrapped modules in DataParallel, which inserts ``.module`` after the module name (a
network wrapped whole has ``module.`` before every key instead; both are read). The
paper code's early files name the mask head's layers ``crm_*`` (and ``crm_attention``); its own loader renames
``crm`` to ``crn`` in every key, as :func:`convert` does.

:func:`convert` maps such a state dict onto this project's names and says which attention reproduces the file's
forward pass (:data:`PAPER_MODULES`); :func:`place_attention` puts the attention tensors where a built network
keeps that module (``attention.*`` alone, ``attention.stages.<i>.*`` inside a combination).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from vpr.errors import ConfigError

FORMATS = ("auto", "lightning", "netvlad_baseline", "paper")

#: The de-attention mask head's parameters in the paper code (three context branches conv -> ReLU -> BatchNorm,
#: then the 1x1 fusion conv -> ReLU -> BatchNorm) and in this project's DeAttention.
_MASK_HEAD = {
    "crn_conv1.0": "branches.0.conv",
    "crn_conv1.2": "branches.0.bn",
    "crn_conv2.0": "branches.1.conv",
    "crn_conv2.2": "branches.1.bn",
    "crn_conv3.0": "branches.2.conv",
    "crn_conv3.2": "branches.2.bn",
    "crn_conv4.0": "fuse",
    "crn_conv4.2": "fuse_bn",
}
#: Layers the paper code's mask head builds but never runs (their tensors are in its files): dropped.
_MASK_HEAD_UNUSED = ("crn_downsample.", "crn_upsample.")


@dataclass(frozen=True)
class PaperModule:
    """One of the paper code's attention modules: this project's class and settings that reproduce its forward
    pass, and how its parameter names map (paper layer prefix -> project layer prefix)."""

    target: str
    settings: dict[str, Any]
    layers: dict[str, str]
    unused: tuple[str, ...] = ()
    note: str = ""
    hidden_from: str | None = None  # a weight whose first dimension is C / r (gives ``reduction``)


#: The paper code's attention modules, in the order its forward pass applies them.
PAPER_MODULES: dict[str, PaperModule] = {
    "deattention": PaperModule(
        "vpr.models.attention.deattention.DeAttention",
        {"version": 1, "apply": "features", "normalize_input": True},
        _MASK_HEAD,
        _MASK_HEAD_UNUSED,
        "de-attention with the paper code's mode: features * mask (NetVLAD's per-location normalisation then "
        "erases the mask; version 2's x + x * mask is erased the same way)",
    ),
    "senet_attention": PaperModule(
        "vpr.models.attention.se.SE",
        {},
        {"fc.0": "excitation.0", "fc.2": "excitation.2"},
        hidden_from="fc.0.weight",
        note="SE (Linear C -> C/r -> C without biases)",
    ),
    "bam_attention": PaperModule(
        "vpr.models.attention.bam.BAM",
        {"dilation": 4, "combine": "product", "channel_pool": "square"},
        {
            "channel_att.gate_c.gate_c_fc_0": "channel_mlp.0",
            "channel_att.gate_c.gate_c_bn_1": "channel_mlp.1",
            "channel_att.gate_c.gate_c_fc_final": "channel_mlp.3",
            "spatial_att.gate_s.gate_s_conv_reduce0": "spatial_branch.0",
            "spatial_att.gate_s.gate_s_bn_reduce0": "spatial_branch.1",
            "spatial_att.gate_s.gate_s_conv_di_0": "spatial_branch.3",
            "spatial_att.gate_s.gate_s_bn_di_0": "spatial_branch.4",
            "spatial_att.gate_s.gate_s_conv_di_1": "spatial_branch.6",
            "spatial_att.gate_s.gate_s_bn_di_1": "spatial_branch.7",
            "spatial_att.gate_s.gate_s_conv_final": "spatial_branch.9",
        },
        hidden_from="channel_att.gate_c.gate_c_fc_0.weight",
        note="BAM with that code's forward: Mc * Ms (combine=product) and Mc pooled over an H x H window "
        "(channel_pool=square)",
    ),
    "cbam_attention": PaperModule(
        "vpr.models.attention.cbam.CBAM",
        {"kernel_size": 7, "spatial_to_aggregation": False},
        {
            "ChannelGate.mlp.1": "channel_mlp.0",
            "ChannelGate.mlp.3": "channel_mlp.2",
            "SpatialGate.spatial.conv": "spatial_conv",
            "SpatialGate.spatial.bn": "spatial_bn",
        },
        hidden_from="ChannelGate.mlp.1.weight",
        note="CBAM (features * Mc * Ms)",
    ),
    "crn_attention": PaperModule(
        "vpr.models.attention.crn.PaperCRN",
        {},
        _MASK_HEAD,
        _MASK_HEAD_UNUSED,
        "that code's CRN (the de-attention mask head on normalised features, unsupervised; not Kim et al.'s CRN)",
    ),
}
#: Modules of the paper code this project does not build.
_NOT_BUILT = {
    "deattention_auto": "the per-category de-attention (deattention_auto)",
    "ch_eca_attention": "ECA channel attention (ch_eca_attention)",
}

_PARAM_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass
class Converted:
    """A released state dict in this project's names."""

    layout: str  # "netvlad_baseline" or "paper"
    network: dict[str, torch.Tensor]  # backbone.* and head.*
    attention: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # paper module -> its tensors
    attention_config: dict[str, Any] | None = None  # the attention that reproduces the file's forward pass
    head_settings: dict[str, Any] = field(default_factory=dict)  # num_clusters, version
    dropped: list[str] = field(default_factory=list)
    #: the file's own key of each converted tensor (``network`` keys; ``attention`` as ``<module>/<key>``)
    origin: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.layout == "netvlad_baseline":
            return "the NetVLAD baseline's layout (encoder.* -> backbone.features.*, pool.* -> head.*)"
        parts = [PAPER_MODULES[name].note for name in self.attention]
        return (
            "the paper code's layout (encoder.* -> backbone.features.*, pool.* -> head.*; "
            + "; then ".join(parts)
            + ")"
        )


def _plain(key: str) -> str:
    """The key without DataParallel's ``.module`` after the top-level module name, and without the ``module.``
    that DataParallel or DistributedDataParallel put in front of every key when they wrap the whole network (the
    codes themselves wrapped encoder and pool apart, but a network wrapped whole and saved is common)."""
    key = key.removeprefix("module.")
    top, _, rest = key.partition(".")
    return f"{top}.{rest[len('module.') :]}" if rest.startswith("module.") else key


def detect(state_dict: dict[str, Any]) -> str | None:
    """ "netvlad_baseline", "paper" or None (not a layout of these codes, e.g. this project's own)."""
    tops = {_plain(k).split(".")[0] for k in state_dict}
    if "encoder" not in tops or "pool" not in tops:
        return None
    return "netvlad_baseline" if tops == {"encoder", "pool"} else "paper"


def convert(state_dict: dict[str, Any], where: str) -> Converted:
    """A released state dict (either layout) in this project's names; anything unknown is refused, naming it."""
    layout = detect(state_dict)
    if layout is None:
        raise ConfigError(
            f"{where}: not a checkpoint of the NetVLAD baseline or of the paper code (its state_dict "
            "has no encoder.* and pool.* keys)"
        )
    network: dict[str, torch.Tensor] = {}
    modules: dict[str, dict[str, torch.Tensor]] = {}
    dropped: list[str] = []
    origin: dict[str, str] = {}
    for key, value in state_dict.items():
        # The paper code's early files named the mask head's layers crm_* (its loader renames crm to crn in every
        # key before loading, and so does this one).
        plain = _plain(key).replace("crm", "crn")
        top, _, rest = plain.partition(".")
        if top == "encoder":
            if not re.fullmatch(r"\d+\.(weight|bias)", rest):
                raise ConfigError(f"{where}: key {key!r} is not a VGG16 features layer (encoder.<i>.weight|bias)")
            network["backbone.features." + rest] = value
            origin["backbone.features." + rest] = key
        elif top == "pool":
            if rest not in ("conv.weight", "conv.bias", "centroids"):
                raise ConfigError(
                    f"{where}: key {key!r} is not part of NetVLAD (pool.conv.weight, pool.conv.bias, pool.centroids)"
                )
            network["head." + rest] = value
            origin["head." + rest] = key
        elif top in PAPER_MODULES:
            spec = PAPER_MODULES[top]
            if rest.startswith(spec.unused):
                dropped.append(key)
                continue
            layer, _, suffix = rest.rpartition(".")
            if layer not in spec.layers or suffix not in _PARAM_SUFFIXES:
                raise ConfigError(
                    f"{where}: key {key!r} is not a parameter of the paper code's {top} module "
                    f"(its layers: {', '.join(sorted(spec.layers))})"
                )
            modules.setdefault(top, {})[f"{spec.layers[layer]}.{suffix}"] = value
            origin[f"{top}/{spec.layers[layer]}.{suffix}"] = key
        elif top in _NOT_BUILT:
            raise ConfigError(
                f"{where}: holds {_NOT_BUILT[top]}, which this project does not build; it can evaluate "
                f"the paper code's {', '.join(PAPER_MODULES)} checkpoints"
            )
        else:
            raise ConfigError(
                f"{where}: key {key!r} belongs to a module {top!r} that neither the NetVLAD baseline nor "
                f"the paper code has (encoder, pool, {', '.join(PAPER_MODULES)})"
            )
    if "head.centroids" not in network or "head.conv.weight" not in network:
        raise ConfigError(f"{where}: a NetVLAD checkpoint needs pool.conv.weight and pool.centroids")
    centroids, conv = network["head.centroids"], network["head.conv.weight"]
    if centroids.ndim != 2:
        raise ConfigError(f"{where}: pool.centroids has shape {tuple(centroids.shape)}, expected (K, D)")
    if conv.ndim != 4 or tuple(conv.shape[:2]) != tuple(centroids.shape):
        raise ConfigError(
            f"{where}: the file disagrees with itself: pool.conv.weight has shape {tuple(conv.shape)} "
            f"and pool.centroids {tuple(centroids.shape)}, where NetVLAD needs (K, D, 1, 1) and (K, D)"
        )
    network["head.initialised"] = torch.tensor(True)  # the centroids come from the file, not from k-means
    head = {"num_clusters": int(centroids.shape[0]), "version": "v2" if "head.conv.bias" in network else "v1"}
    ordered = {name: modules[name] for name in PAPER_MODULES if name in modules}
    return Converted(
        layout, network, ordered, attention_config(ordered, where) if ordered else None, head, dropped, origin
    )


def attention_config(modules: dict[str, dict[str, torch.Tensor]], where: str) -> dict[str, Any]:
    """The attention config (Hydra ``attention`` group) that reproduces the paper code's forward pass."""
    stages = []
    for name, tensors in modules.items():
        spec = PAPER_MODULES[name]
        stage: dict[str, Any] = {"_target_": spec.target, **spec.settings}
        if spec.hidden_from is not None:
            layer, _, suffix = spec.hidden_from.rpartition(".")
            weight = tensors.get(f"{spec.layers[layer]}.{suffix}")
            if weight is None:
                raise ConfigError(f"{where}: the paper code's {name} module lacks {name}.{spec.hidden_from}")
            hidden, channels = int(weight.shape[0]), int(weight.shape[1])
            if hidden < 1 or channels % hidden:
                raise ConfigError(f"{where}: {name}.{spec.hidden_from} has shape {tuple(weight.shape)}: not C/r x C")
            stage["reduction"] = channels // hidden
        stages.append(stage)
    if len(stages) == 1:
        return stages[0]
    return {
        "_target_": "vpr.models.attention.base.Combined",
        "modules": [{**stage, "_partial_": True} for stage in stages],
    }


def place_attention(converted: Converted, module: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The paper modules' tensors under the names ``module`` (a network with ``attention``) keeps them, each going
    to the first attention stage of its class, in order; and the paper modules the network has no place for.
    ``converted.origin`` learns the file's key of each placed name."""
    import hydra.utils

    out: dict[str, torch.Tensor] = {}
    taken: set[str] = set()
    missing: list[str] = []
    stages = [(name, sub) for name, sub in module.attention.named_modules() if name.count(".") <= 1]
    for paper_name, tensors in converted.attention.items():
        cls = hydra.utils.get_class(PAPER_MODULES[paper_name].target)
        found = next((name for name, sub in stages if type(sub) is cls and name not in taken), None)
        if found is None:
            missing.append(paper_name)
            continue
        taken.add(found)
        prefix = "attention." + (found + "." if found else "")
        out.update({prefix + k: v for k, v in tensors.items()})
        converted.origin.update({prefix + k: converted.origin.get(f"{paper_name}/{k}", k) for k in tensors})
    return out, missing
