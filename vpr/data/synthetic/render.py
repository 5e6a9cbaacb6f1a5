"""Rendering of the synthetic city: the facade ray caster, facade / ground / sky colours, people and
vehicle sprites, :func:`render_view` and the sensor model (exposure, blur, noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from vpr.data.synthetic.config import (
    BUILDING,
    PERSON,
    ROAD,
    SIDEWALK,
    SKY,
    VEGETATION,
    VEHICLE,
    CityConfig,
)
from vpr.data.synthetic.textures import _POSTER_PX, _SIGN_SHAPE, TextureBank
from vpr.data.synthetic.world import Lighting, World


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


def _visible_segments(
    world: World, cam: np.ndarray, fwd: np.ndarray, right: np.ndarray, tan_half: float, max_dist_m: float
) -> np.ndarray:
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


def _facade_colour(
    world: World,
    tex: TextureBank,
    b: np.ndarray,
    u: np.ndarray,
    z: np.ndarray,
    v: np.ndarray,
    focal_px: float,
    lt: Lighting,
) -> np.ndarray:
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


def _ground_colour(
    world: World, tex: TextureBank, gx: np.ndarray, gy: np.ndarray, z_rows: np.ndarray, focal_px: float
) -> tuple[np.ndarray, np.ndarray]:
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
        cabin = (
            (my >= body_top) & (my < height) & (np.abs(mx) < half - 0.15)
            if o["type"] == "car"
            else (np.zeros_like(body))
        )
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


def _sample_objects(
    world: World, cfg: CityConfig, cam: np.ndarray, fwd: np.ndarray, right: np.ndarray, rng: np.random.Generator
) -> list[dict[str, Any]]:
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
            ox, oy = oxs[first : first + 1], oys[first : first + 1]
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


def _draw_objects(
    rgb: np.ndarray,
    labels: np.ndarray,
    zbuf: np.ndarray,
    objects: list[dict[str, Any]],
    cfg: CityConfig,
    focal_px: float,
    xs: np.ndarray,
    ys: np.ndarray,
    lt: Lighting,
) -> None:
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
    depth, seg_local, s = raycast_facades(
        cam, yaw_rad, world.seg_p0[cand], world.seg_p1[cand], xs / focal_px, cfg.view_distance_m
    )
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
        labels = labels[k // 2 :: k, k // 2 :: k]  # the label of the sample nearest each output pixel's centre
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
