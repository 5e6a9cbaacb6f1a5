"""Wrong settings and missing files end with one clear message and a non-zero exit, no traceback."""

from __future__ import annotations

from tests.conftest import run_script


def assert_clean_failure(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert "Traceback" not in err, err[-3000:]
    for f in fragments:
        assert f in err, err[-3000:]


def test_missing_dataset_root(tmp_path):
    proc = run_script("eval.py", "data=pittsburgh", f"data.root={tmp_path}/nowhere", f"hydra.run.dir={tmp_path}/r",
                      tmp=tmp_path, check=False)
    assert_clean_failure(proc, "nowhere", "does not exist", "data.root")


def test_unset_dataset_root(tmp_path):
    proc = run_script("eval.py", "data=pittsburgh", f"hydra.run.dir={tmp_path}/r", tmp=tmp_path, check=False)
    assert_clean_failure(proc, "data.root", "VPR_PITTSBURGH_ROOT")


def test_missing_split_file(tmp_path):
    (tmp_path / "root" / "datasets").mkdir(parents=True)
    proc = run_script("eval.py", "data=pittsburgh", f"data.root={tmp_path}/root", f"hydra.run.dir={tmp_path}/r",
                      tmp=tmp_path, check=False)
    assert_clean_failure(proc, "pitts30k_test.mat", "not found")


def test_missing_centroid_file_names_the_command(data_dir, tmp_path):
    proc = run_script(
        "train.py", "experiment=city_baseline", "data.prepare.preset=tiny", f"paths.data_dir={data_dir}",
        f"paths.centroids_dir={tmp_path}/none", "cluster.auto=false", "logger=none", f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path, check=False,
    )
    assert_clean_failure(proc, "centroid file", "python cluster.py")


def test_unknown_config_choice(tmp_path):
    proc = run_script("train.py", "attention=nonexistent", f"hydra.run.dir={tmp_path}/r", tmp=tmp_path, check=False)
    assert_clean_failure(proc, "attention/nonexistent", "Available options")
