"""CNN backbones that turn an ImageNet-normalised image into a dense feature map.

Every backbone has the attribute ``out_channels`` (channels C of its output map) and ``stride`` (input pixels per
output cell), and ``forward(x: (B, 3, H, W)) -> (B, C, H / stride, W / stride)`` (floored at every pooling step).

Which layers learn is a setting (``train_from``): every parameter before the named block is frozen
(``requires_grad=False``), the named block and everything after it train. The NetVLAD baseline trains conv5 only,
the paper trains from conv3 (docs/method.md section 2).

Pretrained weights come from torchvision (ImageNet). There is no silent fallback to random weights: when the
weights cannot be found or fetched, a RuntimeError says where to put the file (docs/method.md: reproducibility
depends on the weight source).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

# Seconds before a stalled weight download gives up: without it an offline machine behind a black-holing
# firewall could hang for minutes instead of raising the helpful error below.
DOWNLOAD_TIMEOUT_S: float = 30.0

# VGG16 `features` indices of the first conv of each block (conv1_1, conv2_1, ..., conv5_1).
_VGG16_BLOCK_START = {"conv1": 0, "conv2": 5, "conv3": 10, "conv4": 17, "conv5": 24}
# features[:29] ends at conv5_3 (index 28): drops its ReLU (29) and the last max-pool (30).
_VGG16_CONV5_3_END = 29

_RESNET_STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")
_RESNET_CHANNELS = {18: {"layer3": 256, "layer4": 512}, 50: {"layer3": 1024, "layer4": 2048}}
_RESNET_STRIDE = {"layer3": 16, "layer4": 32}


def torchvision_weights_cache_dir() -> str:
    """Directory where torchvision looks for (and downloads) pretrained weights: ``<torch.hub.get_dir()>/checkpoints``.

    ``torch.hub.get_dir()`` is ``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``).
    """
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def load_torchvision_weights(weights: torchvision.models.WeightsEnum, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> dict:
    """Return the state dict of torchvision ``weights``, from the local cache or by downloading it.

    Raises:
        RuntimeError: when the file is not cached and cannot be downloaded (e.g. no network). The message names
            the URL, the exact cache path to place the file at, and the ``pretrained=false`` alternative.
    """
    cache_dir = torchvision_weights_cache_dir()
    filename = os.path.basename(urlparse(weights.url).path)
    cached_file = os.path.join(cache_dir, filename)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        # A cached file is read without network access; otherwise torch.hub downloads it (and checks the hash
        # encoded in the file name, so a truncated download is not mistaken for weights).
        return torch.hub.load_state_dict_from_url(
            weights.url, model_dir=cache_dir, progress=False, check_hash=True, map_location="cpu"
        )
    except Exception as err:  # URLError, socket timeout, hash mismatch, corrupt file, ...
        raise RuntimeError(
            f"Pretrained weights {weights} could not be downloaded or loaded ({type(err).__name__}: {err}).\n"
            f"torchvision caches them in {cache_dir} (torch.hub.get_dir()/checkpoints; set TORCH_HOME to move "
            f"it).\nFix: on a machine with internet access download {weights.url} and copy it to "
            f"{cached_file} (keep the file name), or anywhere and give backbone.weights_path=<file>, then run "
            "again.\n"
            "Or set pretrained=false (e.g. `backbone.pretrained=false`) to train from random initialisation, "
            "which gives far lower recall than ImageNet weights."
        ) from err
    finally:
        socket.setdefaulttimeout(previous_timeout)


def load_weights_file(path: str | os.PathLike, what: str) -> dict:
    """A state dict saved with ``torch.save`` (a torchvision ``.pth``, or a dict holding ``state_dict``), loaded as
    tensors only. ValueError naming ``backbone.weights_path`` when the file is missing or is not such a file."""
    if not os.path.isfile(path):
        raise ValueError(f"backbone.weights_path={path}: no such file (the {what} weights to start from)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"backbone.weights_path={path}: not a torch state dict ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"backbone.weights_path={path}: expected a state dict of tensors (torchvision's {what} .pth)")
    return state


def _load_into(module: nn.Module, state: dict, path: str | os.PathLike, what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise ValueError(f"backbone.weights_path={path} does not fit torchvision's {what}: {detail[:400]}") from None


def _normalise_train_from(train_from: str | int, stages: tuple[str, ...], kind: str) -> str:
    """Map the user's setting to a stage name, ``"all"`` or ``"none"``; ints name a block number (3 -> conv3/layer3)."""
    if train_from is None or isinstance(train_from, bool):
        # A YAML `null`/`true` is ambiguous: make the user say which blocks train.
        raise ValueError(
            f"backbone train_from={train_from!r} is ambiguous for {kind}; write the first block that trains "
            f"({', '.join(stages)}), 'all' or 'none'."
        )
    if isinstance(train_from, int):
        prefix = "conv" if kind == "vgg16" else "layer"
        train_from = "conv1" if (kind != "vgg16" and train_from == 0) else f"{prefix}{train_from}"
    name = str(train_from).lower()
    if name in ("all", "none") or name in stages:
        return name
    raise ValueError(
        f"Unknown backbone train_from={train_from!r} for {kind}; choose one of {', '.join(stages)}, 'all' "
        "or 'none' (every parameter before that block is frozen)."
    )


class VGG16Backbone(nn.Module):
    """torchvision VGG16 ``features`` up to conv5_3, before its ReLU: 512 channels, stride 16.

    Args:
        pretrained: load torchvision ImageNet weights (``VGG16_Weights.IMAGENET1K_V1``); RuntimeError if unavailable.
        weights_path: load them from this file instead (torchvision's ``vgg16-397923af.pth`` copied to a machine
            without internet, or any VGG16 state dict with ``features.*`` keys).
        train_from: first block that trains: ``conv1``..``conv5`` (``conv5``: the NetVLAD baseline, conv5_1..conv5_3;
            ``conv3``: the paper), ``all`` (= conv1) or ``none``. An int n means ``conv{n}``.
    """

    out_channels: int = 512
    stride: int = 16

    def __init__(
        self, pretrained: bool = True, train_from: str | int = "conv5", weights_path: str | os.PathLike | None = None
    ) -> None:
        super().__init__()
        # make_layers builds only the conv part: no 100M-parameter classifier is allocated for nothing.
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=False)
        if weights_path or pretrained:
            state = (
                load_weights_file(weights_path, "vgg16")
                if weights_path
                else load_torchvision_weights(torchvision.models.VGG16_Weights.IMAGENET1K_V1)
            )
            prefix = "features."
            _load_into(
                features,
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)},
                weights_path or "torchvision",
                "vgg16 features",
            )
        else:
            for m in features.modules():  # torchvision's VGG initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        # NetVLAD aggregates conv5_3 before the ReLU (negative responses carry information); no pool5.
        self.features = nn.Sequential(*list(features.children())[:_VGG16_CONV5_3_END])
        self.pretrained = bool(pretrained or weights_path)
        self.train_from = _normalise_train_from(train_from, tuple(_VGG16_BLOCK_START), "vgg16")
        self._freeze()

    @property
    def tag(self) -> str:
        """Names the architecture in file names (centroid files): ``vgg16``."""
        return "vgg16"

    def _freeze(self) -> None:
        if self.train_from == "all":
            first_trainable = 0
        elif self.train_from == "none":
            first_trainable = len(self.features)
        else:
            first_trainable = _VGG16_BLOCK_START[self.train_from]
        for index, layer in enumerate(self.features):
            for p in layer.parameters():
                p.requires_grad_(index >= first_trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) ImageNet-normalised -> (B, 512, H/16, W/16)."""
        return self.features(x)


class ResNetBackbone(nn.Module):
    """torchvision ResNet-18/50 cut after ``layer3`` (stride 16) or ``layer4`` (stride 32).

    Output channels: ResNet-18 256 (layer3) / 512 (layer4); ResNet-50 1024 / 2048.

    Args:
        depth: 18 or 50.
        pretrained: load torchvision ImageNet weights (``IMAGENET1K_V1``); RuntimeError if unavailable.
        cut_at: last stage kept, ``layer3`` or ``layer4``.
        train_from: first stage that trains: ``conv1`` (the stem), ``layer1``..``layer4``, ``all`` or ``none``.
            An int n means ``layer{n}`` (0: the stem).
        weights_version: torchvision weights name, e.g. ``IMAGENET1K_V1`` or ``IMAGENET1K_V2`` (ResNet-50).

    Batch-norm layers in frozen stages stay in eval mode during training, so their running statistics stay
    those of the pretrained network (freezing only the affine parameters would still drift them).
    """

    def __init__(
        self,
        depth: int = 50,
        pretrained: bool = True,
        cut_at: str = "layer3",
        train_from: str | int = "layer3",
        weights_version: str = "IMAGENET1K_V1",
        weights_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if depth not in _RESNET_CHANNELS:
            raise ValueError(f"Unsupported ResNet depth={depth}; choose 18 or 50.")
        if cut_at not in _RESNET_STRIDE:
            raise ValueError(f"Unsupported backbone cut_at={cut_at!r}; choose 'layer3' or 'layer4'.")
        weights_enum = torchvision.models.ResNet18_Weights if depth == 18 else torchvision.models.ResNet50_Weights
        try:
            weights = weights_enum[weights_version] if pretrained else None
        except KeyError:
            raise ValueError(
                f"Unknown weights_version={weights_version!r} for resnet{depth}; "
                f"choose one of {[w.name for w in weights_enum]}."
            ) from None
        net = torchvision.models.resnet18(weights=None) if depth == 18 else torchvision.models.resnet50(weights=None)
        if weights_path:
            _load_into(net, load_weights_file(weights_path, f"resnet{depth}"), weights_path, f"resnet{depth}")
        elif weights is not None:
            net.load_state_dict(load_torchvision_weights(weights))

        kept = _RESNET_STAGES[: _RESNET_STAGES.index(cut_at) + 1]
        self.stages = nn.ModuleDict(
            {"conv1": nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)}
            | {name: getattr(net, name) for name in kept[1:]}
        )
        self.depth = depth
        self.cut_at = cut_at
        self.pretrained = bool(pretrained or weights_path)
        self.out_channels: int = _RESNET_CHANNELS[depth][cut_at]
        self.stride: int = _RESNET_STRIDE[cut_at]
        self.train_from = _normalise_train_from(train_from, kept, f"resnet{depth} cut at {cut_at}")
        self._freeze()

    @property
    def tag(self) -> str:
        """Names the architecture in file names (centroid files), e.g. ``resnet18-layer3``."""
        return f"resnet{self.depth}-{self.cut_at}"

    def _frozen_stage_names(self) -> list[str]:
        names = list(self.stages.keys())
        if self.train_from == "all":
            return []
        if self.train_from == "none":
            return names
        return names[: names.index(self.train_from)]

    def _freeze(self) -> None:
        frozen = set(self._frozen_stage_names())
        for name, stage in self.stages.items():
            for p in stage.parameters():
                p.requires_grad_(name not in frozen)

    def train(self, mode: bool = True) -> ResNetBackbone:
        super().train(mode)
        if mode:
            for name in self._frozen_stage_names():
                for m in self.stages[name].modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) ImageNet-normalised -> (B, out_channels, H/stride, W/stride)."""
        for stage in self.stages.values():
            x = stage(x)
        return x


def build_backbone(
    name: str,
    pretrained: bool = True,
    train_from: str | int | None = None,
    cut_at: str = "layer3",
    weights_version: str = "IMAGENET1K_V1",
    weights_path: str | os.PathLike | None = None,
) -> nn.Module:
    """Build a backbone by name: ``vgg16``, ``resnet18`` or ``resnet50``.

    Args:
        name: backbone name.
        pretrained: load ImageNet weights (RuntimeError with instructions when they cannot be fetched).
        train_from: first block that trains (see the classes); None picks the default: ``conv5`` for vgg16
            (the NetVLAD baseline), ``cut_at`` for the ResNets (only the last kept stage trains).
        cut_at: ResNets only: ``layer3`` or ``layer4``.
        weights_version: ResNets only: torchvision weights name.
        weights_path: the pretrained weights from a local file (a machine without internet), instead of
            torchvision's download.
    """
    key = name.lower()
    if key == "vgg16":
        return VGG16Backbone(
            pretrained=pretrained, train_from="conv5" if train_from is None else train_from, weights_path=weights_path
        )
    if key in ("resnet18", "resnet50"):
        return ResNetBackbone(
            depth=int(key[len("resnet") :]),
            pretrained=pretrained,
            cut_at=cut_at,
            train_from=cut_at if train_from is None else train_from,
            weights_version=weights_version,
            weights_path=weights_path,
        )
    raise ValueError(f"Unknown backbone name={name!r}; choose one of 'vgg16', 'resnet18', 'resnet50'.")
