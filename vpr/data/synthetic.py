"""A procedural city written in Pittsburgh's on-disk layout, for tests, smoke runs and GPU benchmarks.

``python -m vpr.data.synthetic --out DIR --preset tiny|default|large [--seed N]`` writes::

    DIR/000/000123_pitch1_yaw3.jpg            database image  (+ 000123_pitch1_yaw3_labels.png)
    DIR/queries_real/000/000045_pitch1_yaw2.jpg   query image  (+ ..._labels.png)
    DIR/datasets/city_{train,val,test}.mat    dbStruct per split (vpr.data.mat.save_dbstruct)
    DIR/classes.json                          {"0": "sky", "1": "building", ...}
    DIR/city.json                             manifest (format version, seed, config): written LAST

The world: each split is its own district (a grid of streets with blocks of buildings), districts lie
``district_gap_m`` apart, so no image of one split is near another split's. Buildings are boxes whose facades
carry a procedural appearance (windows, floors, bands, shop fronts with signs, posters cut from the photos
bundled with scikit-image, wall textures). A vectorised pinhole ray caster renders street-level views:
per image column a ray in plan view hits the nearest facade segment (depth z, facade coordinate u); per row
the height on that facade is ``camera_height - y * z / f``. Below the horizon the ground is drawn where it
is nearer than the facade, with road markings in world coordinates, so neighbouring views overlap.
Database and query images differ by viewpoint, "time" (sun, sky, exposure, colour cast, lit windows),
sensor noise, blur, JPEG quality and their own dynamic objects (people, vehicles, z-buffered).

Every image has a label map (uint8 ids in :data:`CLASSES`). Everything is deterministic for a seed: the
world comes from ``Generator([seed, split])``, each image from ``Generator([seed, split, kind, index])``,
so the number of worker processes does not change a byte.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from vpr.data.mat import DbStruct, load_dbstruct, save_dbstruct
from vpr.io import write_text_atomic

__all__ = [
    "CLASSES",
    "FORMAT_VERSION",
    "PRESETS",
    "SPLITS",
    "CityConfig",
    "Lighting",
    "TextureBank",
    "World",
    "build_textures",
    "build_world",
    "draw_lighting",
    "ensure_city",
    "generate_city",
    "get_preset",
    "main",
    "make_preview",
    "raycast_facades",
    "render_view",
]

#: Bump when the on-disk output of the same config + seed changes.
FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
SKY, BUILDING, ROAD, PERSON, VEHICLE, SIDEWALK, VEGETATION = range(7)
CLASSES: dict[int, str] = {
    SKY: "sky",
    BUILDING: "building",
    ROAD: "road",
    PERSON: "person",
    VEHICLE: "vehicle",
    SIDEWALK: "sidewalk",
    VEGETATION: "vegetation",
}
#: Label colours for previews (RGB).
CLASS_COLOURS = np.array(
    [[120, 170, 240], [150, 80, 60], [70, 70, 75], [230, 30, 30], [30, 30, 230], [200, 200, 170], [60, 160, 60]],
    dtype=np.uint8,
)
#: A UTM-like origin (zone 17T, Pittsburgh) so that coordinates look like the real ones.
UTM_ORIGIN_M = (584000.0, 4477000.0)
MANIFEST_NAME = "city.json"
DATASET_NAME = "city"


# =========================================================================================================
# Configuration
# =========================================================================================================


@dataclass(frozen=True)
class CityConfig:
    """Every knob of the synthetic city. Presets: :func:`get_preset` ("tiny", "default", "large").

    Difficulty knobs (raise to make retrieval harder): ``lighting_change``, ``window_change``,
    ``query_noise_std``, ``query_blur_max_px``, ``query_jpeg_quality_min`` (lower = harder),
    ``query_offset_along_m`` / ``query_offset_across_m`` / ``query_yaw_jitter_deg`` (viewpoint change),
    ``persons_per_image`` / ``vehicles_per_image`` (occluders), ``style_count`` (lower = fewer building
    archetypes, more look-alikes), ``style_jitter`` (lower = copies of an archetype look more alike),
    ``shop_prob`` / ``poster_prob`` (lower = fewer distinctive landmarks).
    """

    # --- images and camera
    image_width_px: int = 160
    image_height_px: int = 120
    supersample: int = 2  # render at this factor and area-average: anti-aliasing
    hfov_deg: float = 65.0
    camera_height_m: float = 2.5
    horizon_frac: float = 0.55  # horizon row / image height (0.5 = level camera; more shows more facade)
    jpeg_quality: int = 90  # database images
    # --- split sizes (database images are db_headings views of each place; the last place may have fewer)
    num_db_train: int = 1200
    num_q_train: int = 600
    num_db_val: int = 400
    num_q_val: int = 200
    num_db_test: int = 400
    num_q_test: int = 200
    # --- where the database and query cameras stand
    db_headings: int = 4  # views per place, named yaw1..yawN as in Pittsburgh
    heading_offset_deg: float = 45.0  # yaw of view 1 relative to the street direction
    db_heading_jitter_deg: float = 5.0
    place_spacing_m: float = 6.0  # database places along each street
    db_lateral_m: float = 1.5  # database cameras: this far right of the street centre line (driving lane)
    query_offset_along_m: float = 5.0  # query = a place moved up to this far along the street ...
    query_offset_across_m: float = 4.0  # ... and anywhere this far from the centre line (clipped to the street)
    query_yaw_jitter_deg: float = 15.0  # query heading = a database heading + uniform jitter
    # --- city layout
    block_min_m: float = 45.0  # street spacing (centre line to centre line)
    block_max_m: float = 75.0
    road_half_width_m: float = 5.0
    sidewalk_width_m: float = 2.5
    building_width_min_m: float = 6.0
    building_width_max_m: float = 20.0
    building_depth_min_m: float = 8.0
    building_depth_max_m: float = 16.0
    building_height_min_m: float = 5.0
    building_height_max_m: float = 40.0
    building_gap_prob: float = 0.25
    district_gap_m: float = 400.0  # empty land between the train, val and test districts
    view_distance_m: float = 250.0
    fog_distance_m: float = 350.0
    # --- appearance and difficulty
    style_count: int = 10
    style_jitter: float = 0.4
    shop_prob: float = 0.45
    poster_prob: float = 0.25
    lighting_change: float = 0.5  # 0: queries lit like the database; 1: strong change (sun, exposure, colour)
    window_change: float = 0.4  # fraction of windows whose brightness changes between db and query time
    db_noise_std: float = 1.0  # sensor noise, in 0..255 grey levels
    query_noise_std: float = 3.0
    query_blur_max_px: float = 0.8  # Gaussian sigma, drawn uniformly in [0, max] per query
    query_jpeg_quality_min: int = 75  # query JPEG quality drawn in [min, jpeg_quality]
    persons_per_image: float = 1.5  # Poisson means, drawn independently for every image
    vehicles_per_image: float = 1.2
    object_min_distance_m: float = 3.0
    object_max_distance_m: float = 40.0

    def split_counts(self, split: str) -> tuple[int, int]:
        """(num_db, num_q) of a split."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return getattr(self, f"num_db_{split}"), getattr(self, f"num_q_{split}")

    def validate(self) -> None:
        """Raise ValueError naming the offending setting."""

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"CityConfig.{name} = {getattr(self, name)!r}: {what}")

        need(self.image_width_px >= 8 and self.image_height_px >= 8, "image_width_px", "images must be >= 8x8 px")
        need(self.supersample >= 1, "supersample", "must be >= 1")
        need(0.0 < self.hfov_deg < 170.0, "hfov_deg", "must be in (0, 170)")
        need(0.05 < self.horizon_frac < 0.95, "horizon_frac", "must be in (0.05, 0.95)")
        need(self.camera_height_m > 0, "camera_height_m", "must be > 0")
        for split in SPLITS:
            need(getattr(self, f"num_db_{split}") >= 1, f"num_db_{split}", "every split needs a database image")
            need(getattr(self, f"num_q_{split}") >= 0, f"num_q_{split}", "must be >= 0")
        need(self.db_headings >= 1, "db_headings", "must be >= 1")
        need(self.place_spacing_m > 0, "place_spacing_m", "must be > 0")
        need(self.block_min_m <= self.block_max_m, "block_min_m", "must be <= block_max_m")
        street_half = self.road_half_width_m + self.sidewalk_width_m
        need(
            self.block_min_m > 2 * street_half + 2 * self.building_depth_min_m,
            "block_min_m",
            f"blocks must fit streets and buildings: > 2*(road_half_width_m+sidewalk_width_m) + "
            f"2*building_depth_min_m = {2 * street_half + 2 * self.building_depth_min_m}",
        )
        need(abs(self.db_lateral_m) < street_half - 0.5, "db_lateral_m", "database cameras must stand in the street")
        need(self.district_gap_m >= 100.0, "district_gap_m", "splits must lie >= 100 m apart (ground truth is 25 m)")
        need(self.building_width_min_m <= self.building_width_max_m, "building_width_min_m", "must be <= max")
        need(self.building_depth_min_m <= self.building_depth_max_m, "building_depth_min_m", "must be <= max")
        need(
            self.camera_height_m < self.building_height_min_m <= self.building_height_max_m,
            "building_height_min_m",
            "must exceed camera_height_m and be <= building_height_max_m",
        )
        need(self.style_count >= 1, "style_count", "must be >= 1")
        need(0 < self.jpeg_quality <= 100, "jpeg_quality", "must be in 1..100")
        need(0 < self.query_jpeg_quality_min <= self.jpeg_quality, "query_jpeg_quality_min", "must be in 1..jpeg_quality")
        need(self.object_min_distance_m < self.object_max_distance_m, "object_min_distance_m", "must be < max")


def get_preset(name: str) -> CityConfig:
    """The named preset: "tiny" (tests, seconds), "default" (``make train``, < 60 s on 2 cores),
    "large" (640x480 at Pittsburgh 30k's sizes, for GPU benchmarks)."""
    if name == "tiny":
        return CityConfig(
            image_width_px=64,
            image_height_px=48,
            num_db_train=40,
            num_q_train=20,
            num_db_val=40,
            num_q_val=20,
            num_db_test=40,
            num_q_test=20,
        )
    if name == "default":
        return CityConfig()
    if name == "large":
        return CityConfig(
            image_width_px=640,
            image_height_px=480,
            supersample=1,
            num_db_train=10000,
            num_q_train=7500,
            num_db_val=10000,
            num_q_val=7500,
            num_db_test=10000,
            num_q_test=7500,
        )
    raise ValueError(f"unknown synthetic city preset {name!r}; choose one of {PRESETS}")


PRESETS: tuple[str, ...] = ("tiny", "default", "large")


# =========================================================================================================
# Textures
# =========================================================================================================

_WALL_TILE_PX = 128
_POSTER_PX = 64
_SIGN_SHAPE = (32, 128)
_GROUND_TILE_PX = 256
_CLOUD_TILE_PX = 256


@dataclass(frozen=True)
class TextureBank:
    """Texture atlases shared by all districts.

    wall_mips[l]: (K, S >> l, S >> l) float32 zero-mean unit-std wall tiles (mip level l).
    ground_mips[l]: (2, G >> l, G >> l) float32 zero-mean unit-std tiles: 0 asphalt/concrete grain, 1 grass.
    signs: (Ks, 32, 128) float32 in [0, 1], dark text on light (shop signs).
    posters: (P, 64, 64, 3) float32 in [0, 1] (crops of the photos bundled with scikit-image).
    clouds: (C, C) float32 in [0, 1], smooth and periodic.
    hash_table: (4096,) float32 uniform in [0, 1): cheap per-window randomness.
    """

    wall_mips: tuple[np.ndarray, ...]
    ground_mips: tuple[np.ndarray, ...]
    signs: np.ndarray
    posters: np.ndarray
    clouds: np.ndarray
    hash_table: np.ndarray

    @property
    def num_walls(self) -> int:
        return int(self.wall_mips[0].shape[0])


def _skimage_images() -> dict[str, np.ndarray]:
    # Only images shipped inside the scikit-image wheel (skimage/data/*.png|jpg): none needs a download.
    from skimage import data as skdata

    names = ("brick", "gravel", "grass", "moon", "text", "page", "camera", "coins", "astronaut", "chelsea",
             "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel", "retina", "logo")
    images = {}
    for name in names:
        try:
            images[name] = np.asarray(getattr(skdata, name)())
        except Exception as err:  # a stripped-down install: say which file is missing
            raise RuntimeError(
                f"scikit-image's bundled image {name!r} failed to load ({err}); the synthetic city needs the "
                f"standard scikit-image wheel with skimage/data/ (no download is attempted)"
            ) from err
    return images


def _resize(img: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Area/box resampling through PIL (deterministic). img: (H, W) or (H, W, 3) uint8 or float in [0, 1]."""
    arr = img
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    out = Image.fromarray(arr).resize((shape_hw[1], shape_hw[0]), Image.Resampling.BOX)
    return np.asarray(out).astype(np.float32) / 255.0


def _standardise(t: np.ndarray) -> np.ndarray:
    t = t.astype(np.float32)
    t = (t - t.mean()) / (t.std() + 1e-6)
    return np.clip(t, -3, 3).astype(np.float32)


def _seamless(img: np.ndarray) -> np.ndarray:
    # Mirror-tiling makes any crop wrap around without visible seams.
    top = np.concatenate([img, img[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1]], axis=0)


def _periodic_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma_px, mode="wrap")


def _mips(stack: np.ndarray, levels: int) -> tuple[np.ndarray, ...]:
    out = [stack.astype(np.float32)]
    for _ in range(levels - 1):
        s = out[-1]
        k, h, w = s.shape
        out.append(s.reshape(k, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).astype(np.float32))
    return tuple(out)


def build_textures(seed: int = 0) -> TextureBank:
    """Build the texture atlases (about 0.5 s). Deterministic for a seed."""
    rng = np.random.default_rng([seed, 7919])
    images = _skimage_images()
    s = _WALL_TILE_PX

    def gray(name: str) -> np.ndarray:
        a = images[name].astype(np.float32)
        if a.ndim == 3:
            a = a[..., :3].mean(axis=2)
        return a / 255.0

    walls = []
    # photographic wall materials: brick, stucco (gravel), ivy/rough (grass), weathered stone (moon)
    for name, crop in (("brick", 256), ("gravel", 256), ("grass", 256), ("moon", 200), ("coins", 160)):
        a = gray(name)[:crop, :crop]
        walls.append(_resize(_seamless(a), (s, s)))
    yy, xx = np.mgrid[0:s, 0:s] / s
    # plaster: smooth noise
    walls.append(_periodic_noise(rng, s, 3.0))
    # horizontal siding boards with grain
    walls.append(((yy * 16) % 1.0 < 0.85).astype(np.float32) + 0.3 * _periodic_noise(rng, s, 1.0))
    # large stone blocks with mortar and per-block tone
    bx, by = np.floor(xx * 4 + 0.5 * (np.floor(yy * 8) % 2)), np.floor(yy * 8)
    tone = rng.uniform(0.6, 1.0, size=(9, 9))[by.astype(int) % 9, bx.astype(int) % 9]
    mortar = (((xx * 4 + 0.5 * (np.floor(yy * 8) % 2)) % 1.0) < 0.05) | ((yy * 8 % 1.0) < 0.08)
    walls.append(np.where(mortar, 0.2, tone) + 0.1 * _periodic_noise(rng, s, 1.0))
    # concrete panels
    panels = ((xx * 2 % 1.0) < 0.02) | ((yy * 2 % 1.0) < 0.02)
    walls.append(np.where(panels, 0.3, 0.8) + 0.15 * _periodic_noise(rng, s, 2.0))
    # vertical ribs (modern cladding)
    walls.append(np.cos(xx * 2 * np.pi * 12) * 0.5 + 0.2 * _periodic_noise(rng, s, 1.5))
    wall_stack = np.stack([_standardise(w) for w in walls])

    g = _GROUND_TILE_PX
    asphalt = _resize(_seamless(gray("gravel")), (g, g)) + 0.6 * _periodic_noise(rng, g, 8.0)
    grass = _resize(_seamless(gray("grass")), (g, g))
    ground_stack = np.stack([_standardise(asphalt), _standardise(grass)])

    # shop signs: crops of text-like images (dark glyphs on light background), normalised to [0, 1]
    signs = []
    for name in ("text", "page"):
        a = gray(name)
        h, w = a.shape
        for _ in range(12):
            ch, cw = int(rng.integers(h // 5, h // 3)), int(rng.integers(w // 3, w // 2))
            y0, x0 = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
            crop = _resize(a[y0:y0 + ch, x0:x0 + cw], _SIGN_SHAPE)
            lo, hi = np.percentile(crop, 5), np.percentile(crop, 95)
            signs.append(np.clip((crop - lo) / (hi - lo + 1e-6), 0, 1))
    # posters: colour crops of the bundled photographs
    posters = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "colorwheel", "retina", "logo", "camera"):
        a = images[name]
        if a.ndim == 2:  # tint grey images so that they still differ in colour
            a = np.stack([a, a * 0.8, a * 0.6], axis=2).astype(np.uint8)
        a = a[..., :3]
        h, w = a.shape[:2]
        for _ in range(4):
            c = int(rng.integers(min(h, w) // 3, min(h, w)))
            y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            posters.append(_resize(a[y0:y0 + c, x0:x0 + c], (_POSTER_PX, _POSTER_PX)))
    clouds = _periodic_noise(rng, _CLOUD_TILE_PX, 12.0) + 0.5 * _periodic_noise(rng, _CLOUD_TILE_PX, 4.0)
    clouds = (clouds - clouds.min()) / (clouds.max() - clouds.min())
    return TextureBank(
        wall_mips=_mips(wall_stack, 5),
        ground_mips=_mips(ground_stack, 6),
        signs=np.stack(signs).astype(np.float32),
        posters=np.stack(posters).astype(np.float32),
        clouds=clouds.astype(np.float32),
        hash_table=rng.random(4096).astype(np.float32),
    )


# =========================================================================================================
# World: buildings (facade segments + appearance) and streets
# =========================================================================================================


@dataclass
class World:
    """A district in local metric coordinates (x east, y north; UTM = local + origin_utm).

    seg_p0, seg_p1: (S, 2) facade segment end points; buildings are counter-clockwise boxes, so the
        outward normal of a segment is its direction turned clockwise and u grows to the viewer's right.
    seg_building: (S,) building index of each segment; seg_u0: (S,) facade coordinate (m) at p0.
    bld: per-building appearance arrays of length B (see :func:`_building_appearance`), incl. "height_m".
    street_xs / street_ys: sorted x of north-south and y of east-west street centre lines (may be empty).
    paved_box: (xmin, ymin, xmax, ymax) of the street network; outside it the ground is vegetation.
    """

    seg_p0: np.ndarray
    seg_p1: np.ndarray
    seg_building: np.ndarray
    seg_u0: np.ndarray
    bld: dict[str, np.ndarray]
    street_xs: np.ndarray
    street_ys: np.ndarray
    road_half_m: float
    street_half_m: float
    paved_box: tuple[float, float, float, float]
    origin_utm: tuple[float, float] = UTM_ORIGIN_M

    def __post_init__(self) -> None:
        edge = self.seg_p1 - self.seg_p0
        self.seg_len = np.hypot(edge[:, 0], edge[:, 1])
        self.seg_normal = np.stack([edge[:, 1], -edge[:, 0]], axis=1) / np.maximum(self.seg_len, 1e-9)[:, None]

    def street_offsets(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed offsets (m) of points to the nearest north-south line (x - x_line) and east-west line."""
        return _nearest_offset(x, self.street_xs), _nearest_offset(y, self.street_ys)

    def in_paved(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.paved_box
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def _nearest_offset(v: np.ndarray, lines: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if len(lines) == 0:
        return np.full(v.shape, np.inf)
    i = np.clip(np.searchsorted(lines, v), 1, len(lines) - 1) if len(lines) > 1 else np.zeros(v.shape, int)
    lo = lines[np.maximum(i - 1, 0)]
    hi = lines[i]
    return np.where(np.abs(v - lo) <= np.abs(v - hi), v - lo, v - hi)


_PALETTE = np.array(
    [
        [0.55, 0.26, 0.18],  # red brick
        [0.74, 0.66, 0.52],  # sandstone
        [0.58, 0.58, 0.60],  # concrete grey
        [0.85, 0.84, 0.80],  # white render
        [0.40, 0.30, 0.24],  # dark brown
        [0.62, 0.70, 0.78],  # pale blue
        [0.70, 0.76, 0.60],  # pale green
        [0.86, 0.78, 0.50],  # ochre
        [0.45, 0.47, 0.52],  # slate
        [0.78, 0.60, 0.55],  # salmon
    ],
    dtype=np.float64,
)


def _archetypes(rng: np.random.Generator, n: int, textures: TextureBank) -> list[dict[str, Any]]:
    styles = []
    for _ in range(n):
        wall_tex = int(rng.integers(textures.num_walls))
        styles.append(
            {
                "wall_rgb": np.clip(_PALETTE[rng.integers(len(_PALETTE))] + rng.normal(0, 0.05, 3), 0.05, 0.95),
                "wall_tex": wall_tex,
                "wall_tile_m": rng.uniform(2.0, 6.0),
                "wall_amp": rng.uniform(0.3, 1.0),
                "floor_h_m": rng.uniform(2.9, 4.2),
                "win_dx_m": rng.uniform(1.8, 4.5),
                "win_w": rng.uniform(0.25, 0.8),
                "win_h": rng.uniform(0.3, 0.7),
                "win_rgb": np.clip(rng.choice([[0.12, 0.15, 0.2], [0.35, 0.45, 0.55], [0.2, 0.22, 0.2]])
                                   + rng.normal(0, 0.04, 3), 0.02, 0.9),
                "frame_dark": rng.uniform(0.5, 1.3),
                "band": bool(rng.random() < 0.5),
                "band_rgb": np.clip(rng.uniform(0.3, 0.9, 3), 0, 1),
                "cornice_rgb": np.clip(rng.uniform(0.2, 0.8) + rng.normal(0, 0.03, 3), 0, 1),
                "height_scale": rng.uniform(0.3, 1.0),
            }
        )
    return styles


def _building_appearance(
    rng: np.random.Generator,
    cfg: CityConfig,
    textures: TextureBank,
    heights_m: np.ndarray,
    front_u0_m: np.ndarray,
    front_len_m: np.ndarray,
    styles: Sequence[dict[str, Any]],
) -> dict[str, np.ndarray]:
    """Per-building appearance: an archetype ("style") plus jitter, and a few unique landmarks."""
    n = len(heights_m)
    j = cfg.style_jitter
    style_of = rng.integers(len(styles), size=n)
    out: dict[str, list] = {k: [] for k in ("wall_rgb", "wall_tex", "wall_tile_m", "wall_amp", "floor_h_m",
                                            "win_dx_m", "win_off_m", "win_w", "win_h", "win_rgb", "frame_dark",
                                            "band", "band_rgb", "cornice_rgb")}
    for b in range(n):
        st = styles[style_of[b]]
        out["wall_rgb"].append(np.clip(st["wall_rgb"] * np.exp(rng.normal(0, 0.25 * j, 3)), 0.03, 0.97))
        flip = rng.random(2) < 0.5 * j
        out["wall_tex"].append(int(rng.integers(textures.num_walls)) if flip[0] else st["wall_tex"])
        out["band"].append(bool(rng.random() < 0.5) if flip[1] else st["band"])
        for key in ("wall_tile_m", "wall_amp", "floor_h_m", "win_dx_m", "win_w", "win_h", "frame_dark"):
            out[key].append(st[key] * float(np.exp(rng.normal(0, 0.2 * j))))
        out["win_off_m"].append(rng.uniform(0, out["win_dx_m"][-1]))
        out["win_rgb"].append(np.clip(st["win_rgb"] + rng.normal(0, 0.08 * j, 3), 0.02, 0.95))
        out["band_rgb"].append(np.clip(st["band_rgb"] + rng.normal(0, 0.1 * j, 3), 0, 1))
        out["cornice_rgb"].append(np.clip(st["cornice_rgb"] + rng.normal(0, 0.1 * j, 3), 0, 1))
    bld = {k: np.asarray(v) for k, v in out.items()}
    bld["win_w"] = np.clip(bld["win_w"], 0.15, 0.9)
    bld["win_h"] = np.clip(bld["win_h"], 0.2, 0.8)
    bld["floor_h_m"] = np.clip(bld["floor_h_m"], 2.6, 5.0)
    bld["height_m"] = np.asarray(heights_m, dtype=np.float64)
    # shop fronts with a sign band: the sign text (a crop of a text image) is unique per building
    bld["shop"] = rng.random(n) < cfg.shop_prob
    bld["shop_dx_m"] = rng.uniform(1.5, 4.0, n)
    bld["glass_rgb"] = np.clip(rng.uniform(0.1, 0.45, (n, 3)) * np.array([0.9, 1.0, 1.1]), 0, 1)
    bld["sign_rgb"] = rng.uniform(0.05, 1.0, (n, 3))
    bld["letter_rgb"] = np.where(rng.random((n, 1)) < 0.5, 0.05, 0.95) * np.ones((1, 3))
    bld["sign_tex"] = rng.integers(len(textures.signs), size=n)
    bld["sign_tile_m"] = rng.uniform(2.0, 5.0, n)
    # posters: a photo on the street-facing facade
    has_poster = rng.random(n) < cfg.poster_prob
    bld["poster"] = np.where(has_poster, rng.integers(len(textures.posters), size=n), -1)
    bld["poster_w_m"] = rng.uniform(1.5, 3.5, n)
    bld["poster_h_m"] = bld["poster_w_m"] * rng.uniform(0.8, 1.4, n)
    slack = np.maximum(front_len_m - bld["poster_w_m"] - 0.6, 0.0)
    bld["poster_u_m"] = front_u0_m + 0.3 + rng.random(n) * slack
    bld["poster_v_m"] = np.where(rng.random(n) < 0.5, rng.uniform(0.4, 1.0, n),
                                 rng.uniform(3.0, np.maximum(heights_m - bld["poster_h_m"] - 0.8, 3.1), n))
    return bld


def build_world(
    boxes_m: np.ndarray,
    heights_m: np.ndarray,
    cfg: CityConfig,
    textures: TextureBank,
    rng: np.random.Generator,
    *,
    front_faces: np.ndarray | None = None,
    street_xs: Sequence[float] = (),
    street_ys: Sequence[float] = (),
    paved_box: tuple[float, float, float, float] | None = None,
    origin_utm: tuple[float, float] = UTM_ORIGIN_M,
) -> World:
    """A world of box buildings. boxes_m: (B, 4) [x0, y0, x1, y1] plan rectangles; heights_m: (B,).

    front_faces: (B,) index of the street-facing face (0 south, 1 east, 2 north, 3 west), used to place
    posters; defaults to south. Appearance is drawn from ``rng`` (archetypes + jitter, see CityConfig).
    """
    boxes = np.asarray(boxes_m, dtype=np.float64).reshape(-1, 4)
    heights = np.asarray(heights_m, dtype=np.float64).reshape(-1)
    if len(boxes) != len(heights):
        raise ValueError(f"build_world: {len(boxes)} boxes but {len(heights)} heights")
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        raise ValueError("build_world: every box needs x0 < x1 and y0 < y1")
    x0, y0, x1, y1 = boxes.T
    # counter-clockwise corners -> faces south, east, north, west
    corners = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1),
                        np.stack([x0, y1], 1)], axis=1)  # (B, 4, 2)
    p0 = corners.reshape(-1, 2)
    p1 = np.roll(corners, -1, axis=1).reshape(-1, 2)
    lengths = np.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], axis=1)  # (B, 4)
    u0 = np.concatenate([np.zeros((len(boxes), 1)), np.cumsum(lengths, axis=1)[:, :3]], axis=1)
    faces = np.zeros(len(boxes), dtype=int) if front_faces is None else np.asarray(front_faces, dtype=int)
    rows = np.arange(len(boxes))
    styles = _archetypes(rng, cfg.style_count, textures)
    bld = _building_appearance(rng, cfg, textures, heights, u0[rows, faces], lengths[rows, faces], styles)
    xs = np.sort(np.asarray(street_xs, dtype=np.float64))
    ys = np.sort(np.asarray(street_ys, dtype=np.float64))
    street_half = cfg.road_half_width_m + cfg.sidewalk_width_m
    if paved_box is None:
        paved_box = (
            (xs.min() - street_half, ys.min() - street_half, xs.max() + street_half, ys.max() + street_half)
            if len(xs) and len(ys) else (0.0, 0.0, 0.0, 0.0)
        )
    return World(
        seg_p0=p0,
        seg_p1=p1,
        seg_building=np.repeat(rows, 4),
        seg_u0=u0.reshape(-1),
        bld=bld,
        street_xs=xs,
        street_ys=ys,
        road_half_m=cfg.road_half_width_m,
        street_half_m=street_half,
        paved_box=tuple(float(v) for v in paved_box),
        origin_utm=origin_utm,
    )


def _frontage(rng: np.random.Generator, a0: float, a1: float, cfg: CityConfig) -> list[tuple[float, float]]:
    """Building intervals along one side of a block, with occasional gaps (alleys)."""
    out = []
    a = a0
    while a1 - a >= cfg.building_width_min_m:
        if out and rng.random() < cfg.building_gap_prob:
            a += rng.uniform(2.0, 6.0)
            continue
        w = rng.uniform(cfg.building_width_min_m, cfg.building_width_max_m)
        if a1 - (a + w) < cfg.building_width_min_m:
            w = a1 - a  # the last building takes the rest of the block
        out.append((a, a + w))
        a += w
    return out


@dataclass
class District:
    """One split's world plus its database places (local metres)."""

    world: World
    place_xy: np.ndarray  # (P, 2) database camera positions
    place_dir: np.ndarray  # (P,) street direction (rad): 0 east-west street, pi/2 north-south street
    width_m: float


def _street_edges(xs: np.ndarray, ys: np.ndarray, nx: int, ny: int) -> list[tuple[float, float, float, float]]:
    """Inner street edges (x0, y0, x1, y1) between intersections; the outer ring of blocks has no cameras."""
    edges = []
    for j in range(1, ny + 2):
        for i in range(1, nx + 1):
            edges.append((xs[i], ys[j], xs[i + 1], ys[j]))
    for i in range(1, nx + 2):
        for j in range(1, ny + 1):
            edges.append((xs[i], ys[j], xs[i], ys[j + 1]))
    return edges


def _edge_places(edge: tuple[float, float, float, float], spacing_m: float) -> int:
    length = math.hypot(edge[2] - edge[0], edge[3] - edge[1])
    return max(1, int(length // spacing_m))


def _make_district(cfg: CityConfig, textures: TextureBank, rng: np.random.Generator, num_places: int,
                   origin_utm: tuple[float, float]) -> District:
    max_blocks = 256
    wx = rng.uniform(cfg.block_min_m, cfg.block_max_m, max_blocks)
    wy = rng.uniform(cfg.block_min_m, cfg.block_max_m, max_blocks)

    def lines(widths: np.ndarray, n: int) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(widths[: n + 2])])  # n inner blocks + a ring on each side

    nx = ny = 1
    while True:
        xs, ys = lines(wx, nx), lines(wy, ny)
        edges = _street_edges(xs, ys, nx, ny)
        if sum(_edge_places(e, cfg.place_spacing_m) for e in edges) >= num_places:
            break
        if nx <= ny:
            nx += 1
        else:
            ny += 1
        if nx + 2 > max_blocks or ny + 2 > max_blocks:
            raise ValueError(f"CityConfig: {num_places} places do not fit a {max_blocks}^2-block district")
    places, dirs = [], []
    for e in edges:
        n = _edge_places(e, cfg.place_spacing_m)
        direction = math.atan2(e[3] - e[1], e[2] - e[0])
        normal = np.array([math.sin(direction), -math.cos(direction)])  # right of the street direction
        for k in range(n):
            t = (k + 0.5) / n
            p = np.array([e[0] + t * (e[2] - e[0]), e[1] + t * (e[3] - e[1])])
            places.append(p + cfg.db_lateral_m * normal)
            dirs.append(direction)
    keep = np.sort(rng.choice(len(places), size=num_places, replace=False))
    place_xy = np.asarray(places)[keep]
    place_dir = np.asarray(dirs)[keep]

    # buildings: every block (inner ones and the ring) is lined with buildings on its four sides
    sh = cfg.road_half_width_m + cfg.sidewalk_width_m
    boxes, heights, fronts = [], [], []
    corner = cfg.building_depth_min_m
    for i in range(len(xs) - 1):
        for j in range(len(ys) - 1):
            bx0, bx1, by0, by1 = xs[i] + sh, xs[i + 1] - sh, ys[j] + sh, ys[j + 1] - sh
            max_depth = min(cfg.building_depth_max_m, (by1 - by0) / 2, (bx1 - bx0) / 2)
            for side in range(4):
                along = (bx0, bx1) if side in (0, 2) else (by0 + corner, by1 - corner)
                for a, b in _frontage(rng, along[0], along[1], cfg):
                    depth = rng.uniform(cfg.building_depth_min_m, max(max_depth, cfg.building_depth_min_m))
                    setback = rng.uniform(0.0, 0.8)
                    if side == 0:
                        box, front = (a, by0 + setback, b, by0 + setback + depth), 0
                    elif side == 2:
                        box, front = (a, by1 - setback - depth, b, by1 - setback), 2
                    elif side == 3:
                        box, front = (bx0 + setback, a, bx0 + setback + depth, b), 3
                    else:
                        box, front = (bx1 - setback - depth, a, bx1 - setback, b), 1
                    boxes.append(box)
                    fronts.append(front)
                    span = cfg.building_height_max_m - cfg.building_height_min_m
                    heights.append(cfg.building_height_min_m + span * rng.beta(1.3, 3.0))
    world = build_world(
        np.asarray(boxes), np.asarray(heights), cfg, textures, rng,
        front_faces=np.asarray(fronts), street_xs=xs, street_ys=ys, origin_utm=origin_utm,
    )
    return District(world=world, place_xy=place_xy, place_dir=place_dir, width_m=float(xs[-1]))


# =========================================================================================================
# Lighting ("time of capture")
# =========================================================================================================


@dataclass(frozen=True)
class Lighting:
    """Global appearance of one capture. time_id 0 = database time, 1 = query time."""

    sun_azimuth_rad: float = math.radians(135.0)
    sun_elevation_rad: float = math.radians(45.0)
    sun: float = 0.5
    ambient: float = 0.6
    sky_zenith: tuple[float, float, float] = (0.30, 0.50, 0.85)
    sky_horizon: tuple[float, float, float] = (0.75, 0.82, 0.92)
    cloud_amount: float = 0.3
    cloud_offset: tuple[float, float] = (0.0, 0.0)
    gain: float = 1.0
    gamma: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    time_id: int = 0
    window_change: float = 0.0
    noise_std: float = 0.0
    blur_px: float = 0.0
    jpeg_quality: int = 90


def draw_lighting(cfg: CityConfig, rng: np.random.Generator, is_query: bool) -> Lighting:
    """Database images share one "time" (small per-image variation); queries are taken at another time
    whose distance from it scales with ``cfg.lighting_change``."""
    c = cfg.lighting_change if is_query else 0.05
    overcast = rng.uniform(0, 1) * c
    zenith = np.array([0.30, 0.50, 0.85]) * (1 - overcast) + np.array([0.62, 0.64, 0.68]) * overcast
    horizon = np.array([0.75, 0.82, 0.92]) * (1 - overcast) + np.array([0.78, 0.78, 0.80]) * overcast
    warm = rng.uniform(0, 1) * c * 0.6  # low evening sun: orange horizon
    horizon = horizon * (1 - warm) + np.array([0.95, 0.70, 0.45]) * warm
    return Lighting(
        sun_azimuth_rad=math.radians(135.0 + rng.uniform(-180.0, 180.0) * c + rng.normal(0, 5)),
        sun_elevation_rad=math.radians(float(np.clip(45.0 + rng.uniform(-35.0, 15.0) * c, 5.0, 75.0))),
        sun=0.5 * (1 - 0.8 * overcast),
        ambient=0.6 * (1 + rng.uniform(-0.2, 0.2) * c),
        sky_zenith=tuple(float(v) for v in zenith),
        sky_horizon=tuple(float(v) for v in horizon),
        cloud_amount=float(np.clip(0.3 + rng.uniform(-0.3, 0.6) * c + overcast, 0.0, 1.0)),
        cloud_offset=(float(rng.uniform(0, 1e4)), float(rng.uniform(0, 1e4))),
        gain=float(np.exp(rng.uniform(-0.5, 0.4) * c)),
        gamma=float(np.exp(rng.uniform(-0.35, 0.35) * c)),
        cast=tuple(float(v) for v in 1.0 + rng.uniform(-0.15, 0.15, 3) * c),
        time_id=1 if is_query else 0,
        window_change=cfg.window_change if is_query else 0.0,
        noise_std=cfg.query_noise_std if is_query else cfg.db_noise_std,
        blur_px=float(rng.uniform(0, cfg.query_blur_max_px)) if is_query else 0.0,
        jpeg_quality=int(rng.integers(cfg.query_jpeg_quality_min, cfg.jpeg_quality + 1)) if is_query
        else cfg.jpeg_quality,
    )


# =========================================================================================================
# Rendering
# =========================================================================================================


def _camera_grid(cfg: CityConfig) -> tuple[int, int, float, np.ndarray, np.ndarray]:
    """Supersampled image grid: (W, H, focal_px, x: (W,) px right of centre, y: (H,) px below horizon)."""
    w = cfg.image_width_px * cfg.supersample
    h = cfg.image_height_px * cfg.supersample
    focal_px = (w / 2) / math.tan(math.radians(cfg.hfov_deg) / 2)
    x = np.arange(w) + 0.5 - w / 2
    y = np.arange(h) + 0.5 - cfg.horizon_frac * h
    return w, h, focal_px, x, y


def raycast_facades(
    cam_xy: np.ndarray,
    yaw_rad: float,
    seg_p0: np.ndarray,
    seg_p1: np.ndarray,
    slope: np.ndarray,
    max_depth_m: float = np.inf,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest facade hit of each image column, in plan view.

    Column rays are ``forward + slope * right`` (slope = x_px / focal_px), so the ray parameter of a hit is
    directly the pinhole depth z along the optical axis (not the Euclidean distance).

    Args:
        cam_xy: (2,) camera position; yaw_rad: heading (counter-clockwise from +x / east).
        seg_p0, seg_p1: (S, 2) segment end points; slope: (W,) per-column x / f.
    Returns:
        depth: (W,) z of the nearest hit (inf if none), seg: (W,) index into the segments (-1 if none),
        s: (W,) position of the hit along its segment in [0, 1].
    """
    cam = np.asarray(cam_xy, dtype=np.float64)
    fwd = np.array([math.cos(yaw_rad), math.sin(yaw_rad)])
    right = np.array([math.sin(yaw_rad), -math.cos(yaw_rad)])
    n_cols = len(slope)
    if len(seg_p0) == 0:
        return np.full(n_cols, np.inf), np.full(n_cols, -1), np.zeros(n_cols)
    d = fwd[None, :] + np.asarray(slope, dtype=np.float64)[:, None] * right[None, :]  # (W, 2)
    e = seg_p1 - seg_p0  # (S, 2)
    w = seg_p0 - cam  # (S, 2)
    # Solve cam + t d = p0 + s e with 2-D cross products (Cramer's rule).
    den = d[:, 0:1] * e[None, :, 1] - d[:, 1:2] * e[None, :, 0]  # (W, S)
    t_num = w[:, 0] * e[:, 1] - w[:, 1] * e[:, 0]  # (S,)
    s_num = w[None, :, 0] * d[:, 1:2] - w[None, :, 1] * d[:, 0:1]  # (W, S)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = t_num[None, :] / den
        s = s_num / den
    valid = (np.abs(den) > 1e-12) & (t > 1e-3) & (t <= max_depth_m) & (s >= 0.0) & (s <= 1.0)
    t = np.where(valid, t, np.inf)
    seg = np.argmin(t, axis=1)
    cols = np.arange(n_cols)
    depth = t[cols, seg]
    hit = np.isfinite(depth)
    return depth, np.where(hit, seg, -1), np.where(hit, s[cols, seg], 0.0)


def _visible_segments(world: World, cam: np.ndarray, fwd: np.ndarray, right: np.ndarray, tan_half: float,
                      max_dist_m: float) -> np.ndarray:
    """Indices of segments that can be hit: front-facing, within range, overlapping the view wedge."""
    r0 = world.seg_p0 - cam
    r1 = world.seg_p1 - cam
    facing = np.einsum("ij,ij->i", r0, world.seg_normal) < 0  # camera on the outer side (boxes are closed)
    e = world.seg_p1 - world.seg_p0
    t = np.clip(-np.einsum("ij,ij->i", r0, e) / np.maximum(world.seg_len**2, 1e-12), 0, 1)
    closest = r0 + t[:, None] * e
    near = np.einsum("ij,ij->i", closest, closest) < max_dist_m**2
    t_w = tan_half * 1.02
    x0, z0, x1, z1 = r0 @ right, r0 @ fwd, r1 @ right, r1 @ fwd
    left_out = (x0 + t_w * z0 < 0) & (x1 + t_w * z1 < 0)  # both ends left of the left wedge edge
    right_out = (t_w * z0 - x0 < 0) & (t_w * z1 - x1 < 0)
    return np.nonzero(facing & near & ~left_out & ~right_out)[0]


def _hash01(*keys: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) from integer keys (vectorised, order-sensitive)."""
    h = np.full(np.shape(keys[0]), 0xCBF29CE484222325, dtype=np.uint64)
    for k in keys:
        h ^= np.asarray(k).astype(np.int64).astype(np.uint64)
        h *= np.uint64(0x100000001B3)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _level_for(texels_per_px: np.ndarray, levels: int) -> np.ndarray:
    """Mip level whose texels best match the pixel footprint (anti-aliasing of distant textures)."""
    return np.clip(np.floor(np.log2(np.maximum(texels_per_px, 1.0))), 0, levels - 1).astype(np.int64)


def _frac(x: np.ndarray) -> np.ndarray:
    # x - floor(x) rather than x % 1.0: numpy's float modulo is ~30x slower
    return x - np.floor(x)


def _chw(rgb: np.ndarray) -> np.ndarray:
    """Per-column colours (W, 3) -> (3, 1, W), broadcastable against channel-first (3, H, W) images."""
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.float32).T[:, None, :])


def _paint(col: np.ndarray, mask: np.ndarray, value: np.ndarray) -> None:
    """col[:, mask] = value for a channel-first image col: (3, H, W); value broadcastable to it.

    One 2-D copyto per channel: a trailing channel axis of size 3 makes masked copies ~9x slower."""
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 1:
        value = value[:, None, None]
    for k in range(3):
        np.copyto(col[k], value[k], where=mask)


def _facade_colour(world: World, tex: TextureBank, b: np.ndarray, u: np.ndarray, z: np.ndarray, v: np.ndarray,
                   focal_px: float, lt: Lighting) -> np.ndarray:
    """Facade colour before shading, for every pixel of the given columns (callers mask the facade rows).

    b, u, z: (W,) building, facade coordinate (m, growing to the viewer's right) and depth of each column;
    v: (H, W) height (m) on that facade seen by each pixel. Returns (3, H, W) float32 (channel-first).
    All building parameters are gathered per column, then broadcast over rows.
    """
    p = world.bld
    f32 = np.float32
    height = p["height_m"][b].astype(f32)
    n_rows, n_cols = v.shape

    # wall material: texture tile, mip level from the per-column footprint
    tile = p["wall_tile_m"][b]
    size0 = tex.wall_mips[0].shape[1]
    level = _level_for(z / focal_px / tile * size0, len(tex.wall_mips))
    tid = p["wall_tex"][b]
    grain = np.empty((n_rows, n_cols), dtype=f32)
    for lv in np.unique(level):
        cols = np.nonzero(level == lv)[0]
        size = tex.wall_mips[lv].shape[1]  # a power of two: "& (size - 1)" is the modulo
        tx = np.floor(u[cols] / tile[cols] * size).astype(np.int64) & (size - 1)
        ty = np.floor(v[:, cols] * (-size / tile[cols]).astype(f32)).astype(np.int64) & (size - 1)  # rows run down
        grain[:, cols] = tex.wall_mips[lv][tid[cols][None, :], ty, tx[None, :]]
    amp = (0.22 * p["wall_amp"][b]).astype(f32)
    col = _chw(p["wall_rgb"][b]) * (1.0 + amp[None, :] * grain)[None]

    # floors and the window grid (u is per column, the floor index per pixel)
    floor_h = p["floor_h_m"][b].astype(f32)
    fv = v / floor_h
    fl = np.floor(fv)
    fv -= fl
    dx = p["win_dx_m"][b]
    wx = (u - p["win_off_m"][b]) / dx
    wi = np.floor(wx)
    fu = wx - wi
    half_w, half_h = p["win_w"][b] / 2, (p["win_h"][b] / 2).astype(f32)
    below_roof = v < height - 1.0
    upper = (fl >= 1) & below_roof
    frame_u = np.abs(fu - 0.5) < half_w + 0.12 / dx
    in_u = np.abs(fu - 0.5) < half_w
    dv = np.abs(fv - 0.55)
    frame = upper & frame_u & (dv < half_h + (0.12 / floor_h).astype(f32))
    win = upper & in_u & (dv < half_h)
    _paint(col, frame, col * _chw(np.clip(p["frame_dark"][b], 0.3, 1.2)[:, None].repeat(3, 1)))
    # lit / unlit windows: a random table indexed by (building, window column) and the floor
    table = tex.hash_table
    bits = len(table) - 1
    fl_i = np.clip(fl, -1e6, 1e6).astype(np.int64)
    key0 = (_hash01(b, wi, np.zeros_like(b)) * (1 << 30)).astype(np.int64)
    bright = table[(key0[None, :] + fl_i * 7919) & bits]
    if lt.window_change > 0:  # some windows look different at the query's time
        key_c = (_hash01(b, wi, np.full_like(b, 99)) * (1 << 30)).astype(np.int64)
        key_t = (_hash01(b, wi, np.full_like(b, lt.time_id + 1)) * (1 << 30)).astype(np.int64)
        changed = table[(key_c[None, :] + fl_i * 131) & bits] < lt.window_change
        bright = np.where(changed, table[(key_t[None, :] + fl_i * 7919) & bits], bright)
    win_rgb = _chw(p["win_rgb"][b])
    _paint(col, win, np.minimum(win_rgb * (0.45 + 1.1 * bright)[None], 1.0))
    _paint(col, p["band"][b][None, :] & (fl >= 1) & (fv < 0.09) & below_roof, _chw(p["band_rgb"][b]))
    cornice = _chw(p["cornice_rgb"][b])
    _paint(col, v > height - 0.7, cornice)
    _paint(col, v > height - 0.25, cornice * 0.7)

    # ground floor: shop fronts (glass + sign band) or a rhythm of doors and windows
    ground = fl == 0
    shop = p["shop"][b]
    su = u / p["shop_dx_m"][b]
    glass_u = shop & (_frac(su) > 0.06) & (_frac(su) < 0.94)
    shine = 0.7 + 0.6 * _hash01(b, np.floor(su), np.full_like(b, lt.time_id + 7))
    glass_rgb = np.clip(p["glass_rgb"][b] * shine[:, None], 0, 1)
    _paint(col, ground & glass_u[None, :] & (fv > 0.04) & (fv < 0.68), _chw(glass_rgb))
    rr, cc = np.nonzero(ground & shop[None, :] & (fv > 0.74) & (fv < 0.95))
    if len(rr):
        sb = b[cc]
        ty = np.clip(((0.95 - fv[rr, cc]) / 0.21 * _SIGN_SHAPE[0]).astype(np.int64), 0, _SIGN_SHAPE[0] - 1)
        tx = np.floor(u[cc] / p["sign_tile_m"][sb] * _SIGN_SHAPE[1]).astype(np.int64) & (_SIGN_SHAPE[1] - 1)
        glyph = tex.signs[p["sign_tex"][sb], ty, tx] < 0.45
        col[:, rr, cc] = np.where(glyph[:, None], p["letter_rgb"][sb], p["sign_rgb"][sb]).T
    plain = ground & ~shop[None, :]
    door_u = ((wi.astype(np.int64) % 3) == 0) & (np.abs(fu - 0.5) < 0.18)
    _paint(col, plain & door_u[None, :] & (fv < 0.72), np.array([0.25, 0.17, 0.12]))
    _paint(col, plain & (~door_u & in_u)[None, :] & (np.abs(fv - 0.5) < half_h), win_rgb)

    # posters (photo crops): strong, unique landmarks on the street-facing facade
    pid = p["poster"][b]
    pu, pw = p["poster_u_m"][b], p["poster_w_m"][b]
    pv, ph = p["poster_v_m"][b].astype(f32), p["poster_h_m"][b].astype(f32)
    poster_u = (pid >= 0) & (u >= pu) & (u < pu + pw)
    if poster_u.any():
        rr, cc = np.nonzero(poster_u[None, :] & (v >= pv) & (v < pv + ph))
        if len(rr):
            py = np.clip(((pv[cc] + ph[cc] - v[rr, cc]) / ph[cc] * _POSTER_PX).astype(np.int64), 0, _POSTER_PX - 1)
            px = np.clip(((u[cc] - pu[cc]) / pw[cc] * _POSTER_PX).astype(np.int64), 0, _POSTER_PX - 1)
            col[:, rr, cc] = tex.posters[pid[cc], py, px].T
    return col


def _ground_colour(world: World, tex: TextureBank, gx: np.ndarray, gy: np.ndarray, z_rows: np.ndarray,
                   focal_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Ground colour (3, H, W) float32 and labels (H, W) at world points gx, gy: (H, W); z_rows: (H,) depth.

    Road markings follow world coordinates, so they stay put between neighbouring views."""
    f32 = np.float32
    ox, oy = world.street_offsets(gx, gy)
    ax, ay = np.abs(ox).astype(f32), np.abs(oy).astype(f32)
    rh, sh = world.road_half_m, world.street_half_m
    inside = world.in_paved(gx, gy)
    road = inside & ((ay < rh) | (ax < rh))
    # pavement runs up to the facades (buildings are set back by at most 0.8 m)
    street = inside & ((ay < sh + 0.8) | (ax < sh + 0.8))
    sidewalk = street & ~road
    # grain texture: mip level per row (the footprint grows with depth)
    level = _level_for(z_rows / focal_px * 40.0, len(tex.ground_mips))
    layer = (~street).astype(np.int64)  # 0 pavement grain, 1 grass
    grain = np.empty(gx.shape, dtype=f32)
    for lv in np.unique(level):
        rows = np.nonzero(level == lv)[0]
        sl = slice(rows[0], rows[-1] + 1)  # level is monotonic in the row: a contiguous band
        size = tex.ground_mips[lv].shape[1]
        tx = np.floor(gx[sl] * (size / 6.4)).astype(np.int64) & (size - 1)
        ty = np.floor(gy[sl] * (size / 6.4)).astype(np.int64) & (size - 1)
        grain[sl] = tex.ground_mips[lv][layer[sl], ty, tx]
    col = np.array([0.26, 0.40, 0.17], dtype=f32)[:, None, None] * (1.0 + 0.3 * grain)[None]
    _paint(col, road, np.array([0.27, 0.27, 0.29], dtype=f32)[:, None, None] * (1.0 + 0.12 * grain)[None])
    joints = (_frac(gx / 1.5) < 0.033) | (_frac(gy / 1.5) < 0.033)
    pave = np.array([0.62, 0.60, 0.57], dtype=f32)[:, None, None] * (1.0 + 0.08 * grain)[None]
    _paint(col, sidewalk, pave * np.where(joints, f32(0.8), f32(1.0))[None])
    d_edge = np.minimum(np.where(ay >= rh, ay, np.inf), np.where(ax >= rh, ax, np.inf))
    _paint(col, sidewalk & (d_edge < rh + 0.2), np.array([0.72, 0.71, 0.69]))
    # markings: yellow dashed centre lines, white edge lines, zebra crossings before intersections
    along_h = road & (ay < rh) & (ax >= sh)  # on an east-west road, away from intersections
    along_v = road & (ax < rh) & (ay >= sh)
    centre = (along_h & (ay < 0.1) & (_frac(gx / 6.0) < 0.5)) | (along_v & (ax < 0.1) & (_frac(gy / 6.0) < 0.5))
    edge_line = (along_h & (np.abs(ay - (rh - 0.35)) < 0.07)) | (along_v & (np.abs(ax - (rh - 0.35)) < 0.07))
    zebra = (along_h & (ax < sh + 3.5) & (_frac(gy) < 0.5)) | (along_v & (ay < sh + 3.5) & (_frac(gx) < 0.5))
    _paint(col, centre, np.array([0.85, 0.70, 0.20]))
    _paint(col, edge_line | zebra, np.array([0.86, 0.86, 0.82]))
    labels = np.full(gx.shape, VEGETATION, dtype=np.uint8)
    np.putmask(labels, road, ROAD)
    np.putmask(labels, sidewalk, SIDEWALK)
    return col, labels


def _sky_colour(tex: TextureBank, elev: np.ndarray, azimuth: np.ndarray, lt: Lighting) -> np.ndarray:
    """Sky colour (3, H, W) float32 for ray elevation (H,) and azimuth (W,) in rad: gradient plus clouds
    on a plane 1 km up (so they move with the view like real clouds)."""
    t = (np.clip(elev / math.radians(45.0), 0, 1) ** 0.6).astype(np.float32)[None, :, None]
    horizon = np.asarray(lt.sky_horizon, dtype=np.float32)[:, None, None]
    zenith = np.asarray(lt.sky_zenith, dtype=np.float32)[:, None, None]
    r = 1000.0 / np.tan(np.maximum(elev, 0.03))
    size = tex.clouds.shape[0]  # a power of two
    cx = np.floor((r[:, None] * np.cos(azimuth)[None, :] + lt.cloud_offset[0]) / 40.0).astype(np.int64) & (size - 1)
    cy = np.floor((r[:, None] * np.sin(azimuth)[None, :] + lt.cloud_offset[1]) / 40.0).astype(np.int64) & (size - 1)
    threshold = 1.0 - lt.cloud_amount
    cover = np.clip((tex.clouds[cy, cx] - threshold) / 0.15, 0, 1) * np.clip(elev / 0.08, 0, 1)[:, None]
    cover = cover.astype(np.float32)[None]
    cloud_rgb = (np.array([0.93, 0.93, 0.95]) * (0.75 + 0.25 * lt.sun / 0.5)).astype(np.float32)[:, None, None]
    return (horizon + (zenith - horizon) * t) * (1 - cover) + cloud_rgb * cover


def _person_sprite(mx: np.ndarray, my: np.ndarray, o: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Mask and colour of a person (body + head), in metres: mx across (0 = centre), my up from the feet."""
    h = o["height_m"]
    col = np.zeros(mx.shape + (3,))
    head_c = h - 0.12
    head = (mx / 0.1) ** 2 + ((my - head_c) / 0.125) ** 2 < 1
    hair = head & (my > head_c + 0.03 - 0.04 * o["hair_long"])
    torso_top = h - 0.25
    torso = (my >= 0.5 * h) & (my < torso_top) & (np.abs(mx) < 0.2 - 0.04 * (my < 0.6 * h))
    arms = (my >= 0.47 * h) & (my < torso_top - 0.03) & (np.abs(mx) >= 0.2) & (np.abs(mx) < 0.27)
    leg_half = 0.5 * h
    stride = o["stride_m"] * (1 - my / leg_half)
    legs = (my < leg_half) & ((np.abs(mx - 0.09 - stride) < 0.07) | (np.abs(mx + 0.09 + stride) < 0.07))
    shoes = legs & (my < 0.07)
    col[torso] = o["shirt_rgb"]
    col[arms] = o["shirt_rgb"] * 0.85
    col[legs] = o["trouser_rgb"]
    col[shoes] = 0.1
    col[head] = o["skin_rgb"]
    col[hair] = o["hair_rgb"]
    return head | torso | arms | legs, col


_VEHICLES = {  # length, width, height (m)
    "car": (4.4, 1.8, 1.5),
    "van": (5.0, 2.0, 2.2),
    "bus": (11.0, 2.5, 3.2),
    "truck": (8.0, 2.4, 3.4),
}


def _vehicle_sprite(mx: np.ndarray, my: np.ndarray, o: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Mask and colour of a vehicle seen from the side or from behind (boxy shapes with wheels)."""
    length, width, height = _VEHICLES[o["type"]]
    half = o["apparent_w_m"] / 2
    col = np.zeros(mx.shape + (3,))
    paint = o["paint_rgb"]
    glass = np.array([0.15, 0.2, 0.25])
    if o["side_view"]:
        nx = mx / half * o["front_sign"]  # +1 = front
        wheel_x = half * 0.68
        r = 0.33 if o["type"] in ("car", "van") else 0.5
        wheels = ((mx - wheel_x) ** 2 + (my - r) ** 2 < r**2) | ((mx + wheel_x) ** 2 + (my - r) ** 2 < r**2)
        hubs = ((np.abs(mx) - wheel_x) ** 2 + (my - r) ** 2) < (0.45 * r) ** 2
        if o["type"] == "car":
            body = (my >= 0.25) & (my < 0.95) & (np.abs(nx) < 0.98)
            k = np.clip((my - 0.95) / (height - 0.95), 0, 1)
            cabin = (my >= 0.95) & (my < height) & (nx > -0.55 + 0.2 * k) & (nx < 0.35 - 0.3 * k)
            windows = cabin & (my < height - 0.08) & (nx > -0.5 + 0.2 * k) & (nx < 0.3 - 0.3 * k)
            windows &= np.abs(nx + 0.1) > 0.03
        elif o["type"] == "van":
            body = (my >= 0.3) & (my < height) & (np.abs(nx) < 0.98) & ~((nx > 0.7) & (my > height - 0.5))
            cabin = np.zeros_like(body)
            windows = body & (my > 1.3) & (my < height - 0.15) & ((nx > 0.45) | ((mx % 1.5) < 1.1))
        elif o["type"] == "bus":
            body = (my >= 0.3) & (my < height) & (np.abs(nx) < 0.99)
            cabin = np.zeros_like(body)
            windows = body & (my > 0.55 * height) & (my < 0.88 * height) & ((mx % 1.3) < 1.05)
        else:  # truck: cab at the front, box behind
            cab = (nx > 0.62) & (my >= 0.35) & (my < 0.8 * height)
            box = (nx <= 0.58) & (nx > -0.99) & (my >= 0.4) & (my < height)
            body, cabin = cab, box
            windows = cab & (my > 0.5 * height) & (nx > 0.7)
        under = (my >= 0.15) & (my < 0.3) & (np.abs(nx) < 0.95)
        col[under] = 0.08
        col[body | cabin] = paint
        if o["type"] == "truck":
            col[cabin] = o["box_rgb"]
        col[windows] = glass
        col[wheels] = 0.05
        col[wheels & hubs] = 0.55
        mask = body | cabin | under | wheels
    else:
        body_top = 0.95 if o["type"] == "car" else height
        body = (my >= 0.3) & (my < body_top) & (np.abs(mx) < half - 0.03)
        cabin = (my >= body_top) & (my < height) & (np.abs(mx) < half - 0.15) if o["type"] == "car" else (
            np.zeros_like(body))
        win_lo, win_hi = (body_top, height - 0.06) if o["type"] == "car" else (0.6 * height, 0.88 * height)
        windows = (my >= win_lo) & (my < win_hi) & (np.abs(mx) < half - 0.25)
        lights = (my >= 0.6) & (my < 0.75) & (np.abs(mx) > half - 0.35) & (np.abs(mx) < half - 0.06)
        plate = (my >= 0.42) & (my < 0.56) & (np.abs(mx) < 0.25)
        tyres = (my < 0.45) & (np.abs(mx) > half - 0.35) & (np.abs(mx) < half - 0.02)
        under = (my >= 0.1) & (my < 0.3) & (np.abs(mx) < half - 0.1)
        col[under | tyres] = 0.06
        col[body | cabin] = paint
        col[windows & (body | cabin)] = glass
        col[lights] = np.array([0.8, 0.08, 0.06])
        col[plate] = np.array([0.9, 0.9, 0.85])
        mask = body | cabin | tyres | under
    return mask, col


def _sample_objects(world: World, cfg: CityConfig, cam: np.ndarray, fwd: np.ndarray, right: np.ndarray,
                    rng: np.random.Generator) -> list[dict[str, Any]]:
    """People on the street (road or sidewalk) and vehicles on the road, in front of the camera."""
    tan_half = math.tan(math.radians(cfg.hfov_deg) / 2)
    objects = []
    counts = {"person": int(rng.poisson(cfg.persons_per_image)), "vehicle": int(rng.poisson(cfg.vehicles_per_image))}
    for kind, count in counts.items():
        for _ in range(count):
            # rejection sampling, vectorised: 12 candidate spots in the view, keep the first valid one
            z_min = cfg.object_min_distance_m + (2.0 if kind == "vehicle" else 0.0)
            zs = rng.uniform(z_min, max(cfg.object_max_distance_m, z_min + 1.0), 12)
            xs_m = rng.uniform(-1.1, 1.1, 12) * zs * tan_half
            spots = cam[None, :] + zs[:, None] * fwd[None, :] + xs_m[:, None] * right[None, :]
            oxs, oys = world.street_offsets(spots[:, 0], spots[:, 1])
            limit = world.street_half_m - 0.4 if kind == "person" else world.road_half_m - 1.3
            ok = world.in_paved(spots[:, 0], spots[:, 1]) & (np.minimum(np.abs(oxs), np.abs(oys)) < limit)
            if not ok.any():
                continue
            first = int(np.argmax(ok))
            z, x, pos = float(zs[first]), float(xs_m[first]), spots[first]
            ox, oy = oxs[first:first + 1], oys[first:first + 1]
            o: dict[str, Any] = {"kind": kind, "z": z, "x": x}
            if kind == "person":
                o.update(
                    height_m=rng.uniform(1.5, 1.95),
                    shirt_rgb=rng.uniform(0.05, 0.95, 3),
                    trouser_rgb=rng.uniform(0.05, 0.6, 3),
                    skin_rgb=np.array([0.85, 0.65, 0.5]) * rng.uniform(0.45, 1.05),
                    hair_rgb=rng.uniform(0.05, 0.5) * np.array([1.0, 0.8, 0.6]),
                    hair_long=float(rng.random() < 0.4),
                    stride_m=rng.uniform(-0.08, 0.12),
                )
                o["width_m"] = 0.6
                o["top_m"] = o["height_m"]
            else:
                vtype = str(rng.choice(["car", "car", "car", "van", "bus", "truck"]))
                length, width, height = _VEHICLES[vtype]
                # vehicles drive along the nearest street, in either direction
                street_dir = 0.0 if abs(float(oy[0])) <= abs(float(ox[0])) else math.pi / 2
                heading = street_dir + math.pi * float(rng.integers(2)) + rng.normal(0, 0.05)
                view = math.atan2(pos[1] - cam[1], pos[0] - cam[0])
                rel = heading - view
                apparent = length * abs(math.sin(rel)) + width * abs(math.cos(rel))
                o.update(
                    type=vtype,
                    side_view=abs(math.sin(rel)) > 0.55,
                    front_sign=1.0 if math.sin(rel) < 0 else -1.0,
                    apparent_w_m=apparent,
                    paint_rgb=rng.uniform(0.05, 0.95, 3) * rng.uniform(0.5, 1.0),
                    box_rgb=rng.uniform(0.6, 0.95) * np.ones(3),
                )
                o["width_m"] = apparent
                o["top_m"] = height
            objects.append(o)
    return objects


def _draw_objects(rgb: np.ndarray, labels: np.ndarray, zbuf: np.ndarray, objects: list[dict[str, Any]],
                  cfg: CityConfig, focal_px: float, xs: np.ndarray, ys: np.ndarray, lt: Lighting) -> None:
    """Billboard sprites standing on the ground, z-tested against facades, ground and each other."""
    hc = cfg.camera_height_m
    h_px, w_px = labels.shape
    x0_px = w_px / 2
    y0_px = cfg.horizon_frac * h_px
    shade = lt.ambient + 0.6 * lt.sun
    for o in sorted(objects, key=lambda o: -o["z"]):  # far to near
        z = o["z"]
        cx = x0_px + focal_px * o["x"] / z
        half_w = focal_px * o["width_m"] / 2 / z
        top = y0_px + focal_px * (hc - o["top_m"]) / z
        base = y0_px + focal_px * hc / z
        c0, c1 = max(int(math.floor(cx - half_w)), 0), min(int(math.ceil(cx + half_w)), w_px)
        r0, r1 = max(int(math.floor(top)), 0), min(int(math.ceil(base)), h_px)
        if c0 >= c1 or r0 >= r1:
            continue
        mx = xs[None, c0:c1] * z / focal_px - o["x"]  # metres right of the object's centre
        my = hc - ys[r0:r1, None] * z / focal_px  # metres above the ground at the object's depth
        mx, my = np.broadcast_to(mx, (r1 - r0, c1 - c0)), np.broadcast_to(my, (r1 - r0, c1 - c0))
        if o["kind"] == "person":
            mask, col = _person_sprite(mx, my, o)
            label = PERSON
        else:
            mask, col = _vehicle_sprite(mx, my, o)
            label = VEHICLE
        mask = mask & (z < zbuf[r0:r1, c0:c1])
        if not mask.any():
            continue
        _paint(rgb[:, r0:r1, c0:c1], mask, np.moveaxis(col, -1, 0) * shade)
        labels[r0:r1, c0:c1][mask] = label
        zbuf[r0:r1, c0:c1][mask] = z


def render_view(
    world: World,
    textures: TextureBank,
    cfg: CityConfig,
    cam_xy: Sequence[float] | np.ndarray,
    yaw_rad: float,
    lighting: Lighting | None = None,
    rng: np.random.Generator | None = None,
    *,
    with_objects: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one street-level view before sensor effects.

    The camera stands at ``cam_xy`` (local metres), ``cfg.camera_height_m`` above the ground, looking
    horizontally along ``yaw_rad`` (counter-clockwise from east); the horizon is at ``cfg.horizon_frac``
    of the image height (a shifted lens: verticals stay vertical). A facade at depth z spanning heights
    [0, H] covers the rows whose offset y below the horizon satisfies (hc - H) f / z <= y <= hc f / z.

    Returns:
        rgb: (H, W, 3) float32 in [0, 1]; labels: (H, W) uint8 class ids (:data:`CLASSES`),
        with H, W = cfg.image_height_px, cfg.image_width_px.
    """
    lt = lighting if lighting is not None else Lighting()
    rng = rng if rng is not None else np.random.default_rng(0)
    w_px, h_px, focal_px, xs, ys = _camera_grid(cfg)
    hc = cfg.camera_height_m
    cam = np.asarray(cam_xy, dtype=np.float64)
    fwd = np.array([math.cos(yaw_rad), math.sin(yaw_rad)])
    right = np.array([math.sin(yaw_rad), -math.cos(yaw_rad)])
    tan_half = math.tan(math.radians(cfg.hfov_deg) / 2)
    haze = (np.asarray(lt.sky_horizon) * 0.95).astype(np.float32)[:, None, None]

    rgb = np.empty((3, h_px, w_px), dtype=np.float32)  # channel-first while rendering (fast masked copies)
    labels = np.empty((h_px, w_px), dtype=np.uint8)
    zbuf = np.empty((h_px, w_px), dtype=np.float32)
    r_h = int(np.searchsorted(ys, 0.0, side="right"))  # first row below the horizon

    # facades: one ray per column, the height on the facade per row
    cand = _visible_segments(world, cam, fwd, right, tan_half, cfg.view_distance_m)
    depth, seg_local, s = raycast_facades(cam, yaw_rad, world.seg_p0[cand], world.seg_p1[cand], xs / focal_px,
                                          cfg.view_distance_m)
    hit = seg_local >= 0
    facade = np.zeros((h_px, w_px), dtype=bool)
    if hit.any():
        seg = np.where(hit, cand[np.maximum(seg_local, 0)], 0)
        bld = world.seg_building[seg]
        z_col = np.where(hit, depth, 1.0)
        v = (hc - ys[:, None] * (z_col / focal_px)[None, :]).astype(np.float32)  # height seen by each pixel
        top = np.where(hit, world.bld["height_m"][bld], -1.0)
        facade = hit[None, :] & (v >= 0) & (v <= top[None, :])
    # sky and ground only where some pixel of the row is not covered by a facade
    open_rows = np.nonzero(~facade.all(axis=1))[0]
    sky_end = int(open_rows[open_rows < r_h].max() + 1) if (open_rows < r_h).any() else 0
    ground_start = int(open_rows[open_rows >= r_h].min()) if (open_rows >= r_h).any() else h_px

    # sky above the horizon
    if sky_end > 0:
        elev = np.arctan2(-ys[:sky_end], focal_px)
        azimuth = yaw_rad - np.arctan2(xs, focal_px)
        rgb[:, :sky_end] = _sky_colour(textures, elev, azimuth, lt)
        labels[:sky_end] = SKY
        zbuf[:sky_end] = np.inf
    # ground below the horizon: a pixel's ray meets the ground plane at depth hc * f / y
    if ground_start < h_px:
        zg = hc * focal_px / ys[ground_start:]
        ray_x = fwd[0] + xs / focal_px * right[0]
        ray_y = fwd[1] + xs / focal_px * right[1]
        gx = cam[0] + zg[:, None] * ray_x[None, :]
        gy = cam[1] + zg[:, None] * ray_y[None, :]
        col, lab = _ground_colour(world, textures, gx, gy, zg, focal_px)
        fog = (1.0 - np.exp(-zg / cfg.fog_distance_m)).astype(np.float32)[None, :, None]
        light = np.float32(lt.ambient + lt.sun * math.sin(lt.sun_elevation_rad))
        rgb[:, ground_start:] = col * (light * (1 - fog)) + haze * fog
        labels[ground_start:] = lab
        zbuf[ground_start:] = zg[:, None]

    if facade.any():
        rows = np.nonzero(facade.any(axis=1))[0]
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        u_col = world.seg_u0[seg] + s * world.seg_len[seg]
        col = _facade_colour(world, textures, bld, u_col, z_col, v[r0:r1], focal_px, lt)
        sun_dir = np.array([math.cos(lt.sun_azimuth_rad), math.sin(lt.sun_azimuth_rad)])
        lambert = np.maximum(world.seg_normal[seg] @ sun_dir, 0.0) * math.cos(lt.sun_elevation_rad)
        fog = 1.0 - np.exp(-z_col / cfg.fog_distance_m)
        col *= ((lt.ambient + lt.sun * 1.2 * lambert) * (1 - fog)).astype(np.float32)[None, None, :]
        col += haze * fog.astype(np.float32)[None, None, :]
        mask = facade[r0:r1]
        _paint(rgb[:, r0:r1], mask, col)
        np.putmask(labels[r0:r1], mask, BUILDING)
        np.copyto(zbuf[r0:r1], z_col.astype(np.float32)[None, :], where=mask)

    if with_objects:
        objects = _sample_objects(world, cfg, cam, fwd, right, rng)
        _draw_objects(rgb, labels, zbuf, objects, cfg, focal_px, xs, ys, lt)

    k = cfg.supersample
    if k > 1:
        h, w = cfg.image_height_px, cfg.image_width_px
        acc = np.zeros((3, h, w), dtype=np.float32)
        for i in range(k):  # box filter as strided adds: much faster than reshape(...).mean here
            for j in range(k):
                acc += rgb[:, i::k, j::k]
        rgb = acc * np.float32(1.0 / (k * k))
        labels = labels[k // 2::k, k // 2::k]  # the label of the sample nearest each output pixel's centre
    out = np.clip(np.moveaxis(rgb, 0, -1), 0, 1)
    return np.ascontiguousarray(out, dtype=np.float32), np.ascontiguousarray(labels)


def _sensor(rgb: np.ndarray, lt: Lighting, rng: np.random.Generator) -> np.ndarray:
    """Exposure, tone curve, colour cast, blur and noise: (H, W, 3) float -> uint8."""
    # tone curve through a 1024-entry table (np.power per pixel costs more than the whole rest)
    curve = np.linspace(0.0, 1.0, 1024, dtype=np.float32) ** np.float32(lt.gamma)
    img = curve[(np.clip(rgb, 0, 1) * 1023 + 0.5).astype(np.int32)]
    img *= np.float32(lt.gain) * np.asarray(lt.cast, dtype=np.float32)
    if lt.blur_px > 0.05:
        img = ndimage.gaussian_filter(img, sigma=(lt.blur_px, lt.blur_px, 0))
    if lt.noise_std > 0:  # luminance noise, one draw per pixel
        img += np.float32(lt.noise_std / 255.0) * rng.standard_normal(img.shape[:2] + (1,), dtype=np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# =========================================================================================================
# The city: planning, writing, manifest
# =========================================================================================================


@dataclass
class _Plan:
    districts: list[District]
    db_poses: list[np.ndarray]  # per split (N, 3): x, y, yaw (local)
    db_names: list[list[str]]
    q_poses: list[np.ndarray]
    q_names: list[list[str]]


def _image_name(index: int, yaw_index: int) -> str:
    # Pittsburgh style: folder = index // 1000, "<index:06d>_pitch1_yaw<k>.jpg"
    return f"{index // 1000:03d}/{index:06d}_pitch1_yaw{yaw_index}.jpg"


def _plan_city(cfg: CityConfig, seed: int, textures: TextureBank) -> _Plan:
    districts, db_poses, db_names, q_poses, q_names = [], [], [], [], []
    x_offset = 0.0
    place_base = query_base = 0
    for split_idx, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, split_idx, 101])
        n_db, n_q = cfg.split_counts(split)
        n_places = -(-n_db // cfg.db_headings)
        origin = (UTM_ORIGIN_M[0] + x_offset, UTM_ORIGIN_M[1])
        district = _make_district(cfg, textures, rng, n_places, origin)
        districts.append(district)
        x_offset += district.width_m + cfg.district_gap_m

        base_yaw = district.place_dir + math.radians(cfg.heading_offset_deg)
        poses, names = [], []
        for p in range(n_places):
            for k in range(cfg.db_headings):
                if len(poses) == n_db:
                    break
                yaw = base_yaw[p] + 2 * math.pi * k / cfg.db_headings
                yaw += math.radians(rng.uniform(-1, 1) * cfg.db_heading_jitter_deg)
                poses.append((*district.place_xy[p], yaw))
                names.append(_image_name(place_base + p, k + 1))
        db_poses.append(np.asarray(poses))
        db_names.append(names)
        place_base += n_places

        # queries: near a database place, with another heading near one of its database headings
        street_half = cfg.road_half_width_m + cfg.sidewalk_width_m
        max_gt_m = 10.0 if split == "train" else 25.0  # non-trivial positive radius / evaluation radius
        place_xy = district.place_xy
        poses, names = [], []
        for qi in range(n_q):
            for _try in range(50):
                p = int(rng.integers(n_places))
                direction = district.place_dir[p]
                along = np.array([math.cos(direction), math.sin(direction)])
                normal = np.array([math.sin(direction), -math.cos(direction)])
                centre = place_xy[p] - cfg.db_lateral_m * normal  # back onto the centre line
                across = float(np.clip(rng.uniform(-1, 1) * cfg.query_offset_across_m,
                                       -(street_half - 0.7), street_half - 0.7))
                q = centre + rng.uniform(-1, 1) * cfg.query_offset_along_m * along + across * normal
                if np.min(np.hypot(*(place_xy - q).T)) < max_gt_m - 0.5:
                    break
            k = int(rng.integers(cfg.db_headings))
            yaw = base_yaw[p] + 2 * math.pi * k / cfg.db_headings
            yaw += math.radians(rng.uniform(-1, 1) * cfg.query_yaw_jitter_deg)
            poses.append((q[0], q[1], yaw))
            names.append(_image_name(query_base + qi, k + 1))
        q_poses.append(np.asarray(poses).reshape(-1, 3))
        q_names.append(names)
        query_base += n_q
    return _Plan(districts, db_poses, db_names, q_poses, q_names)


def _labels_path(image_path: Path) -> Path:
    return image_path.with_name(image_path.stem + "_labels.png")


def _render_task(state: dict[str, Any], task: tuple) -> None:
    split_idx, kind, index, x, y, yaw, rel = task
    cfg, seed = state["cfg"], state["seed"]
    rng = np.random.default_rng([seed, split_idx, kind, index, 202])
    lt = draw_lighting(cfg, rng, is_query=kind == 1)
    rgb, labels = render_view(state["worlds"][split_idx], state["textures"], cfg, (x, y), yaw, lt, rng)
    img = _sensor(rgb, lt, rng)
    path = state["root"] / rel
    Image.fromarray(img).save(path, format="JPEG", quality=lt.jpeg_quality)
    Image.fromarray(labels).save(_labels_path(path), format="PNG")


_WORKER_STATE: dict[str, Any] = {}  # per worker process only, set by the pool initializer


def _worker_init(state: dict[str, Any]) -> None:
    _WORKER_STATE.clear()
    _WORKER_STATE.update(state)


def _worker_run(tasks: list[tuple]) -> int:
    for task in tasks:
        _render_task(_WORKER_STATE, task)
    return len(tasks)


def _manifest(cfg: CityConfig, seed: int) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "generator": "vpr.data.synthetic", "seed": int(seed),
            "config": dataclasses.asdict(cfg)}


def _is_complete(root: Path, cfg: CityConfig, seed: int) -> bool:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    expected = json.loads(json.dumps(_manifest(cfg, seed)))
    same = all(manifest.get(k) == expected[k] for k in ("format_version", "seed", "config"))
    return same and all((root / "datasets" / f"{DATASET_NAME}_{s}.mat").is_file() for s in SPLITS)


def generate_city(
    out_dir: str | os.PathLike,
    preset: str | CityConfig = "default",
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
    force: bool = False,
) -> Path:
    """Generate the synthetic city under ``out_dir`` (idempotent) and return its root.

    If ``out_dir/city.json`` already records the same format version, config and seed, nothing is done.
    Otherwise (no manifest: a partial or foreign folder; or another config) the city is (re)written and the
    manifest is written last. ``workers`` (default: up to 2 CPUs) does not change the output.
    """
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    if not isinstance(cfg, CityConfig):
        raise TypeError(f"generate_city: preset must be a name in {PRESETS} or a CityConfig, got {type(cfg)}")
    cfg.validate()
    root = Path(out_dir)
    if not force and _is_complete(root, cfg, seed):
        return root
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_NAME).unlink(missing_ok=True)  # an interrupted run must not look complete

    textures = build_textures(seed)
    plan = _plan_city(cfg, seed, textures)
    tasks = []
    for split_idx in range(len(SPLITS)):
        for kind, poses, names, prefix in ((0, plan.db_poses, plan.db_names, ""),
                                           (1, plan.q_poses, plan.q_names, "queries_real/")):
            for i, (pose, name) in enumerate(zip(poses[split_idx], names[split_idx])):
                tasks.append((split_idx, kind, i, float(pose[0]), float(pose[1]), float(pose[2]), prefix + name))
    for folder in sorted({str(Path(t[-1]).parent) for t in tasks}):
        (root / folder).mkdir(parents=True, exist_ok=True)

    state = {"cfg": cfg, "seed": seed, "root": root, "textures": textures,
             "worlds": [d.world for d in plan.districts]}
    if workers is None:  # a pool costs more than it saves on a few images
        workers = min(2, os.cpu_count() or 1) if len(tasks) >= 64 else 1
    n_workers = max(1, int(workers))
    _run_tasks(tasks, state, n_workers, progress)

    for split_idx, split in enumerate(SPLITS):
        origin = np.asarray(plan.districts[split_idx].world.origin_utm)
        save_dbstruct(
            root / "datasets" / f"{DATASET_NAME}_{split}.mat",
            DbStruct(
                which_set=split,
                db_image=plan.db_names[split_idx],
                utm_db=plan.db_poses[split_idx][:, :2] + origin,
                q_image=plan.q_names[split_idx],
                utm_q=plan.q_poses[split_idx][:, :2] + origin,
                pos_dist_thr=25.0,
                pos_dist_sq_thr=625.0,
                non_triv_pos_dist_sq_thr=100.0,
            ),
        )
    write_text_atomic(root / "classes.json", json.dumps({str(k): v for k, v in CLASSES.items()}, indent=1))
    write_text_atomic(root / MANIFEST_NAME, json.dumps(_manifest(cfg, seed), indent=1))  # last: "complete"
    return root


ensure_city = generate_city


def _run_tasks(tasks: list[tuple], state: dict[str, Any], n_workers: int, progress: bool) -> None:
    from tqdm import tqdm

    if n_workers <= 1:
        with tqdm(total=len(tasks), desc="synthetic city", unit="img", disable=not progress, file=sys.stderr) as bar:
            for task in tasks:
                _render_task(state, task)
                bar.update(1)
        return
    chunk = 16
    chunks = [tasks[i:i + chunk] for i in range(0, len(tasks), chunk)]
    # fork: workers inherit the state without pickling or re-importing the caller's __main__ (train.py
    # would import torch again). The pool is started before tqdm starts its monitor thread.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(n_workers, initializer=_worker_init, initargs=(state,)) as pool:
        with tqdm(total=len(tasks), desc="synthetic city", unit="img", disable=not progress, file=sys.stderr) as bar:
            for done in pool.imap_unordered(_worker_run, chunks):
                bar.update(done)


# =========================================================================================================
# Preview and CLI
# =========================================================================================================


def colourise_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 class ids -> (H, W, 3) uint8 colours (CLASS_COLOURS)."""
    return CLASS_COLOURS[np.clip(labels, 0, len(CLASS_COLOURS) - 1)]


def make_preview(root: str | os.PathLike, out_path: str | os.PathLike, split: str = "train", pairs: int = 4,
                 scale: int = 2) -> Path:
    """Contact sheet: rows of [query | nearest database image with the same yaw index | their label maps]."""
    root = Path(root)
    s = load_dbstruct(root / "datasets" / f"{DATASET_NAME}_{split}.mat")
    if s.num_q == 0:
        raise ValueError(f"make_preview: split {split!r} of {root} has no queries")
    rows = []
    picks = np.linspace(0, s.num_q - 1, pairs).astype(int)
    for qi in picks:
        q_name = s.q_image[qi]
        yaw_tag = q_name.rsplit("_", 1)[-1]
        dist = np.hypot(*(s.utm_db - s.utm_q[qi]).T)
        same_yaw = np.array([n.endswith(yaw_tag) for n in s.db_image])
        di = int(np.argmin(np.where(same_yaw, dist, np.inf)))
        q_path = root / "queries_real" / q_name
        d_path = root / s.db_image[di]
        tiles = [np.asarray(Image.open(q_path).convert("RGB")), np.asarray(Image.open(d_path).convert("RGB")),
                 colourise_labels(np.asarray(Image.open(_labels_path(q_path)))),
                 colourise_labels(np.asarray(Image.open(_labels_path(d_path))))]
        gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1))
    hgap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    sheet = np.concatenate([x for r in rows for x in (r, hgap)][:-1], axis=0)
    img = Image.fromarray(sheet)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path)
    return out_path


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vpr.data.synthetic",
        description="Generate the synthetic city in Pittsburgh's layout (idempotent: an existing complete "
        "city with the same preset and seed is kept).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output dataset root")
    parser.add_argument("--preset", default="default", choices=PRESETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the city is complete")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--preview", type=Path, default=None, help="also write a contact-sheet PNG here")
    args = parser.parse_args(list(argv) if argv is not None else None)
    start = time.perf_counter()
    root = generate_city(args.out, args.preset, seed=args.seed, progress=not args.quiet, workers=args.workers,
                         force=args.force)
    print(f"synthetic city ({args.preset}, seed {args.seed}) ready at {root} in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.preview is not None:
        print(f"preview: {make_preview(root, args.preview)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
