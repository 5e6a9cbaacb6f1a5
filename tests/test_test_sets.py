"""test_sets / pca_data entries: a data config composed on its own, the entry's settings merged in before the
config is resolved, so that what derives from them (a city's folder and tag) follows."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_script
from vpr.errors import ConfigError
from vpr.run.test_sets import resolve_test_sets


def run_config(tmp_path, entries):
    cfg = compose_script("eval", f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path / 'out'}")
    OmegaConf.set_struct(cfg, False)
    cfg.test_sets = entries
    return cfg


def test_a_city_entry_gets_the_folder_and_tag_of_its_own_preset(tmp_path):
    (city,) = resolve_test_sets(
        run_config(
            tmp_path, [{"data": "synthetic", "label": "low", "prepare": {"preset": "tiny-occlusion-low", "seed": 3}}]
        )
    )
    folder = str(tmp_path / "city_tiny-occlusion-low_seed3")  # configs/data/synthetic.yaml's naming, by hand
    assert city.label == "low"
    assert city.data.root == folder and city.data.prepare.out_dir == folder
    assert city.data.tag == "city-tiny-occlusion-low-seed3"
    assert city.data.prepare.preset == "tiny-occlusion-low" and city.data.prepare.seed == 3


def test_shared_settings_and_unknown_keys(tmp_path):
    (city,) = resolve_test_sets(run_config(tmp_path, ["synthetic"]), {"image_size": [48, 64]})
    assert list(city.data.image_size) == [48, 64] and city.data.root == str(tmp_path / "city_default_seed0")
    with pytest.raises(ConfigError, match=r"test_sets entry 'x': \['rooot'\] are not settings of data=synthetic"):
        resolve_test_sets(run_config(tmp_path, [{"data": "synthetic", "label": "x", "rooot": "/d"}]))


@pytest.mark.parametrize("label", ["untrained", "sets"])
def test_a_label_that_names_a_file_of_the_run_is_refused(label):
    from vpr.errors import ConfigError
    from vpr.run.test_sets import resolve_test_sets

    cfg = compose_script("eval", f"test_sets=[{{data:synthetic,label:{label}}}]")
    with pytest.raises(ConfigError, match=f"results_{label}.json, a file of the run itself"):
        resolve_test_sets(cfg)
