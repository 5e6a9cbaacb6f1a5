"""A procedural city written in Pittsburgh's on-disk layout, for tests, smoke runs and GPU benchmarks.

``python -m vpr.data.synthetic --out DIR --preset tiny|default|bench|large[-occlusion-low|-occlusion-high] [--seed N]`` writes::

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

Modules (imports flow one way, top to bottom; none imports torch):

- :mod:`~vpr.data.synthetic.config`: :class:`CityConfig`, the presets, class ids and other constants.
- :mod:`~vpr.data.synthetic.textures`: :class:`TextureBank` and :func:`build_textures`.
- :mod:`~vpr.data.synthetic.world`: :class:`World`, districts and streets, :class:`Lighting`.
- :mod:`~vpr.data.synthetic.render`: :func:`raycast_facades`, :func:`render_view`, sprites, the sensor.
- :mod:`~vpr.data.synthetic.writer`: planning, rendering workers, the manifest, :func:`generate_city`.
- :mod:`~vpr.data.synthetic.preview`: :func:`colourise_labels`, :func:`make_preview`.
- :mod:`~vpr.data.synthetic.cli`: :func:`main`, run by ``python -m vpr.data.synthetic``.
"""

from __future__ import annotations

from vpr.data.synthetic.cli import main
from vpr.data.synthetic.config import CLASSES, FORMAT_VERSION, PRESETS, SPLITS, CityConfig, get_preset
from vpr.data.synthetic.preview import make_preview
from vpr.data.synthetic.render import raycast_facades, render_view
from vpr.data.synthetic.textures import TextureBank, build_textures
from vpr.data.synthetic.world import Lighting, World, build_world, draw_lighting
from vpr.data.synthetic.writer import ensure_city, generate_city

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
