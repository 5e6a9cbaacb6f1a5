"""Semantic guidance for de-attention: per-image targets on the feature grid (1 = keep, 0 = suppress).

A label source gives a per-pixel class map for a training image; the classes of the suppressed groups
(``person``, ``vehicle``, ``sky``) become 0, everything else 1, and the map is reduced to the feature grid by
AREA averaging (the paper's code resized with bicubic interpolation, which overshoots outside [0, 1] and blurs small
objects away). Targets are computed once per image, kept in memory, and cached on disk; never per step.

Sources (config group ``guidance``):
- ``synthetic``: the ``*_labels.png`` maps the synthetic city writes next to every image (``classes.json``).
- ``mask_dir``: label maps precomputed by any model, e.g. the paper's DeepLabV3+ on Cityscapes, stored under
  ``mask_dir`` with the image's relative path and a ``.png`` suffix; ``class_groups`` maps group names to label
  ids (default: Cityscapes train ids: person 11, rider 12; car..bicycle 13-18; sky 10).
- ``torchvision``: a torchvision segmentation network (DeepLabV3-MobileNetV3, Pascal VOC classes) run once per
  image; its weights are downloaded on first use (a clear error offline). VOC has no sky class.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vpr.errors import DataError
from vpr.io import atomic_path
from vpr.progress import progress

log = logging.getLogger(__name__)

CITYSCAPES_GROUPS: dict[str, list[int]] = {"person": [11, 12], "vehicle": [13, 14, 15, 16, 17, 18], "sky": [10]}
VOC_GROUPS: dict[str, list[int]] = {"person": [15], "vehicle": [2, 6, 7, 14, 19]}  # bicycle bus car motorbike train
SYNTHETIC_GROUPS: dict[str, list[str]] = {"person": ["person"], "vehicle": ["vehicle"], "sky": ["sky"]}


def area_target(labels: np.ndarray, suppressed_ids: Sequence[int], grid: tuple[int, int]) -> np.ndarray:
    """labels: (H, W) class ids -> (h, w) float32 fraction of each grid cell's pixels NOT suppressed."""
    keep = torch.from_numpy(~np.isin(labels, np.asarray(list(suppressed_ids)))).float()[None, None]
    return F.adaptive_avg_pool2d(keep, grid)[0, 0].numpy().astype(np.float32)


class LabelSource:
    """Per-pixel class ids of a training image and the ids of each suppressible group."""

    name = "base"

    def group_ids(self, group: str) -> list[int]:
        raise NotImplementedError

    def labels(self, image_path: Path) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class SyntheticLabels(LabelSource):
    """The synthetic city's ``<stem>_labels.png`` next to each image; names from ``<root>/classes.json``."""

    def describe(self) -> str:
        return "the synthetic city's label maps"

    name = "synthetic"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "classes.json"
        if not path.is_file():
            raise DataError(
                f"{path} not found: guidance=synthetic needs a synthetic city (data=synthetic); for other data use "
                "guidance=mask_dir or guidance=torchvision"
            )
        self.classes = {name: int(i) for i, name in json.loads(path.read_text()).items()}

    def group_ids(self, group: str) -> list[int]:
        if group not in SYNTHETIC_GROUPS:
            raise DataError(f"guidance.suppress: unknown group {group!r}; choose from {sorted(SYNTHETIC_GROUPS)}")
        return [self.classes[n] for n in SYNTHETIC_GROUPS[group] if n in self.classes]

    def labels(self, image_path: Path) -> np.ndarray:
        path = image_path.with_name(image_path.stem + "_labels.png")
        if not path.is_file():
            raise DataError(f"label map {path} missing (guidance=synthetic); regenerate the city with --force")
        return np.asarray(Image.open(path))


class MaskDirLabels(LabelSource):
    """Label maps precomputed by any model under ``mask_dir/<image path relative to data root>.png``."""

    def describe(self) -> str:
        return "label maps under guidance.mask_dir"

    name = "mask_dir"

    def __init__(self, mask_dir: str | Path, data_root: str | Path, class_groups: Mapping[str, Sequence[int]] | None):
        self.mask_dir = Path(mask_dir) if mask_dir else None
        if self.mask_dir is None or not self.mask_dir.is_dir():
            raise DataError(
                f"guidance.mask_dir={mask_dir} is not a folder: point it at the label maps (one PNG of class ids per "
                "training image, same relative path as the image, suffix .png)"
            )
        self.data_root = Path(data_root)
        self.groups = {k: [int(i) for i in v] for k, v in (class_groups or CITYSCAPES_GROUPS).items()}

    def group_ids(self, group: str) -> list[int]:
        if group not in self.groups:
            raise DataError(f"guidance.suppress: group {group!r} not in guidance.class_groups {sorted(self.groups)}")
        return self.groups[group]

    def labels(self, image_path: Path) -> np.ndarray:
        rel = image_path.relative_to(self.data_root)
        path = (self.mask_dir / rel).with_suffix(".png")
        if not path.is_file():
            raise DataError(f"label map {path} for {image_path} missing under guidance.mask_dir={self.mask_dir}")
        return np.asarray(Image.open(path))


class TorchvisionLabels(LabelSource):
    """DeepLabV3-MobileNetV3-Large (Pascal VOC classes) from torchvision, run once per image."""

    def describe(self) -> str:
        return "torchvision's DeepLabV3-MobileNetV3 (Pascal VOC classes)"

    name = "torchvision"

    def __init__(self, device: str = "cpu"):
        from torchvision.models.segmentation import (
            DeepLabV3_MobileNet_V3_Large_Weights,
            deeplabv3_mobilenet_v3_large,
        )

        weights = DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
        try:
            self.model = deeplabv3_mobilenet_v3_large(weights=weights).eval().to(device)
        except Exception as e:
            raise DataError(
                f"guidance=torchvision: the segmentation weights {weights} could not be loaded ({type(e).__name__}: "
                f"{e}). They download on first use into {torch.hub.get_dir()}/checkpoints; offline, copy "
                f"{weights.url} there, or precompute label maps and use guidance=mask_dir"
            ) from None
        self.transform = weights.transforms()
        self.device = device

    def group_ids(self, group: str) -> list[int]:
        if group not in VOC_GROUPS:
            raise DataError(
                f"guidance=torchvision (Pascal VOC classes) cannot suppress {group!r}: it knows {sorted(VOC_GROUPS)}. "
                "For sky use guidance=mask_dir with Cityscapes label maps"
            )
        return VOC_GROUPS[group]

    @torch.no_grad()
    def labels(self, image_path: Path) -> np.ndarray:
        image = Image.open(image_path).convert("RGB")
        x = self.transform(image)[None].to(self.device)
        out = self.model(x)["out"]
        out = F.interpolate(out, size=image.size[::-1], mode="bilinear", align_corners=False)
        return out.argmax(1)[0].cpu().numpy().astype(np.uint8)


class GuidanceTargets:
    """Targets of a list of images on the feature grid: computed once, cached in memory and on disk.

    Args:
        source: the label source.
        suppress: group names whose pixels get target 0.
        paths: the images, in the order targets are indexed.
        grid: (h, w) of the feature map the mask lives on.
        cache_dir: folder for the ``.npy`` cache (None: memory only).
    """

    def __init__(
        self,
        source: LabelSource,
        suppress: Sequence[str],
        paths: Sequence[Path],
        grid: tuple[int, int],
        cache_dir: str | Path | None = None,
    ):
        self.source = source
        self.suppress = list(suppress)
        self.suppressed_ids = sorted({i for g in self.suppress for i in source.group_ids(g)})
        self.paths = list(paths)
        self.grid = (int(grid[0]), int(grid[1]))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.table = self._load_or_compute()

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = json.dumps([self.source.name, self.suppressed_ids, self.grid, [str(p) for p in self.paths]])
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.cache_dir / f"guidance_{self.source.name}_{self.grid[0]}x{self.grid[1]}_{digest}.npy"

    def _load_or_compute(self) -> torch.Tensor:
        cache = self._cache_file()
        if cache is not None and cache.is_file():
            table = np.load(cache)
            if table.shape == (len(self.paths), *self.grid):
                return torch.from_numpy(table)
        table = np.empty((len(self.paths), *self.grid), dtype=np.float32)
        for i, p in enumerate(progress(self.paths, desc="guidance targets", leave=False)):
            table[i] = area_target(self.source.labels(p), self.suppressed_ids, self.grid)
        if cache is not None:
            with atomic_path(cache, suffix=".npy") as tmp:
                np.save(tmp, table)
        log.info(
            "guidance targets: %d images on a %dx%d grid, suppressing %s (mean kept fraction %.3f)",
            len(self.paths), *self.grid, self.suppress, float(table.mean()),
        )
        return torch.from_numpy(table)

    def __getitem__(self, index: int) -> torch.Tensor:
        """(1, h, w) target of image ``index``."""
        return self.table[index][None]


def build_label_source(kind: str, data_root: str | Path, mask_dir: str | None = None,
                       class_groups: Mapping[str, Sequence[int]] | None = None) -> LabelSource:
    if kind == "auto":  # the city's own labels, else mask_dir's, else torchvision's model
        if (Path(str(data_root)) / "classes.json").is_file():
            kind = "synthetic"
        else:
            kind = "mask_dir" if mask_dir else "torchvision"
    if kind == "synthetic":
        return SyntheticLabels(data_root)
    if kind == "mask_dir":
        return MaskDirLabels(mask_dir, data_root, class_groups)
    if kind == "torchvision":
        return TorchvisionLabels("cuda" if torch.cuda.is_available() else "cpu")
    raise DataError(f"guidance.source={kind!r}: choose auto, synthetic, mask_dir or torchvision")
