"""Configuration of the synthetic city: :class:`CityConfig`, the presets and the shared constants.

Class ids and names (:data:`CLASSES`), their preview colours, the UTM-like origin, the manifest name and the
on-disk format version live here, so that every other module of the package reads them from one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from vpr.errors import ConfigError

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
    # How much of the queries' views dynamic objects cover (database images keep the settings above):
    # "medium" uses them as they are; "low" / "high" scale the queries' object counts and distances
    # (QUERY_OCCLUSION). Presets name it: "default-occlusion-high".
    query_occlusion: str = "medium"

    def query_objects(self) -> CityConfig:
        """This config with the queries' object settings (counts and distances scaled by ``query_occlusion``)."""
        count, distance = QUERY_OCCLUSION[self.query_occlusion]
        if (count, distance) == (1.0, 1.0):
            return self
        return dataclasses.replace(
            self,
            persons_per_image=self.persons_per_image * count,
            vehicles_per_image=self.vehicles_per_image * count,
            object_max_distance_m=max(self.object_min_distance_m + 1.0, self.object_max_distance_m * distance),
        )

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
        need(
            0 < self.query_jpeg_quality_min <= self.jpeg_quality, "query_jpeg_quality_min", "must be in 1..jpeg_quality"
        )
        need(self.object_min_distance_m < self.object_max_distance_m, "object_min_distance_m", "must be < max")
        need(self.query_occlusion in QUERY_OCCLUSION, "query_occlusion", f"must be one of {sorted(QUERY_OCCLUSION)}")


#: Query occlusion level -> (factor on the queries' person and vehicle counts, factor on their farthest distance:
#: nearer objects cover more of the view).
QUERY_OCCLUSION: dict[str, tuple[float, float]] = {"low": (0.3, 1.0), "medium": (1.0, 1.0), "high": (3.0, 0.5)}


def get_preset(name: str) -> CityConfig:
    """The named preset: "tiny" (tests, seconds), "default" (``make train``, < 60 s on 2 cores),
    "large" (640x480 at Pittsburgh 30k's sizes, for GPU runs), "bench" (640x480 at a fifth of the query and
    database counts: generated in about a minute on 16 cores, for short GPU checks); "<preset>-occlusion-low|high" is that preset
    with fewer / more dynamic objects in the queries (the database images are the same)."""
    base, _, level = name.partition("-occlusion-")
    if level:
        if level not in QUERY_OCCLUSION or base not in _SIZES:
            raise ConfigError(f"data.prepare.preset={name!r}: unknown synthetic city preset; choose one of {PRESETS}")
        return dataclasses.replace(get_preset(base), query_occlusion=level)
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
    if name == "bench":
        return dataclasses.replace(
            get_preset("large"),
            num_db_train=2000,
            num_q_train=1500,
            num_db_val=2000,
            num_q_val=1500,
            num_db_test=2000,
            num_q_test=1500,
        )
    raise ConfigError(f"data.prepare.preset={name!r}: unknown synthetic city preset; choose one of {PRESETS}")


_SIZES: tuple[str, ...] = ("tiny", "default", "bench", "large")
PRESETS: tuple[str, ...] = _SIZES + tuple(f"{b}-occlusion-{lv}" for b in _SIZES for lv in ("low", "high"))
