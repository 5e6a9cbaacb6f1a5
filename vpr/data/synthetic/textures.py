"""Textures of the synthetic city: wall, ground, sign, poster and cloud atlases (:class:`TextureBank`).

Walls and ground are built from the photos bundled with scikit-image plus procedural patterns; no download.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

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

    names = (
        "brick",
        "gravel",
        "grass",
        "moon",
        "text",
        "page",
        "camera",
        "coins",
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "colorwheel",
        "retina",
        "logo",
    )
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
            crop = _resize(a[y0 : y0 + ch, x0 : x0 + cw], _SIGN_SHAPE)
            lo, hi = np.percentile(crop, 5), np.percentile(crop, 95)
            signs.append(np.clip((crop - lo) / (hi - lo + 1e-6), 0, 1))
    # posters: colour crops of the bundled photographs
    posters = []
    for name in (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "colorwheel",
        "retina",
        "logo",
        "camera",
    ):
        a = images[name]
        if a.ndim == 2:  # tint grey images so that they still differ in colour
            a = np.stack([a, a * 0.8, a * 0.6], axis=2).astype(np.uint8)
        a = a[..., :3]
        h, w = a.shape[:2]
        for _ in range(4):
            c = int(rng.integers(min(h, w) // 3, min(h, w)))
            y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            posters.append(_resize(a[y0 : y0 + c, x0 : x0 + c], (_POSTER_PX, _POSTER_PX)))
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
