"""The world of the synthetic city: buildings (facade segments + appearance), streets, districts, and the
lighting ("time of capture") of each image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vpr.data.synthetic.config import UTM_ORIGIN_M, CityConfig
from vpr.data.synthetic.textures import TextureBank


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
                "win_rgb": np.clip(
                    rng.choice([[0.12, 0.15, 0.2], [0.35, 0.45, 0.55], [0.2, 0.22, 0.2]]) + rng.normal(0, 0.04, 3),
                    0.02,
                    0.9,
                ),
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
    out: dict[str, list] = {
        k: []
        for k in (
            "wall_rgb",
            "wall_tex",
            "wall_tile_m",
            "wall_amp",
            "floor_h_m",
            "win_dx_m",
            "win_off_m",
            "win_w",
            "win_h",
            "win_rgb",
            "frame_dark",
            "band",
            "band_rgb",
            "cornice_rgb",
        )
    }
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
    bld["poster_v_m"] = np.where(
        rng.random(n) < 0.5,
        rng.uniform(0.4, 1.0, n),
        rng.uniform(3.0, np.maximum(heights_m - bld["poster_h_m"] - 0.8, 3.1), n),
    )
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
    corners = np.stack(
        [np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1), np.stack([x0, y1], 1)], axis=1
    )  # (B, 4, 2)
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
            if len(xs) and len(ys)
            else (0.0, 0.0, 0.0, 0.0)
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


def _make_district(
    cfg: CityConfig, textures: TextureBank, rng: np.random.Generator, num_places: int, origin_utm: tuple[float, float]
) -> District:
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
        np.asarray(boxes),
        np.asarray(heights),
        cfg,
        textures,
        rng,
        front_faces=np.asarray(fronts),
        street_xs=xs,
        street_ys=ys,
        origin_utm=origin_utm,
    )
    return District(world=world, place_xy=place_xy, place_dir=place_dir, width_m=float(xs[-1]))


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
        jpeg_quality=int(rng.integers(cfg.query_jpeg_quality_min, cfg.jpeg_quality + 1))
        if is_query
        else cfg.jpeg_quality,
    )
