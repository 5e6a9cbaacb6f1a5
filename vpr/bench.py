"""Speed and memory of the project's training step, encoding pass (mining cache and evaluation) and search, each
against a naive reference doing the same work in the same process, with the ratios.

    python -m vpr.bench [--size tiny|city|paper] [--repeats N] [--out DIR]      (make bench)
    python -m vpr.bench --mining [--cache-dtype float16|float32]   (one mining round at Pitts250k's size)

The naive reference is how the public NetVLAD codes compute: fp32, NetVLAD as a loop over clusters with a
per-cluster residual tensor, one triplet-loss call per (query, negative) pair, and a full distance matrix sorted
in numpy for the search. The project's path: the same network and loss as training (vectorised NetVLAD, one
loss call per batch), and on GPUs bf16 autocast (fp16 where bf16 is missing), channels_last and cudnn benchmark;
faiss for the search. Both start from the same weights; random images, so disk and decoding are not measured.

Sizes: ``tiny`` (seconds, a smoke run for the tests), ``city`` (the city_main recipe: ResNet-18 to layer3, 120x160,
K=32, 4 tuples of 1 + 1 + 5), ``paper`` (the paper's: VGG16 to conv5_3 with conv3-conv5 trained, 480x640, K=64,
4 tuples of 1 + 1 + 10). Default: ``paper`` on a GPU, ``city`` on a CPU. FLOPs come from
``torch.utils.flop_counter``; on GPUs the achieved TFLOP/s is set against the device's dense bf16 peak.
Output: a markdown table on stdout, ``bench.md`` and ``bench.json`` in the output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr.data.transforms import normalise_pixels, pixel_statistics

#: Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, from the vendors' data sheets (SXM parts).
#: The first fragment found in the name wins: the PCIe H100 before the SXM one, L40S before L4.
DENSE_BF16_PEAK = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "A10G": 70e12,
    "L4": 121e12,
}


@dataclass(frozen=True)
class Size:
    overrides: tuple[str, ...]
    tuples: int  # per training step
    negatives: int  # per tuple
    encode_images: int  # per encoding batch
    search_db: int
    search_queries: int


SIZES = {
    "tiny": Size(("experiment=city_baseline", "data.image_size=[48,64]", "model.num_clusters=8"), 2, 2, 8, 2000, 200),
    "city": Size(("experiment=city_main",), 4, 5, 32, 10000, 1000),
    "paper": Size(("experiment=paper_baseline",), 4, 10, 32, 10000, 1000),
}


# -- the naive reference -------------------------------------------------------------------------------------
def naive_netvlad(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """NetVLAD the way the public codes wrote it: a loop over clusters, each with its (B, D, N) residual."""
    b, d = x.shape[:2]
    x = F.normalize(x, p=2, dim=1)
    soft = F.softmax(head.conv(x).view(b, head.num_clusters, -1), dim=1)
    flat = x.view(b, d, -1)
    vlad = torch.zeros(b, head.num_clusters, d, dtype=x.dtype, device=x.device)
    for k in range(head.num_clusters):
        residual = flat - head.centroids[k].view(1, d, 1)
        vlad[:, k] = (residual * soft[:, k : k + 1]).sum(dim=-1)
    vlad = F.normalize(vlad, p=2, dim=2)
    return F.normalize(vlad.view(b, -1), p=2, dim=1)


def naive_pair_loss(
    q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, neg_to_query: torch.Tensor, margin: float
) -> torch.Tensor:
    """One triplet-loss call per (query, negative) pair, averaged."""
    losses = [
        F.triplet_margin_loss(q[i : i + 1], p[i : i + 1], n[j : j + 1], margin=margin, p=2)
        for j, i in enumerate(neg_to_query.tolist())
    ]
    return torch.stack(losses).mean()


# -- measuring -------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 1) -> tuple[float, float]:
    """(seconds per call, peak bytes of device memory the timed calls added to what was allocated before them:
    the models and anything else resident do not count; 0 on the CPU)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    resident = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    seconds = (time.perf_counter() - t0) / repeats
    peak = torch.cuda.max_memory_allocated(device) - resident if device.type == "cuda" else 0
    return seconds, float(peak)


def count_flops(fn: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def project_precision(device: torch.device) -> Iterator[None]:
    dtype = autocast_dtype(device)
    with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        yield


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return peak_flops_of(torch.cuda.get_device_name(device))


def peak_flops_of(name: str) -> float | None:
    """Dense bf16 peak of a device called ``name`` (torch.cuda.get_device_name), None when not in the table."""
    return next((v for k, v in DENSE_BF16_PEAK.items() if k in name), None)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# -- the network -------------------------------------------------------------------------------------------------
def compose(size: Size):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from vpr import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(
            "train",
            overrides=[*size.overrides, "backbone.pretrained=false", "logger=none", "paths.output_dir=outputs/bench"],
        )


def build(cfg) -> tuple[nn.Module, nn.Module]:
    """(the project's module, the loss) from the composed config, NetVLAD initialised from random centroids."""
    from vpr.build import build_module

    module = build_module(cfg, with_training=False)
    if hasattr(module.head, "centroids"):
        with torch.no_grad():
            module.head.centroids.copy_(F.normalize(torch.randn_like(module.head.centroids), dim=1))
    return module, module.loss


def run(
    size_name: str,
    repeats: int,
    device: torch.device,
    compile_mode: bool | str = False,
    compile_backend: str = "inductor",
    shapes: int = 0,
    cache_workers: int = 0,
    guidance_workers: int = 0,
) -> dict[str, Any]:
    size = SIZES[size_name]
    cfg = compose(size)
    torch.manual_seed(0)
    module, loss_fn = build(cfg)
    naive = copy.deepcopy(module)
    module.to(device)
    naive.to(device)
    h, w = (int(s) for s in cfg.data.image_size)
    gen = torch.Generator().manual_seed(0)
    b, per = size.tuples, size.negatives
    n_images = b * (2 + per)
    # The project's loaders hand over uint8 pixels, normalised on the device inside the network (describe); the
    # naive reference gets float32 images normalised beforehand, as a loader that normalises in its workers gives.
    pixels = torch.randint(0, 256, (n_images, 3, h, w), generator=gen, dtype=torch.uint8).to(device)
    images = normalise_pixels(pixels, *pixel_statistics(device))
    neg_to_query = torch.arange(b).repeat_interleave(per).to(device)
    margin = float(getattr(loss_fn, "margin", 0.1))
    channels_last = device.type == "cuda"
    if channels_last:
        module.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    params = [p for p in module.parameters() if p.requires_grad]
    naive_params = [p for p in naive.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    naive_opt = torch.optim.SGD(naive_params, lr=1e-4, momentum=0.9)

    def project_step_with(negatives: int) -> None:
        """A training step with ``negatives`` negatives in all (a batch shape of its own), spread over the tuples
        as evenly as they go (every tuple keeps at least one when there are as many as tuples)."""
        module.train()
        owner = torch.arange(negatives, device=device) * b // negatives  # b * per of them: neg_to_query
        with project_precision(device):
            desc, _ = module.describe(pixels[: 2 * b + negatives])
            loss = loss_fn(desc[:b], desc[b : 2 * b], desc[2 * b :], owner)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def project_step() -> None:
        project_step_with(b * per)

    def naive_describe(x: torch.Tensor) -> torch.Tensor:
        att = naive.attention(naive.backbone(x))
        return naive_netvlad(naive.head, att.features if att.weights is None else att.features * att.weights)

    def naive_step() -> None:
        naive.train()
        desc = naive_describe(images)
        loss = naive_pair_loss(desc[:b], desc[b : 2 * b], desc[2 * b :], neg_to_query, margin)
        naive_opt.zero_grad(set_to_none=True)
        loss.backward()
        naive_opt.step()

    enc_pixels = torch.randint(0, 256, (size.encode_images, 3, h, w), generator=gen, dtype=torch.uint8).to(device)
    enc = normalise_pixels(enc_pixels, *pixel_statistics(device))

    @torch.no_grad()
    def project_encode() -> None:
        module.eval()
        with project_precision(device):
            module(enc_pixels).float()

    @torch.no_grad()
    def naive_encode() -> None:
        naive.eval()
        naive_describe(enc)

    out: dict[str, Any] = {
        "size": size_name,
        "device": device_name(device),
        "image_size": [h, w],
        "descriptor_dim": int(module.head.out_dim),
        "tuples_per_step": b,
        "negatives_per_tuple": per,
        "encode_batch": size.encode_images,
        "repeats": repeats,
        "precision": str(autocast_dtype(device) or torch.float32).replace("torch.", ""),
    }
    rows = []
    s_p, m_p = timed(project_step, repeats, device)
    opt.zero_grad(set_to_none=True)  # the project's gradients are not resident while the naive step is measured
    s_n, m_n = timed(naive_step, repeats, device)
    naive_opt.zero_grad(set_to_none=True)
    flops = count_flops(project_step)
    opt.zero_grad(set_to_none=True)
    rows.append(("training step: tuples/s", b / s_p, b / s_n))
    rows.append(("training step: images/s", n_images / s_p, n_images / s_n))
    if device.type == "cuda":
        rows.append(("training step: peak device memory beyond the resident models (GB)", m_p / 1e9, m_n / 1e9))
    out["train_flops_per_step"] = flops
    out["train_tflops_per_s"] = flops / s_p / 1e12
    peak = peak_flops(device)
    if peak:
        out["train_fraction_of_dense_bf16_peak"] = flops / s_p / peak
    s_p, m_p = timed(project_encode, repeats, device)
    s_n, m_n = timed(naive_encode, repeats, device)
    rows.append(("encoding (mining cache, evaluation): images/s", size.encode_images / s_p, size.encode_images / s_n))
    if device.type == "cuda":
        rows.append(("encoding: peak device memory beyond the resident models (GB)", m_p / 1e9, m_n / 1e9))
    search_dim = min(int(module.head.out_dim), SEARCH_DIM_CAP)
    s_p, s_n = search_seconds(size.search_db, size.search_queries, search_dim, device, repeats)
    from vpr.eval.search import faiss_or_none

    backend = "faiss" if faiss_or_none() is not None else "torch"  # the project searches with faiss, else torch
    out["search_backend"] = backend
    rows.append(
        (
            f"kNN search ({backend}) + Recall@N, {size.search_queries} x {size.search_db} ({search_dim}-d): seconds",
            s_p,
            s_n,
        )
    )
    if cache_workers:
        module.encode_batch_size = size.encode_images
        with project_precision(device):
            kept, fresh = cache_round_rates(module, h, w, cache_workers, size.encode_images * 8, repeats)
        rows.append((f"mining-cache rounds from JPEG files ({cache_workers} loader processes): images/s", kept, fresh))
    if guidance_workers:
        batched, single = guidance_rates(h, w, guidance_workers, size.encode_images * 4, repeats, device)
        rows.append((f"guidance targets, DeepLabV3+ ({guidance_workers} loader processes): images/s", batched, single))
    out["rows"] = [{"measure": m, "project": p, "naive": n, "ratio": ratio(m, p, n)} for m, p, n in rows]
    if shapes:
        out["new_shapes"] = new_shape_rows(project_step_with, b, b * per, shapes, repeats, device)
        opt.zero_grad(set_to_none=True)
    if compile_mode is not False:
        eager = {m: p for m, p, _ in rows}
        module.compile_backend = compile_backend
        out["compile_mode"] = compile_mode
        out["compile"] = compile_rows(
            module,
            compile_mode,
            project_step,
            project_encode,
            b,
            size.encode_images,
            repeats,
            device,
            eager["training step: tuples/s"],
            eager["encoding (mining cache, evaluation): images/s"],
        )
    out["image_loading_images_per_s"] = loading_rate(h, w, repeats)
    out["process_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def loading_rate(height: int, width: int, repeats: int, count: int = 24) -> float:
    """Images/s one loader process reads: JPEG decode, resize and uint8 tensor (the project's ImageDataset and
    eval transform) of ``count`` photo-like JPEGs of ``height`` x ``width`` (smooth colour fields plus grain,
    quality 90), written to a temporary folder. The network rows above use tensors already in memory."""
    import tempfile

    from vpr.data.dataset import ImageDataset
    from vpr.data.transforms import eval_transform

    with tempfile.TemporaryDirectory() as folder:
        paths = photo_like_jpegs(Path(folder), count, height, width)
        dataset = ImageDataset(paths, eval_transform((height, width)))
        dataset[0]  # warm-up
        t0 = time.perf_counter()
        for _ in range(max(1, repeats)):
            for i in range(len(dataset)):
                dataset[i]
        return max(1, repeats) * len(dataset) / (time.perf_counter() - t0)


def photo_like_jpegs(folder: Path, count: int, height: int, width: int) -> list[Path]:
    """``count`` JPEGs of ``height`` x ``width`` that decode like photos: smooth colour fields plus grain, quality
    90 (random noise would decode slower, flat colour faster)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.BILINEAR), dtype=np.int16)
        grain = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def cache_round_rates(
    module: nn.Module, height: int, width: int, workers: int, per_round: int, rounds: int
) -> tuple[float, float]:
    """(images/s, images/s) of mining-cache rounds of ``per_round`` images read from JPEG files by ``workers``
    loader processes and encoded by ``module``: with the loader's workers kept from round to round (the project's
    cache passes) against a loader made for each round, whose workers start and stop with it. One round of each
    before the timed ``rounds``."""
    import tempfile

    from vpr.data.dataset import ImageDataset
    from vpr.data.transforms import eval_transform

    module.encode_workers = workers
    with tempfile.TemporaryDirectory() as folder:
        files = photo_like_jpegs(Path(folder), min(per_round, 64), height, width)
        # as many items as the rounds read, the files over and over (the page cache holds them either way)
        items = [files[i % len(files)] for i in range(per_round * (rounds + 1))]
        dataset = ImageDataset(items, eval_transform((height, width)))
        rates = []
        for keep in (True, False):
            t0 = 0.0
            for r in range(rounds + 1):
                if r == 1:
                    synchronize(module.device)
                    t0 = time.perf_counter()
                module.encode_dataset(
                    dataset, "cache round", indices=range(r * per_round, (r + 1) * per_round), keep_workers=keep
                )
            synchronize(module.device)
            rates.append(rounds * per_round / (time.perf_counter() - t0))
            module.release_encode_workers()
    return rates[0], rates[1]


def guidance_rates(
    height: int, width: int, workers: int, count: int, repeats: int, device: torch.device
) -> tuple[float, float]:
    """(images/s, images/s) of guidance targets from the paper's segmentation network (DeepLabV3+ MobileNetV2,
    random weights: the speed does not depend on them) for ``count`` JPEG files: the project's way (``workers``
    loader processes decode, the network runs on batches) against one image at a time decoded in the main process.
    One pass of each before the timed ``repeats``."""
    import tempfile

    from vpr.data.guidance import CITYSCAPES_GROUPS, NetworkLabels, area_target, compute_targets
    from vpr.models.deeplab import DeepLabV3PlusMobileNetV2

    class RandomDeepLab(NetworkLabels):
        name = "bench"

        def __init__(self) -> None:
            super().__init__(device)
            self.model = DeepLabV3PlusMobileNetV2().eval().to(device)
            self.set_groups(CITYSCAPES_GROUPS)

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    source = RandomDeepLab()
    ids = sorted({i for g in ("person", "vehicle") for i in source.group_ids(g)})
    grid = (max(1, height // 16), max(1, width // 16))
    with tempfile.TemporaryDirectory() as folder:
        files = photo_like_jpegs(Path(folder), min(count, 64), height, width)
        items = [files[i % len(files)] for i in range(count)]

        def project() -> None:
            compute_targets(source, items, ids, grid, num_workers=workers)

        def naive() -> None:
            for path in items:
                area_target(source.labels(path), ids, grid)

        rates = []
        for fn in (project, naive):
            seconds, _ = timed(fn, repeats, device)
            rates.append(count / seconds)
    return rates[0], rates[1]


#: The search benchmark's descriptor size at most: its cost is linear in D, and the naive reference's full
#: distance matrix must fit in a small machine's memory.
SEARCH_DIM_CAP = 4096


def search_seconds(num_db: int, num_q: int, dim: int, device: torch.device, repeats: int = 1) -> tuple[float, float]:
    """faiss search + Recall@N against a full numpy distance matrix, argsort and a loop, on the same descriptors:
    seconds per call of each, ``repeats`` timed calls after one warm-up (faiss's import and first-call set-up are
    not the search's time)."""
    from vpr.eval.recall import recall_at_n
    from vpr.eval.search import knn_search

    rng = np.random.default_rng(0)
    db = rng.standard_normal((num_db, dim), dtype=np.float32)
    q = db[rng.integers(0, num_db, num_q)] + 0.5 * rng.standard_normal((num_q, dim), dtype=np.float32)
    positives = [np.array([i]) for i in rng.integers(0, num_db, num_q)]

    def project() -> None:
        _, idx = knn_search(db, q, 20)
        recall_at_n(idx, positives, [1, 5, 10, 20])

    def naive() -> None:
        d = (q**2).sum(1)[:, None] + (db**2).sum(1)[None] - 2 * q @ db.T
        order = np.argsort(d, axis=1)[:, :20]
        [any(int(i) in set(p.tolist()) for i in row[:n]) for n in (1, 5, 10, 20) for row, p in zip(order, positives)]

    return timed(project, repeats, device)[0], timed(naive, repeats, device)[0]


def mining_benchmark(
    num_db: int, num_queries: int, dim: int, cache_dtype: torch.dtype, device: torch.device
) -> dict[str, Any]:
    """One mining round at Pitts250k's size on synthetic descriptors: the cache (``num_db`` x ``dim``, stored as
    ``cache_dtype``) built block by block on ``device``, then ``num_queries`` queries mined against it with the
    project's miner (1000 sampled candidates, 10 negatives, a margin wide enough that every query keeps 10).
    Reports seconds and peak memory."""
    from vpr.data.dataset import PlaceSplit
    from vpr.data.mining import HardNegativeMiner

    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(num_db)))
    db_utm = np.stack(np.divmod(np.arange(num_db), side), 1).astype(np.float64) * 8.0  # a grid, 8 m apart
    anchor = rng.integers(0, num_db, num_queries)
    q_utm = db_utm[anchor] + rng.uniform(-3, 3, (num_queries, 2))
    split = PlaceSplit(
        "synthetic",
        "train",
        [Path(f"db{i}") for i in range(num_db)],
        [Path(f"q{i}") for i in range(num_queries)],
        db_utm,
        q_utm,
    )
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(0)
    db = torch.empty(num_db, dim, dtype=cache_dtype, device=device)
    for s in range(0, num_db, 1024):  # unit rows, like NetVLAD descriptors
        block = torch.randn(min(1024, num_db - s), dim, generator=gen, device=device)
        db[s : s + len(block)] = F.normalize(block, dim=1).to(cache_dtype)
    q = F.normalize(
        db[torch.as_tensor(anchor, device=device)].float()
        + (0.5 / dim**0.5) * torch.randn(num_queries, dim, generator=gen, device=device),
        dim=1,
    )
    synchronize(device)
    build_seconds = time.perf_counter() - t0
    # random descriptors are all about sqrt(2) apart: a wide margin makes negatives "hard" as in a real round
    miner = HardNegativeMiner(split, negatives_per_query=10, candidate_negatives=1000, margin=1.5)
    ids = miner.trainable_queries
    t0 = time.perf_counter()
    triplets, stats = miner.mine(ids, q[torch.as_tensor(ids, device=device)], db, torch.Generator().manual_seed(0))
    synchronize(device)
    mine_seconds = time.perf_counter() - t0
    out = {
        "device": device_name(device),
        "num_database": num_db,
        "num_queries": int(len(ids)),
        "dim": dim,
        "cache_dtype": str(cache_dtype).replace("torch.", ""),
        "cache_gb": db.numel() * db.element_size() / 1e9,
        "cache_build_seconds": build_seconds,
        "mine_seconds": mine_seconds,
        "tuples": len(triplets),
        "process_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "peak_rss_increase_gb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1e6,
    }
    if device.type == "cuda":
        out["peak_device_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


def mining_markdown(r: dict[str, Any]) -> str:
    memory = (
        f"peak device memory {r['peak_device_memory_gb']:.2f} GB"
        if "peak_device_memory_gb" in r
        else f"process peak RSS {r['process_peak_rss_gb']:.1f} GB (+{r['peak_rss_increase_gb']:.1f} GB during the round)"
    )
    return (
        f"Mining round on {r['device']}: {r['num_database']} database descriptors of {r['dim']}-d "
        f"in {r['cache_dtype']} ({r['cache_gb']:.3g} GB), {r['num_queries']} queries: the round mined "
        f"{r['tuples']} tuples in {r['mine_seconds']:.1f} s (cache filled in {r['cache_build_seconds']:.1f} s); "
        f"{memory}."
    )


def compile_rows(
    module: nn.Module,
    mode: bool | str,
    step: Callable[[], None],
    encode: Callable[[], None],
    tuples: int,
    encode_images: int,
    repeats: int,
    device: torch.device,
    eager_tuples_per_s: float,
    eager_images_per_s: float,
) -> list[dict[str, Any]]:
    """The project's training step and encoding pass again after ``model.compile`` (the same module, compiled in
    place): does torch.compile pay off on this device? The first, untimed call of each includes the compilation,
    whose time is reported too."""
    module.compile_mode = mode
    module.apply_memory_format()  # channels-last is already set; this compiles
    t0 = time.perf_counter()
    step()
    encode()
    synchronize(device)
    compile_s = time.perf_counter() - t0
    s_step, _ = timed(step, repeats, device)
    s_enc, _ = timed(encode, repeats, device)
    return [
        {
            "measure": "compilation (first training step + encoding call): seconds",
            "eager": None,
            "compiled": compile_s,
            "ratio": None,
        },
        {
            "measure": "training step: tuples/s",
            "eager": eager_tuples_per_s,
            "compiled": tuples / s_step,
            "ratio": tuples / s_step / eager_tuples_per_s,
        },
        {
            "measure": "encoding: images/s",
            "eager": eager_images_per_s,
            "compiled": encode_images / s_enc,
            "ratio": encode_images / s_enc / eager_images_per_s,
        },
    ]


def new_shape_rows(
    step_with: Callable[[int], None],
    tuples: int,
    max_negatives: int,
    shapes: int,
    repeats: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    """The training step at batch shapes it has not seen, as a mining round gives them (its tuples keep 1 to
    ``negatives_per_query`` negatives, so the batch's image count varies), with cudnn's benchmark mode off and
    then on: the first step at each new shape (on GPUs with benchmark mode, cudnn times its algorithms for the
    shape then) against the same shape again. Each mode gets shapes of its own, none seen before in the run."""
    counts = [n for n in range(max_negatives - 1, tuples - 1, -1)][: 2 * shapes]  # fewer negatives than measured
    before = torch.backends.cudnn.benchmark
    rows = []
    try:
        for mode, mine in ((False, counts[0::2]), (True, counts[1::2])):
            torch.backends.cudnn.benchmark = mode
            first, again = [], []
            for n in mine:
                synchronize(device)
                t0 = time.perf_counter()
                step_with(n)
                synchronize(device)
                first.append(time.perf_counter() - t0)
                again.append(timed(lambda n=n: step_with(n), repeats, device, warmup=0)[0])
            rows.append(
                {
                    "cudnn_benchmark": mode,
                    "negatives": mine,
                    "first_step_seconds": sum(first) / len(first),
                    "repeat_step_seconds": sum(again) / len(again),
                }
            )
    finally:
        torch.backends.cudnn.benchmark = before
    return [r for r in rows if r["negatives"]]


def ratio(measure: str, project: float, naive: float) -> float | None:
    """How many times better the project is: a rate's quotient, a time's or memory's inverse quotient."""
    if not project or not naive:
        return None
    return project / naive if measure.split(":")[-1].strip().endswith("/s") else naive / project


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Benchmark `{result['size']}` on {result['device']} ({result['precision']}; images "
        f"{result['image_size'][0]}x{result['image_size'][1]}, descriptor {result['descriptor_dim']}-d, "
        f"{result['tuples_per_step']} tuples of 1 + 1 + {result['negatives_per_tuple']} per step)",
        "",
        "| measure | project | naive | project vs naive |",
        "|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        x = f"{r['ratio']:.2f}x" if r["ratio"] else "–"
        lines.append(f"| {r['measure']} | {r['project']:.3g} | {r['naive']:.3g} | {x} |")
    lines.append("")
    lines.append(
        f"Training step: {result['train_flops_per_step'] / 1e9:.1f} GFLOP, "
        f"{result['train_tflops_per_s']:.3f} TFLOP/s achieved"
        + (
            f", {100 * result['train_fraction_of_dense_bf16_peak']:.0f}% of the dense bf16 peak"
            if "train_fraction_of_dense_bf16_peak" in result
            else ""
        )
        + f". Process peak RSS {result['process_peak_rss_gb']:.1f} GB."
    )
    if result.get("image_loading_images_per_s"):
        rate = result["image_loading_images_per_s"]
        step = next(r["project"] for r in result["rows"] if r["measure"] == "training step: images/s")
        encode = next(r["project"] for r in result["rows"] if r["measure"].startswith("encoding (mining"))

        def workers(n: int) -> str:
            return f"{n} loader process{'es' if n != 1 else ''}"

        lines.append(
            f"Image loading (JPEG decode, resize, uint8 tensor; one loader process): {rate:.0f} images/s: "
            f"the training step needs about {workers(math.ceil(step / rate))} and the encoding pass "
            f"{workers(math.ceil(encode / rate))} at the speeds above (data.num_workers)."
        )
    if result.get("new_shapes"):
        lines += [
            "",
            "Training steps at batch shapes not seen before (a mining round's tuples keep 1 to "
            f"{result['negatives_per_tuple']} negatives, so a batch's image count varies), seconds per step:",
            "",
            "| cudnn benchmark mode | negatives in the batch | first step at a new shape | the same shape again |",
            "|---|---|---:|---:|",
        ]
        for r in result["new_shapes"]:
            lines.append(
                f"| {'on' if r['cudnn_benchmark'] else 'off'} | {', '.join(map(str, r['negatives']))} | "
                f"{r['first_step_seconds']:.3g} | {r['repeat_step_seconds']:.3g} |"
            )
    if result.get("compile"):
        lines += [
            "",
            f"`model.compile={result['compile_mode']}` (same run, same module compiled in place):",
            "",
            "| measure | eager | compiled | compiled vs eager |",
            "|---|---:|---:|---:|",
        ]
        for r in result["compile"]:
            eager = f"{r['eager']:.3g}" if r["eager"] else "–"
            x = f"{r['ratio']:.2f}x" if r["ratio"] else "–"
            lines.append(f"| {r['measure']} | {eager} | {r['compiled']:.3g} | {x} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vpr.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="default: paper on a GPU, city on a CPU")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measure (after one warm-up)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--out", type=Path, default=None, help="default outputs/bench/<time>")
    parser.add_argument(
        "--mining", action="store_true", help="instead: one mining round at Pitts250k's size on synthetic descriptors"
    )
    parser.add_argument("--mining-db", type=int, default=91_464, help="database descriptors (Pitts250k train)")
    parser.add_argument("--mining-queries", type=int, default=1000, help="queries of the round")
    parser.add_argument("--mining-dim", type=int, default=32_768, help="descriptor size (VGG16 NetVLAD K=64)")
    parser.add_argument(
        "--cache-dtype",
        choices=["float16", "float32"],
        default="float16",
        help="the mining cache's dtype for --mining (default float16)",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        help="also time the training step and encoding after torch.compile (model.compile=MODE: "
        "default, reduce-overhead, max-autotune) and print compiled vs eager",
    )
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend for --compile")
    parser.add_argument(
        "--cache-rounds",
        type=int,
        default=0,
        metavar="W",
        help="also time mining-cache rounds read from JPEG files by W loader processes: the project's loader, "
        "whose workers are kept from round to round, against one made anew each round",
    )
    parser.add_argument(
        "--shapes",
        type=int,
        default=0,
        metavar="K",
        help="also time the training step at K batch shapes it has not seen (fewer negatives), first step "
        "against a repeat, with cudnn's benchmark mode off and on (K each)",
    )
    parser.add_argument(
        "--guidance",
        type=int,
        default=0,
        metavar="W",
        help="also time guidance targets from the paper's segmentation network for JPEG files: W loader processes "
        "and batches against one image at a time",
    )
    args = parser.parse_args(argv)
    try:
        device = torch.device(
            "cuda"
            if args.device == "auto" and torch.cuda.is_available()
            else "cpu"
            if args.device == "auto"
            else args.device
        )
    except RuntimeError as e:
        parser.error(f"--device {args.device}: {e}")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: the benchmark runs on cpu or cuda (leave --device out: auto)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no usable CUDA GPU (leave --device out: auto)")
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= gpus:
        parser.error(
            f"--device {args.device}: this machine has {gpus} CUDA GPU{'s' if gpus != 1 else ''}: "
            f"cuda:0 to cuda:{gpus - 1}"
        )
    size = args.size or ("paper" if device.type == "cuda" else "city")
    for name in ("repeats", "mining_db", "mining_queries", "mining_dim"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.shapes < 0 or args.cache_rounds < 0 or args.guidance < 0:
        parser.error("--shapes, --cache-rounds and --guidance must be >= 0")
    if args.mining and args.size:
        parser.error("--size sets the network benchmark; --mining sizes its round with --mining-db/-queries/-dim")
    if args.mining:
        extra = [
            f"--{name.replace('_', '-')}"
            for name in ("shapes", "cache_rounds", "guidance", "compile")
            if getattr(args, name)
        ]
        if extra:
            parser.error(f"{', '.join(extra)}: rows of the network benchmark, which --mining does not run")
    out = args.out or Path("outputs") / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:  # before the measures: a folder that cannot be written is said now, not after minutes of benchmark
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"--out {out}: cannot make the output folder ({e.strerror or e})")
    if not os.access(out, os.W_OK | os.X_OK):
        parser.error(f"--out {out}: the output folder is not writable")
    from vpr.io import write_json_atomic, write_text_atomic

    if args.mining:
        result = mining_benchmark(
            args.mining_db, args.mining_queries, args.mining_dim, getattr(torch, args.cache_dtype), device
        )
        table = mining_markdown(result)
        write_json_atomic(out / "mining.json", result)
        write_text_atomic(out / "mining.md", table + "\n")
        print(table + f"\n\nwritten: {out / 'mining.md'}, {out / 'mining.json'}", flush=True)
        return 0
    result = run(
        size,
        args.repeats,
        device,
        compile_mode=args.compile if args.compile else False,
        compile_backend=args.compile_backend,
        shapes=args.shapes,
        cache_workers=args.cache_rounds,
        guidance_workers=args.guidance,
    )
    table = markdown(result)
    write_json_atomic(out / "bench.json", result)
    write_text_atomic(out / "bench.md", table + "\n")
    print(table + f"\n\nwritten: {out / 'bench.md'}, {out / 'bench.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
