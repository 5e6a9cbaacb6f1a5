"""cluster.exclude_groups: NetVLAD's k-means sample leaves out the feature cells that guidance groups cover.

The dataset is Pittsburgh's layout written from the format's description (tests/data/spec_files.py), with label maps
of Cityscapes train ids written here with PIL under a guidance.mask_dir. The backbone names every location: the
descriptor at cell (r, c) of its 3 x 4 map is the unit vector e_(4r + c), so each sampled descriptor says which cell
it came from. The cells an image may give are computed here by counting label pixels, not by the project's code.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from tests.conftest import compose_script, run_script
from tests.data.spec_files import pittsburgh_like, spec_fields, write_v5

EXCLUDED_IDS = [11, 12, 13, 14, 15, 16, 17, 18]  # Cityscapes person, rider, car .. bicycle
OTHER_IDS = [0, 2, 8, 10]  # road, building, vegetation, sky (sky is a guidance group, not excluded here)
H, W, STRIDE = 48, 64, 16  # images and label maps; a 3 x 4 feature grid
PER_IMAGE = 5


class CellCode(nn.Module):
    """(B, h*w, h, w) maps for stride-16 images whose location (r, c) holds e_(r*w + c)."""

    tag = "cellcode"
    pretrained = True  # the file's seed is cluster.seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // STRIDE, x.shape[-1] // STRIDE
        return torch.eye(h * w).reshape(h * w, h, w).expand(x.shape[0], -1, -1, -1)


def quarter_labels(excluded_quarters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A (48, 64) label map: cell (r, c) has excluded_quarters[r, c] of its four 8x8 quarters in excluded classes."""
    labels = np.zeros((H, W), dtype=np.uint8)
    for r in range(H // STRIDE):
        for c in range(W // STRIDE):
            quarters = rng.permutation(4)[: excluded_quarters[r, c]]
            for q in range(4):
                ids = EXCLUDED_IDS if q in quarters else OTHER_IDS
                y, x = r * STRIDE + 8 * (q // 2), c * STRIDE + 8 * (q % 2)
                labels[y : y + 8, x : x + 8] = rng.choice(ids)
    return labels


def cells_mostly_free(labels: np.ndarray) -> set[int]:
    """The cells (r * 4 + c) whose pixels are at least half outside the excluded classes, counted pixel by pixel."""
    free = set()
    for r in range(H // STRIDE):
        for c in range(W // STRIDE):
            block = labels[r * STRIDE : (r + 1) * STRIDE, c * STRIDE : (c + 1) * STRIDE]
            kept = sum(1 for v in block.reshape(-1) if int(v) not in EXCLUDED_IDS)
            if 2 * kept >= block.size:
                free.add(r * (W // STRIDE) + c)
    return free


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """12 training database images (4 places x 3) with label maps; image 0 has 3 free cells, one of them exactly
    half covered, image 1 none, image 2 all twelve, the others random coverings."""
    root = tmp_path_factory.mktemp("pitts")
    spec = pittsburgh_like(root / "data", name="pitts30k", split="train", num_places=4)
    rng = np.random.default_rng(7)
    free = []
    for j, name in enumerate(spec.db_names):
        if j == 0:
            quarters = np.array([[0, 2, 3, 4], [4, 4, 3, 4], [4, 1, 4, 4]])
        elif j == 1:
            quarters = np.full((3, 4), 3)
        elif j == 2:
            quarters = np.zeros((3, 4), dtype=int)
        else:
            quarters = rng.integers(0, 5, size=(3, 4))
        labels = quarter_labels(quarters, rng)
        path = (root / "masks" / name).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels, mode="L").save(path)
        free.append(cells_mostly_free(labels))
    assert free[0] == {0, 1, 9} and free[1] == set() and len(free[2]) == 12  # the cases the tests rely on
    return root, spec, free


def config(root: Path, *overrides: str):
    return compose_script(
        "cluster",
        "data=pitts30k",
        f"data.root={root / 'data'}",
        "data.image_size=[48,64]",
        "data.num_workers=0",
        "data.eval_batch_size=5",  # batches end inside the list of images
        "guidance=mask_dir",
        f"guidance.mask_dir={root / 'masks'}",
        f"guidance.cache_dir={root / 'guidance'}",
        f"paths.centroids_dir={root / 'centroids'}",
        f"paths.data_dir={root}",
        "cluster.images=100",  # more than the 12 database images: every one, in database order
        f"cluster.descriptors_per_image={PER_IMAGE}",
        "cluster.iterations=3",
        "trainer.accelerator=cpu",
        *overrides,
    )


def cluster(cfg):
    from vpr.build import build_datamodule, check_common_settings
    from vpr.centroids import centroid_path, cluster_and_save

    check_common_settings(cfg, trainer=False)
    backbone, head = CellCode(), SimpleNamespace(num_clusters=2)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    path = cluster_and_save(cfg, backbone, head, dm, centroid_path(cfg, backbone, head))
    with h5py.File(path) as f:
        cells = np.argmax(f["descriptors"][:], axis=1)
        return path, cells, dict(f.attrs)


def test_every_sampled_location_lies_in_a_cell_the_groups_cover_at_most_half_of(labelled, caplog):
    root, _, free = labelled
    with caplog.at_level(logging.INFO, logger="vpr.centroids"):
        path, cells, attrs = cluster(config(root, "cluster.exclude_groups=[vehicle,person]"))
    assert path.name == "cellcode_pitts30k_2_48x64_desc_cen_without-person+vehicle.hdf5"
    at, redrawn = 0, False
    for j, allowed in enumerate(free):
        n = min(PER_IMAGE, len(allowed))
        mine = cells[at : at + n].tolist()
        at += n
        assert set(mine) <= allowed and len(set(mine)) == n, (j, mine, allowed)
        if len(allowed) <= PER_IMAGE:
            assert set(mine) == allowed  # all of them: image 0's half-covered cell 1 too, none of image 1
        redrawn |= mine != sorted(allowed)[:n]
    assert at == len(cells) and redrawn  # every row accounted for; drawn at random, not the first cells
    fewer = sum(len(a) < PER_IMAGE for a in free)
    assert fewer >= 2
    assert attrs["exclude_groups"] == "person,vehicle" and attrs["guidance_source"] == "mask_dir"
    assert attrs["images_with_fewer_cells"] == fewer
    assert f"{fewer} of 12 images have fewer than {PER_IMAGE} such cells" in caplog.text


def test_without_excluded_groups_the_plain_file_is_as_it_always_was(labelled):
    """Same name, same attributes, and the locations of the documented draws: one generator seeded with
    cluster.seed picks the images (sorted), then each image's distinct locations, every location allowed."""
    root, _, _ = labelled
    path, cells, attrs = cluster(config(root))
    assert path.name == "cellcode_pitts30k_2_48x64_desc_cen.hdf5"
    assert set(attrs) == {
        "backbone",
        "backbone_fingerprint",
        "dataset",
        "database_fingerprint",
        "image_size",
        "num_clusters",
        "seed",
        "images",
        "descriptors_per_image",
        "iterations",
    }
    rng = np.random.default_rng(42)
    images = sorted(rng.choice(12, size=12, replace=False))
    expected = [c for _ in images for c in rng.choice(12, size=PER_IMAGE, replace=False)]
    assert cells.tolist() == expected


def test_no_image_with_a_free_cell_is_one_error_naming_the_setting(labelled, tmp_path):
    from vpr.errors import ConfigError

    root, spec, _ = labelled
    one = tmp_path / "one"  # a training database of image 1 alone, which has no free cell
    shutil.copytree(root, one, ignore=shutil.ignore_patterns("centroids", "guidance"))
    write_v5(
        one / "data" / "datasets" / "pitts30k_train.mat",
        spec_fields("train", spec.db_names[1:2], spec.utm_db[1:2], spec.q_names[:1], spec.utm_q[:1], 100.0),
    )
    cfg = config(one, "cluster.exclude_groups=[person,vehicle]")
    with pytest.raises(ConfigError, match=r"^cluster\.exclude_groups=\[person,vehicle\]: in none of the 1 sampled"):
        cluster(cfg)
    assert not (one / "centroids").exists() or not list((one / "centroids").iterdir())


def test_groups_without_a_guidance_or_not_a_list_are_refused_before_any_work():
    from vpr.build import check_common_settings
    from vpr.errors import ConfigError

    check_common_settings(compose_script("cluster", "guidance=none"), trainer=False)  # the default: []
    with pytest.raises(ConfigError, match=r"^cluster\.exclude_groups=\[person\] .*\(guidance=none\)"):
        check_common_settings(compose_script("cluster", "guidance=none", "cluster.exclude_groups=[person]"), False)
    with pytest.raises(ConfigError, match=r"^cluster\.exclude_groups='person': give a list"):
        check_common_settings(compose_script("cluster", "cluster.exclude_groups=person"), trainer=False)


def test_cluster_py_without_guidance_ends_with_one_error_line(tmp_path):
    proc = run_script(
        "cluster.py",
        "guidance=none",
        "cluster.exclude_groups=[person,vehicle]",
        f"paths.data_dir={tmp_path}/data",
        f"hydra.run.dir={tmp_path}/run",
        tmp=tmp_path,
        check=False,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: cluster.exclude_groups=")
    assert not (tmp_path / "data").exists()  # refused before the city is generated


def test_an_unknown_group_names_the_setting(labelled):
    from vpr.errors import ConfigError

    root, _, _ = labelled
    with pytest.raises(ConfigError, match=r"^cluster\.exclude_groups=\[tree\]: group 'tree' not in"):
        cluster(config(root, "cluster.exclude_groups=[tree]"))


def test_a_file_of_other_excluded_groups_is_used_with_a_warning(caplog, tmp_path):
    """Only a file named with cluster.file can differ in it (the name carries the groups); a file without the
    record sampled every location."""
    from vpr.centroids import check_clustering_settings

    def cfg(groups):
        return OmegaConf.create(
            {
                "seed": 1,
                "cluster": {"images": 5, "descriptors_per_image": 2, "iterations": 3, "exclude_groups": groups},
                "guidance": {"source": "synthetic"},
            }
        )

    plain = {"images": 5, "descriptors_per_image": 2, "iterations": 3, "seed": 1}
    excluded = {**plain, "exclude_groups": "person,vehicle"}
    net = nn.Conv2d(3, 4, 1)  # random weights: the run's seed
    with caplog.at_level("WARNING"):
        check_clustering_settings(tmp_path / "a.hdf5", plain, cfg([]), net)
        check_clustering_settings(tmp_path / "b.hdf5", excluded, cfg(["vehicle", "person"]), net)
        assert not caplog.records
        check_clustering_settings(tmp_path / "c.hdf5", excluded, cfg([]), net)
        check_clustering_settings(tmp_path / "d.hdf5", plain, cfg(["person"]), net)
    first, second = [r.getMessage() for r in caplog.records]
    assert "c.hdf5" in first and "exclude_groups [person,vehicle] (this run: [])" in first
    assert "d.hdf5" in second and "exclude_groups [] (this run: [person])" in second


def test_the_paper_deattention_recipes_cluster_without_person_and_vehicle():
    """The paper's de-attention rows start from centroids sampled off person and vehicle pixels (its clustering's
    default categories, also for the final model that suppresses sky); the city recipes keep the plain file."""
    for name in ("paper_deattention", "paper_deattention_stml"):
        assert list(compose_script("train", f"experiment={name}").cluster.exclude_groups) == ["person", "vehicle"]
    for name in ("paper_baseline", "city_deattention", "city_deattention_stml", "city_main"):
        assert list(compose_script("train", f"experiment={name}").cluster.exclude_groups) == []
