"""DeepLabV3+ with a MobileNetV2 encoder: the Cityscapes segmentation network the paper used to guide de-attention.

The paper ran a frozen DeepLabV3+ (MobileNetV2, output stride 16, the 19 Cityscapes train ids) on its normalised
training images, took the arg-max class of every pixel and marked the person / rider and vehicle classes as the
regions de-attention should suppress. Its weights come as ``best_deeplabv3plus_mobilenet_cityscapes_os16.pth``: a
dict whose ``model_state`` holds the state dict (next to ``optimizer_state``, ``scheduler_state``, ``cur_itrs`` and
``best_score``). :class:`DeepLabV3PlusMobileNetV2` has exactly that file's parameter and buffer names and shapes, and
computes the same function, so :func:`load_deeplab_cityscapes` loads the file as it is.

Layout (names as in the state dict):

- ``backbone.low_level_features.0-3``: the MobileNetV2 stem (3x3 convolution, stride 2, *no* padding) and inverted
  residual blocks 1-3; their output (24 channels, stride 4) is the decoder's low-level feature.
- ``backbone.high_level_features.4-17``: inverted residual blocks 4-17 (320 channels). MobileNetV2's last 1x1
  convolution (1280 channels) and its ImageNet classifier are not part of the network. At output stride 16 the last
  stride-2 stage (160 channels, block 14) keeps stride 1; blocks 15-17 then use dilation 2. At output stride 8 the
  64-channel stage stops striding too: dilation 2 from block 8, 4 from block 15.
- Each inverted residual block zero-pads its *input* by its dilation before the 1x1 expansion (so the padded border
  goes through expansion, batch norm and ReLU6), then runs the depthwise 3x3 convolution without padding.
- ``classifier.aspp``: atrous spatial pyramid pooling on the 320-channel map: a 1x1 branch, three 3x3 branches with
  dilation 6, 12, 18 (12, 24, 36 at output stride 8), an image-pooling branch (global average, 1x1, batch norm,
  ReLU, spread back bilinearly), then a 1x1 projection of the 1280 concatenated channels to 256 with dropout 0.1.
- ``classifier.project``: 1x1 convolution of the low-level feature to 48 channels.
- ``classifier.classifier``: 3x3 convolution of [48 low-level, 256 upsampled ASPP] = 304 channels to 256, then a 1x1
  convolution to the classes. That last convolution is the only one with a bias; every other convolution is
  followed by batch norm and has none.

Upsampling (ASPP output to the low-level grid, logits to the input size) is bilinear with ``align_corners=False``.
Inputs are RGB in [0, 1] normalised with :data:`CITYSCAPES_MEAN` / :data:`CITYSCAPES_STD`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vpr.errors import ConfigError
from vpr.io import read_weights_only

#: The normalisation the segmentation network was trained and run with: ImageNet mean / std on RGB in [0, 1]
#: (the segmentation code's Normalize transforms, and the paper's image transform, whose output it fed unchanged).
CITYSCAPES_MEAN = (0.485, 0.456, 0.406)
CITYSCAPES_STD = (0.229, 0.224, 0.225)

#: The file the paper's semantic-guidance weights come in.
WEIGHTS_FILE = "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"

#: MobileNetV2's inverted residual stages: (expansion, out channels, blocks, first block's stride).
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

#: How many of the backbone's modules (stem + blocks) produce the low-level feature.
LOW_LEVEL_MODULES = 4

#: The three atrous rates of ASPP for each output stride.
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


def block_plan(output_stride: int) -> list[tuple[int, int, int, int, int]]:
    """(in channels, out channels, expansion, stride, dilation) of each inverted residual block.

    Striding stops once the feature map is ``output_stride`` times smaller than the input (the stem has halved
    it); a stage that would stride again multiplies the dilation by its stride instead. A stage's first block
    still uses the dilation the previous stage ended with, its other blocks the new one.
    """
    plan = []
    reached, dilation, channels = 2, 1, 32
    for expansion, out_channels, count, stride in MOBILENET_V2_STAGES:
        entry_dilation = dilation
        if reached == output_stride:
            dilation *= stride
            stride = 1
        else:
            reached *= stride
        for i in range(count):
            plan.append(
                (channels, out_channels, expansion, stride if i == 0 else 1, entry_dilation if i == 0 else dilation)
            )
            channels = out_channels
    return plan


class ConvNormAct(nn.Sequential):
    """Convolution without bias (index 0), batch norm (1), activation (2); no padding unless given."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        act: type[nn.Module] = nn.ReLU6,
    ):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            act(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expansion], depthwise 3x3 (stride, dilation), linear 1x1 projection, residual when
    shapes allow. The input is zero-padded by ``dilation`` on every side before the first convolution."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int, dilation: int):
        super().__init__()
        hidden = int(round(cin * expansion))
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvNormAct(cin, hidden, 1))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.pad = dilation
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.pad(x, (self.pad,) * 4))
        return x + y if self.residual else y


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 without its final 1x1 convolution: (low-level feature at stride 4, 320-channel feature)."""

    def __init__(self, output_stride: int = 16):
        super().__init__()
        modules: list[nn.Module] = [ConvNormAct(3, 32, 3, stride=2)]
        modules += [InvertedResidual(*spec) for spec in block_plan(output_stride)]
        numbered = [(str(i), m) for i, m in enumerate(modules)]
        # The checkpoint numbers the blocks as one sequence split in two: 0-3 low level, 4-17 high level.
        self.low_level_features = nn.Sequential(OrderedDict(numbered[:LOW_LEVEL_MODULES]))
        self.high_level_features = nn.Sequential(OrderedDict(numbered[LOW_LEVEL_MODULES:]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.low_level_features(x)
        return low, self.high_level_features(low)


class ImagePooling(nn.Sequential):
    """ASPP's image-level branch: global average (0), 1x1 conv (1), batch norm (2), ReLU (3), spread back."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """1x1 branch, three dilated 3x3 branches, image pooling; concatenated and projected to ``width`` channels."""

    def __init__(self, cin: int, rates: Iterable[int], width: int = 256):
        super().__init__()
        branches: list[nn.Module] = [ConvNormAct(cin, width, 1, act=nn.ReLU)]
        branches += [ConvNormAct(cin, width, 3, padding=r, dilation=r, act=nn.ReLU) for r in rates]
        branches.append(ImagePooling(cin, width))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * width, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on the deep feature, upsampled onto the low-level grid, joined with the projected low-level feature."""

    def __init__(self, high_channels: int, low_channels: int, num_classes: int, rates: Iterable[int]):
        super().__init__()
        self.project = ConvNormAct(low_channels, 48, 1, act=nn.ReLU)
        self.aspp = ASPP(high_channels, rates)
        self.classifier = nn.Sequential(
            nn.Conv2d(48 + 256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, num_classes, 1),
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        low = self.project(low)
        context = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, context], dim=1))


class DeepLabV3PlusMobileNetV2(nn.Module):
    """DeepLabV3+ on MobileNetV2; ``forward`` maps a normalised (B, 3, H, W) batch to (B, num_classes, H, W) logits."""

    def __init__(self, num_classes: int = 19, output_stride: int = 16):
        super().__init__()
        if output_stride not in ASPP_RATES:
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}")
        self.output_stride = output_stride
        self.backbone = MobileNetV2Encoder(output_stride)
        self.classifier = DeepLabV3PlusDecoder(320, 24, num_classes, ASPP_RATES[output_stride])
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(*self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _few(keys: Iterable[str], limit: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_deeplab_cityscapes(
    path: str | Path, num_classes: int = 19, output_stride: int = 16
) -> DeepLabV3PlusMobileNetV2:
    """The network with the weights of ``path`` (a dict with ``model_state``, or a bare state dict; DataParallel's
    ``module.`` prefixes are stripped), in eval mode. Every problem is a :class:`ConfigError` naming
    ``guidance.weights=<path>`` and the fix."""
    where = f"guidance.weights={path}"
    fix = (
        f"download the paper's weight_semantic_guidance archive and give the path of {WEIGHTS_FILE} "
        f"(DeepLabV3+ MobileNetV2, Cityscapes, {num_classes} classes, output stride {output_stride})"
    )
    if not Path(path).is_file():
        raise ConfigError(f"{where}: no such file; {fix}")
    loaded = read_weights_only(path, where, "torch file", f" {fix[0].upper() + fix[1:]}.")

    state = loaded.get("model_state", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"{where} holds no state dict (neither a 'model_state' entry nor tensors by name); {fix}")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}

    model = DeepLabV3PlusMobileNetV2(num_classes, output_stride)
    expected = model.state_dict()
    # Batch-norm step counters play no part in eval mode; files written before they existed lack them.
    missing = {k for k in expected.keys() - state.keys() if not k.endswith(".num_batches_tracked")}
    unexpected = state.keys() - expected.keys()
    wrong = {k for k in state.keys() & expected.keys() if tuple(state[k].shape) != tuple(expected[k].shape)}
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing ({_few(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
        if wrong:
            shapes = [f"{k} {tuple(state[k].shape)} instead of {tuple(expected[k].shape)}" for k in sorted(wrong)]
            problems.append(f"{len(wrong)} of the wrong shape ({_few(shapes, 3)})")
        raise ConfigError(
            f"{where} is not the weights of this DeepLabV3+ MobileNetV2 network: keys "
            + "; ".join(problems)
            + f"; {fix}"
        )
    model.load_state_dict({**expected, **state})
    return model.eval()
