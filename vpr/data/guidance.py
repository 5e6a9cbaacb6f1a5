"""Semantic guidance for de-attention: per-image targets on the feature grid (1 = keep, 0 = suppress).

A label source gives a per-pixel class map for a training image; the classes of the suppressed groups
(``person``, ``vehicle``, ``sky``) become 0, everything else 1, and the map is reduced to the feature grid by
AREA averaging (the paper's code resized with bicubic interpolation, which overshoots outside [0, 1] and blurs small
objects away). Targets are computed once per image, kept in memory, and cached on disk; never per step. They are
computed by a DataLoader: its workers read the label maps (or decode and normalise the images for a network, which
runs in the main process on batches of images of one size, on the GPU when there is one); under DDP every rank
computes every world_size-th image and the ranks add up their tables.

Sources (config group ``guidance``):
- ``synthetic``: the ``*_labels.png`` maps the synthetic city writes next to every image (``classes.json``).
- ``mask_dir``: label maps precomputed by any model, e.g. the paper's DeepLabV3+ on Cityscapes, stored under
  ``mask_dir`` with the image's relative path and a ``.png`` suffix; ``class_groups`` maps group names to label
  ids (default: Cityscapes train ids: person 11, rider 12; car..bicycle 13-18; sky 10).
- ``torchvision``: a torchvision segmentation network (DeepLabV3-MobileNetV3, Pascal VOC classes) run once per
  image; its weights are downloaded on first use (a clear error offline). VOC has no sky class.
- ``deeplab_cityscapes``: the paper's own guidance network, DeepLabV3+ MobileNetV2 trained on Cityscapes (19 train
  ids, sky included), from its released weight file ``guidance.weights`` (:mod:`vpr.models.deeplab`).
- ``torchscript``: any segmentation network exported to TorchScript (``guidance.model``; a ``.pt2`` file of
  ``torch.export`` also works), with ``class_groups`` naming the label ids of each group. Such a file is a program:
  load only files you trust.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vpr.data.dataset import load_image
from vpr.devices import loader_worker_init, work_device
from vpr.errors import DataError
from vpr.io import atomic_path, path_under
from vpr.progress import progress

log = logging.getLogger(__name__)

CITYSCAPES_GROUPS: dict[str, list[int]] = {"person": [11, 12], "vehicle": [13, 14, 15, 16, 17, 18], "sky": [10]}
VOC_GROUPS: dict[str, list[int]] = {"person": [15], "vehicle": [2, 6, 7, 14, 19]}  # bicycle bus car motorbike train
SYNTHETIC_GROUPS: dict[str, list[str]] = {"person": ["person"], "vehicle": ["vehicle"], "sky": ["sky"]}
NETWORK_BATCH = 8  # images per call of a segmentation network (its upsampled scores: 8 x 19 x 480 x 640 floats, 190 MB)


def area_target(labels: np.ndarray, suppressed_ids: Sequence[int], grid: tuple[int, int]) -> np.ndarray:
    """labels: (H, W) class ids -> (h, w) float32 fraction of each grid cell's pixels NOT suppressed."""
    keep = torch.from_numpy(~np.isin(labels, np.asarray(list(suppressed_ids)))).float()[None, None]
    return F.adaptive_avg_pool2d(keep, grid)[0, 0].numpy().astype(np.float32)


def _same_aspect(a: tuple[int, int], b: tuple[int, int], tolerance: float = 0.25) -> bool:
    """Whether (h, w) sizes ``a`` and ``b`` have about the same aspect (a label map at another resolution, a
    network's output at its stride), not a transposed or cropped one."""
    ra, rb = a[0] / max(a[1], 1), b[0] / max(b[1], 1)
    return abs(ra - rb) <= tolerance * rb


def read_label_map(path: Path, image_path: Path, setting: str, fix: str = "write it again") -> np.ndarray:
    """A PNG of class ids, one channel, with its image's aspect (any resolution): an RGB (colour-coded) map, one
    transposed or cropped against its image, or a file cut short (a copy interrupted) or not an image is one error
    naming the file (``fix``: how to get it back)."""
    try:
        with Image.open(path) as im:
            labels = np.asarray(im)
    except (OSError, SyntaxError) as e:  # PIL's "image file is truncated", UnidentifiedImageError, "broken PNG file"
        raise DataError(f"label map {path} ({setting}) is corrupt or not an image ({e}): {fix}") from None
    if labels.ndim != 2:
        raise DataError(
            f"label map {path} ({setting}) has {labels.shape[-1]} channels: it must hold one class id per pixel "
            "(a single-channel or palette PNG), not colours"
        )
    try:
        with Image.open(image_path) as im:
            size = (im.height, im.width)
    except OSError:  # the image itself is checked where it is read
        return labels
    if not _same_aspect(labels.shape, size, tolerance=0.02):
        raise DataError(
            f"label map {path} ({setting}) is {labels.shape[0]}x{labels.shape[1]} (h x w) for the "
            f"{size[0]}x{size[1]} image {image_path}: a label map must cover its image (any resolution, the same "
            "aspect); transposed or cropped?"
        )
    return labels


class LabelSource:
    """Per-pixel class ids of a training image and the ids of each suppressible group."""

    name = "base"
    network = False  # True: a segmentation network, run in the main process on batches (NetworkLabels)

    def cache_key(self) -> str:
        """What distinguishes this source's targets in the disk cache (the weights file for a network)."""
        return self.name

    def fingerprint(self, image_paths: Sequence[Path]) -> str:
        """What the labels of these images are read from, as far as the disk cache must tell it apart (the label
        files' sizes and times for sources that read files; nothing for a network, whose key names its weights)."""
        return ""

    def group_ids(self, group: str) -> list[int]:
        raise NotImplementedError

    def labels(self, image_path: Path) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class GroupedLabels(LabelSource):
    """A label source whose groups are given as class ids (``guidance.class_groups``)."""

    groups: dict[str, list[int]]

    def set_groups(self, class_groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {k: [int(i) for i in v] for k, v in class_groups.items()}

    def group_ids(self, group: str) -> list[int]:
        if group not in self.groups:
            raise DataError(f"guidance.suppress: group {group!r} not in guidance.class_groups {sorted(self.groups)}")
        return self.groups[group]


def _files_identity(paths: Sequence[Path]) -> str:
    """A digest of the size and modification time of every file (a missing one counts as missing)."""
    digest = hashlib.sha1()
    for path in paths:
        try:
            st = path.stat()
            digest.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            digest.update(b"missing;")
    return digest.hexdigest()


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
        try:
            self.classes = {str(name): int(i) for i, name in json.loads(path.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError) as e:  # cut short (a copy interrupted), not a mapping
            raise DataError(
                f'{path} is not the synthetic city\'s class list ({{"<id>": "<class>", ...}}: {e}): the city is '
                f"damaged; delete {self.root} and the next run generates it again (or python -m vpr.data.synthetic "
                "--out ... --force)"
            ) from None

    def group_ids(self, group: str) -> list[int]:
        if group not in SYNTHETIC_GROUPS:
            raise DataError(f"guidance.suppress: unknown group {group!r}; choose from {sorted(SYNTHETIC_GROUPS)}")
        return [self.classes[n] for n in SYNTHETIC_GROUPS[group] if n in self.classes]

    def cache_key(self) -> str:
        return f"{self.name}:{self.root.resolve()}"

    def fingerprint(self, image_paths: Sequence[Path]) -> str:
        return _files_identity([self.root / "classes.json", *(self.label_file(p) for p in image_paths)])

    @staticmethod
    def label_file(image_path: Path) -> Path:
        return image_path.with_name(image_path.stem + "_labels.png")

    def labels(self, image_path: Path) -> np.ndarray:
        path = self.label_file(image_path)
        if not path.is_file():
            raise DataError(f"label map {path} missing (guidance=synthetic); regenerate the city with --force")
        return read_label_map(
            path,
            image_path,
            "guidance=synthetic",
            f"the city is damaged; delete {self.root} and the next run generates it again (or python -m "
            "vpr.data.synthetic --out ... --force)",
        )


class MaskDirLabels(GroupedLabels):
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
        self.data_root = Path(os.path.abspath(Path(data_root).expanduser()))
        self.set_groups(class_groups or CITYSCAPES_GROUPS)

    def cache_key(self) -> str:
        return f"{self.name}:{self.mask_dir.resolve()}"

    def fingerprint(self, image_paths: Sequence[Path]) -> str:
        return _files_identity([self.label_file(p) for p in image_paths])

    def label_file(self, image_path: Path) -> Path:
        """``<mask_dir>/<the image's path relative to data.root>.png``. Both paths are made absolute first (an
        absolute ``data.db_dir`` names the same files as a relative one), and resolved when that is not enough
        (a data.root reached through a link); an image folder linked into data.root keeps its path there."""
        relative = path_under(image_path, self.data_root)
        if relative is None:
            raise DataError(
                f"guidance=mask_dir: image {image_path} is not under data.root={self.data_root}, so it has no path "
                "under guidance.mask_dir (label maps mirror the images' paths relative to data.root)"
            )
        return (self.mask_dir / relative).with_suffix(".png")

    def labels(self, image_path: Path) -> np.ndarray:
        path = self.label_file(image_path)
        if not path.is_file():
            raise DataError(f"label map {path} for {image_path} missing under guidance.mask_dir={self.mask_dir}")
        return read_label_map(path, image_path, "guidance.mask_dir")


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


class _NormalisedRGB:
    """A network's input read in a loader worker: the image's RGB in [0, 1] normalised by ``mean`` / ``std``
    (3, H, W), and the size its class map must have (the image's own)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], name: str):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.name = name

    def __call__(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        image = _read_rgb(path, self.name)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean) / self.std, (image.height, image.width)


def _read_rgb(path: Path, name: str) -> Image.Image:
    """The image as training reads it (upright by its EXIF orientation, 16-bit scaled): its targets must match."""
    try:
        return load_image(path)
    except DataError as e:
        raise DataError(f"guidance.source={name}: {e}") from None


class NetworkLabels(GroupedLabels):
    """A segmentation network: the arg-max class of every pixel, at the image's own size. Loader workers read and
    normalise the images (:meth:`input_reader`); the network runs in the main process on ``device``, on batches of
    images of one size (:meth:`class_maps`)."""

    network = True
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __init__(self, device: str | torch.device):
        self.device = device
        self._one_at_a_time = False  # set when the network refused a batch of several images

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def input_reader(self) -> Callable[[Path], tuple[torch.Tensor, tuple[int, int]]]:
        """What a loader worker does with one image path: (network input (3, h, w), class map size (H, W)). It
        holds no network, so it is cheap to send to worker processes."""
        return _NormalisedRGB(self.mean, self.std, self.name)

    def fingerprint(self, image_paths: Sequence[Path]) -> str:
        """The images' sizes and times: an image rewritten in place gets its targets computed again."""
        return _files_identity(image_paths)

    @torch.no_grad()
    def class_maps(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Inputs (B, 3, h, w) of one size -> (B, H, W) class ids on the network's device. A network that takes
        one image at a time (e.g. a torch.export program made for a batch of 1) is then given one at a time."""
        if len(x) > 1 and not self._one_at_a_time:
            try:
                scores = self.logits(x.to(self.device))
            except DataError:
                raise
            except Exception as e:
                self._one_at_a_time = True
                log.warning(
                    "guidance.source=%s: the network refused a batch of %d images (%s: %s); giving it one image "
                    "at a time",
                    self.name,
                    len(x),
                    type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "",
                )
            else:
                return self._argmax(scores, len(x), size)
        return torch.cat([self._argmax(self.logits(x[i : i + 1].to(self.device)), 1, size) for i in range(len(x))])

    def _argmax(self, scores: torch.Tensor, n: int, size: tuple[int, int]) -> torch.Tensor:
        if not torch.is_tensor(scores) or scores.ndim != 4 or scores.shape[0] != n:
            shape = tuple(scores.shape) if torch.is_tensor(scores) else type(scores).__name__
            raise DataError(
                f"guidance.source={self.name}: the network returned shape {shape} for {n} image(s); expected "
                f"class scores ({n}, classes, h, w)"
            )
        if not _same_aspect(tuple(scores.shape[-2:]), tuple(size)):
            raise DataError(
                f"guidance.source={self.name}: the network returned class scores of shape {tuple(scores.shape)} for "
                f"{n} image(s) of {size[0]}x{size[1]} pixels: the last two dimensions must be the image's rows and "
                "columns (at its resolution or a stride of it), as (batch, classes, h, w); channels last?"
            )
        named = max((i for ids in getattr(self, "groups", {}).values() for i in ids), default=-1)
        if named >= scores.shape[1]:
            raise DataError(
                f"guidance.source={self.name}: the network scores {scores.shape[1]} classes, but guidance.class_groups "
                f"names class id {named}: set class_groups to the network's own label ids"
            )
        if tuple(scores.shape[-2:]) != tuple(size):
            scores = F.interpolate(scores.float(), size=tuple(size), mode="bilinear", align_corners=False)
        return scores.argmax(1)

    def labels(self, image_path: Path) -> np.ndarray:
        x, size = self.input_reader()(image_path)
        return self.class_maps(x[None], size)[0].to(torch.int32).cpu().numpy()


class DeepLabCityscapesLabels(NetworkLabels):
    """The paper's guidance network: DeepLabV3+ MobileNetV2 (output stride 16) on the 19 Cityscapes train ids, from
    its released weights (``guidance.weights``; see :func:`vpr.models.deeplab.load_deeplab_cityscapes`)."""

    name = "deeplab_cityscapes"

    def __init__(
        self, weights: str | Path | None, class_groups: Mapping[str, Sequence[int]] | None = None, device: str = "cpu"
    ):
        from vpr.models.deeplab import CITYSCAPES_MEAN, CITYSCAPES_STD, WEIGHTS_FILE, load_deeplab_cityscapes

        super().__init__(device)
        if not weights:
            raise DataError(
                f"guidance=deeplab_cityscapes needs guidance.weights=PATH: the paper's {WEIGHTS_FILE} "
                "(from its weight_semantic_guidance archive)"
            )
        self.weights = Path(str(weights)).expanduser()
        self.model = load_deeplab_cityscapes(self.weights).to(device)
        self.mean, self.std = CITYSCAPES_MEAN, CITYSCAPES_STD
        self.set_groups(class_groups or CITYSCAPES_GROUPS)

    def describe(self) -> str:
        return f"DeepLabV3+ MobileNetV2 on Cityscapes ({self.weights})"

    def cache_key(self) -> str:
        return f"{self.name}:{_file_identity(self.weights)}"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class TorchScriptLabels(NetworkLabels):
    """Any segmentation network exported with ``torch.jit.save`` (``guidance.model``): called on a normalised
    (1, 3, H, W) batch, it returns class scores (1, classes, h, w) (or a dict holding them under ``out``);
    ``class_groups`` names the class ids of every group."""

    name = "torchscript"

    def __init__(
        self,
        model: str | Path | None,
        class_groups: Mapping[str, Sequence[int]] | None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str = "cpu",
    ):
        super().__init__(device)
        if not model:
            raise DataError(
                "guidance=torchscript needs guidance.model=PATH: a segmentation network saved with torch.jit.save"
            )
        self.path = Path(str(model)).expanduser()
        if not self.path.is_file():
            raise DataError(
                f"guidance.model={self.path}: no such file (a segmentation network saved with torch.jit.save)"
            )
        try:
            if self.path.suffix == ".pt2":  # a torch.export program
                self.model = torch.export.load(str(self.path)).module().to(device)  # saved on any device
            else:
                with warnings.catch_warnings():  # TorchScript is deprecated for export, loading still works
                    warnings.simplefilter("ignore", FutureWarning)
                    self.model = torch.jit.load(str(self.path), map_location=device).eval()
        except Exception as e:
            raise DataError(
                f"guidance.model={self.path} is not a TorchScript (or torch.export .pt2) file "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); export the network with "
                "torch.jit.save"
            ) from None
        if not class_groups:
            raise DataError(
                "guidance=torchscript needs guidance.class_groups: the class ids of each group, e.g. "
                "{person: [11, 12], vehicle: [13, 14, 15, 16, 17, 18], sky: [10]}"
            )
        self.set_groups(class_groups)
        if mean is not None:
            self.mean = tuple(float(v) for v in mean)
        if std is not None:
            self.std = tuple(float(v) for v in std)

    def describe(self) -> str:
        return f"the TorchScript network {self.path}"

    def cache_key(self) -> str:
        return f"{self.name}:{_file_identity(self.path)}:{self.mean}:{self.std}"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, dict):
            if "out" not in out:
                raise DataError(f"guidance.model={self.path} returned a dict without 'out' (keys {sorted(out)})")
            out = out["out"]
        if not torch.is_tensor(out):
            raise DataError(f"guidance.model={self.path} returned {type(out).__name__}, not a tensor of class scores")
        return out


class TorchvisionLabels(NetworkLabels):
    """DeepLabV3-MobileNetV3-Large (Pascal VOC classes) from torchvision, run once per image."""

    def describe(self) -> str:
        return "torchvision's DeepLabV3-MobileNetV3 (Pascal VOC classes)"

    name = "torchvision"

    def __init__(self, device: str = "cpu", download: bool = True):
        from torchvision.models.segmentation import (
            DeepLabV3_MobileNet_V3_Large_Weights,
            deeplabv3_mobilenet_v3_large,
        )

        weights = DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not download and not cached.is_file():
            raise DataError(
                f"guidance=torchvision: its segmentation weights are not in {cached.parent} (not downloaded "
                "for pictures)"
            )
        try:
            self.model = deeplabv3_mobilenet_v3_large(weights=weights).eval().to(device)
        except Exception as e:
            raise DataError(
                f"guidance=torchvision: the segmentation weights {weights} could not be loaded ({type(e).__name__}: "
                f"{e}). They download on first use into {torch.hub.get_dir()}/checkpoints; offline, copy "
                f"{weights.url} there, or precompute label maps and use guidance=mask_dir"
            ) from None
        self.transform = weights.transforms()
        super().__init__(device)

    def group_ids(self, group: str) -> list[int]:
        if group not in VOC_GROUPS:
            raise DataError(
                f"guidance=torchvision (Pascal VOC classes) cannot suppress {group!r}: it knows {sorted(VOC_GROUPS)}. "
                "For sky use guidance=mask_dir with Cityscapes label maps"
            )
        return VOC_GROUPS[group]

    def input_reader(self) -> Callable[[Path], tuple[torch.Tensor, tuple[int, int]]]:
        return functools.partial(_transformed_rgb, self.transform, self.name)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _transformed_rgb(transform: Callable, name: str, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
    """torchvision's input for one image (its weights' own resize and normalisation) and the image's size."""
    image = _read_rgb(path, name)
    return transform(image), (image.height, image.width)


class _Indexed(Dataset):
    """Item k: (index ``indices[k]``, ``read(paths[k])``), the work a loader worker does for one image."""

    def __init__(self, read: Callable[[Path], object], paths: Sequence[Path], indices: Sequence[int]):
        self.read, self.paths, self.indices = read, list(paths), list(indices)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int) -> tuple[int, object]:
        return self.indices[k], self.read(self.paths[k])


def _file_target(source: LabelSource, suppressed_ids: Sequence[int], grid: tuple[int, int], path: Path) -> np.ndarray:
    return area_target(source.labels(path), suppressed_ids, grid)


def _as_list(items: list) -> list:
    return items


def _network_targets(
    source: NetworkLabels, items: list, suppressed_ids: Sequence[int], grid: tuple[int, int]
) -> Iterator[tuple[list[int], np.ndarray]]:
    """(indices, targets (n, h, w)) of a loader batch of network inputs, one network call per input size."""
    groups: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
    for index, (x, size) in items:
        groups.setdefault((tuple(x.shape), tuple(size)), []).append((index, x))
    for (_, size), members in groups.items():
        maps = source.class_maps(torch.stack([x for _, x in members]), size)
        keep = ~torch.isin(maps, torch.tensor(list(suppressed_ids), dtype=maps.dtype, device=maps.device))
        targets = F.adaptive_avg_pool2d(keep.float()[:, None], grid)[:, 0]
        yield [index for index, _ in members], targets.cpu().numpy()


def compute_targets(
    source: LabelSource,
    paths: Sequence[Path],
    suppressed_ids: Sequence[int],
    grid: tuple[int, int],
    *,
    num_workers: int = 0,
    batch_size: int = NETWORK_BATCH,
    shard: tuple[int, int] = (0, 1),
    desc: str = "guidance targets",
) -> np.ndarray:
    """(len(paths), h, w) float32: the kept fraction of every feature-grid cell of every image (:func:`area_target`).

    ``num_workers`` loader processes read the label maps (a network source: decode and normalise the images, and
    the network runs here on batches). ``shard=(rank, world)``: only the rows rank, rank + world, ... are
    computed, the others stay 0, so the tables of all ranks add up to the whole.
    """
    rank, world = shard
    grid = (int(grid[0]), int(grid[1]))
    table = np.zeros((len(paths), *grid), dtype=np.float32)
    mine = list(range(rank, len(paths), world))
    if not mine:
        return table
    network = getattr(source, "network", False)  # a duck-typed source with labels() reads label maps
    if network:
        read: Callable[[Path], object] = source.input_reader()
    else:
        read = functools.partial(_file_target, source, list(suppressed_ids), grid)
    loader = DataLoader(
        _Indexed(read, [paths[i] for i in mine], mine),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_as_list,
        worker_init_fn=loader_worker_init() if num_workers > 0 else None,
    )
    with progress(total=len(mine), desc=desc, leave=False, disable=rank != 0) as bar:
        for items in loader:
            if network:
                for indices, targets in _network_targets(source, items, suppressed_ids, grid):
                    table[indices] = targets
            else:
                for index, target in items:
                    table[index] = target
            bar.update(len(items))
    return table


class GuidanceTargets:
    """Targets of a list of images on the feature grid: computed once, cached in memory and on disk.

    Args:
        source: the label source.
        suppress: group names whose pixels get target 0.
        paths: the images, in the order targets are indexed.
        grid: (h, w) of the feature map the mask lives on.
        cache_dir: folder for the ``.npy`` cache (None: memory only).
        num_workers: loader processes that read the label maps (or the images, for a network).
        shard: (rank, world_size) under DDP: this rank computes every world_size-th image and ``combine`` adds up
            the ranks' tables (every rank must call it; rank 0 writes the cache).
        combine: ``combine(table, failure)``: the sum of the ranks' tables, where ``failure`` is the exception this
            rank's share raised (None: none); it raises on every rank when any rank failed, so that no rank waits
            for one that stopped (None: one process).
        agree: under DDP, rank 0's answer to "is the cache there?" (every rank calls it): the ranks compute or
            load as rank 0 does.
    """

    def __init__(
        self,
        source: LabelSource,
        suppress: Sequence[str],
        paths: Sequence[Path],
        grid: tuple[int, int],
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        shard: tuple[int, int] = (0, 1),
        combine: Callable[[np.ndarray, BaseException | None], np.ndarray] | None = None,
        agree: Callable[[bool], bool] | None = None,
    ):
        if shard[1] > 1 and combine is None:
            raise ValueError("GuidanceTargets: shard=(rank, world) needs combine, the sum over the ranks")
        self.source = source
        self.suppress = list(suppress)
        self.suppressed_ids = sorted({i for g in self.suppress for i in source.group_ids(g)})
        self.paths = list(paths)
        self.grid = (int(grid[0]), int(grid[1]))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.num_workers = int(num_workers)
        self.shard = (int(shard[0]), int(shard[1]))
        self.combine = combine
        self.agree = agree
        self.table = self._load_or_compute()

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = json.dumps(
            [
                self.source.cache_key(),
                self.source.fingerprint(self.paths),
                self.suppressed_ids,
                self.grid,
                [str(p) for p in self.paths],
            ]
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.cache_dir / f"guidance_{self.source.name}_{self.grid[0]}x{self.grid[1]}_{digest}.npy"

    def _load_or_compute(self) -> torch.Tensor:
        cache = self._cache_file()
        cached = None
        if cache is not None and cache.is_file():
            try:
                table = np.load(cache)
            except (OSError, ValueError, EOFError) as e:  # cut short (a copy of the data folder) or not an array
                log.warning("guidance target cache %s is unreadable (%s): computing the targets again", cache, e)
                table = None
            cached = table if table is not None and table.shape == (len(self.paths), *self.grid) else None
        rank, world = self.shard
        if world > 1 and self.agree is not None:
            # The ranks follow rank 0: each looking for itself, they could disagree (another job writing the same
            # cache between their looks, a node-local data folder) and wait for each other in different collectives.
            if self.agree(cached is not None):
                if cached is not None:
                    return torch.from_numpy(cached)
                rank, world = 0, 1  # rank 0 has them, this rank cannot read them: all of them here, alone
            cached = None
        if cached is not None:
            return torch.from_numpy(cached)
        failure = None
        try:
            table = compute_targets(
                self.source,
                self.paths,
                self.suppressed_ids,
                self.grid,
                num_workers=self.num_workers,
                shard=(rank, world),
            )
        except Exception as e:  # under DDP the other ranks must hear of it (combine raises it on all of them)
            if world == 1:
                raise
            failure, table = e, np.zeros((len(self.paths), *self.grid), dtype=np.float32)
        if world > 1:
            table = self.combine(table, failure)
        if cache is not None and self.shard[0] == 0:
            with atomic_path(cache, suffix=".npy") as tmp:
                np.save(tmp, table)
        log.info(
            "guidance targets: %d images (%d computed by this process) on a %dx%d grid, suppressing %s (mean kept "
            "fraction %.3f)",
            len(self.paths),
            len(range(rank, len(self.paths), world)),
            *self.grid,
            self.suppress,
            float(table.mean()),
        )
        return torch.from_numpy(table)

    def __getitem__(self, index: int) -> torch.Tensor:
        """(1, h, w) target of image ``index``."""
        return self.table[index][None]


def build_label_source(
    guidance: Mapping, data_root: str | Path, download: bool = True, device: str | torch.device | None = None
) -> LabelSource:
    """The label source a ``guidance`` config asks for (``source`` and the settings of that source); without
    ``download``, torchvision's model only from the torch cache. A network runs on ``device`` (None: this
    process's GPU when there is one)."""
    kind = guidance.get("source")
    mask_dir, class_groups = guidance.get("mask_dir"), guidance.get("class_groups")
    device = device if device is not None else work_device()
    if kind == "auto":  # label maps under a given mask_dir, else the city's own labels, else torchvision's model
        if mask_dir:
            kind = "mask_dir"
        elif (Path(str(data_root)) / "classes.json").is_file():
            kind = "synthetic"
        else:
            kind = "torchvision"
    if kind == "synthetic":
        return SyntheticLabels(data_root)
    if kind == "mask_dir":
        return MaskDirLabels(mask_dir, data_root, class_groups)
    if kind == "torchvision":
        return TorchvisionLabels(device, download=download)
    if kind == "deeplab_cityscapes":
        return DeepLabCityscapesLabels(guidance.get("weights"), class_groups, device)
    if kind == "torchscript":
        return TorchScriptLabels(guidance.get("model"), class_groups, guidance.get("mean"), guidance.get("std"), device)
    raise DataError(
        f"guidance.source={kind!r}: choose auto, synthetic, mask_dir, torchvision, deeplab_cityscapes or torchscript"
    )
