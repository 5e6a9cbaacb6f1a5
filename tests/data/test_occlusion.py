"""The city's occlusion knob: the share of the queries' views covered by people and vehicles, measured from the
label maps (read directly), rises from low to medium to high, while the database images stay the same."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vpr.data.synthetic import generate_city


def covered_share(root, folder):
    classes = {name: int(i) for i, name in json.loads((root / "classes.json").read_text()).items()}
    dynamic = [classes["person"], classes["vehicle"]]
    maps = sorted((root / folder).rglob("*_labels.png"))
    return float(np.mean([np.isin(np.asarray(Image.open(p)), dynamic).mean() for p in maps])), maps


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    out = {}
    for level in ("low", "medium", "high"):
        preset = "tiny" if level == "medium" else f"tiny-occlusion-{level}"
        out[level] = generate_city(tmp_path_factory.mktemp(level) / "city", preset, seed=0, progress=False)
    return out


def test_query_occlusion_levels_change_the_covered_share_of_the_queries(cities):
    shares = {level: covered_share(root, "queries_real")[0] for level, root in cities.items()}
    assert shares["low"] < shares["medium"] < shares["high"], shares
    assert shares["high"] > 2 * shares["medium"], shares


def test_database_images_are_the_same_at_every_level(cities):
    _, low = covered_share(cities["low"], "000")
    _, high = covered_share(cities["high"], "000")
    assert [p.name for p in low] == [p.name for p in high]
    for a, b in zip(low, high):
        assert a.read_bytes() == b.read_bytes()


def test_a_city_written_before_the_knob_existed_is_still_complete(cities):
    from vpr.data.synthetic.config import get_preset
    from vpr.data.synthetic.writer import MANIFEST_NAME, _is_complete

    root = cities["medium"]
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    del manifest["config"]["query_occlusion"]
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert _is_complete(root, get_preset("tiny"), 0)
    assert not _is_complete(root, get_preset("tiny-occlusion-high"), 0)
