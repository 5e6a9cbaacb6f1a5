"""Wrong settings and missing files end with one clear message and a non-zero exit, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import run_script, run_script_hiding


def assert_clean_failure(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert "Traceback" not in err, err[-3000:]
    for f in fragments:
        assert f in err, err[-3000:]


def test_missing_dataset_root(tmp_path):
    proc = run_script(
        "eval.py",
        "data=pittsburgh",
        f"data.root={tmp_path}/nowhere",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "nowhere", "does not exist", "data.root")
    # the run's own log ends with the same message (a sweep's or a cluster job's log says why it stopped)
    assert "does not exist (setting data.root)" in (tmp_path / "r" / "eval.log").read_text().splitlines()[-1]


def test_unset_dataset_root(tmp_path):
    proc = run_script("eval.py", "data=pittsburgh", f"hydra.run.dir={tmp_path}/r", tmp=tmp_path, check=False)
    assert_clean_failure(proc, "data.root", "VPR_PITTSBURGH_ROOT")


def test_missing_split_file(tmp_path):
    (tmp_path / "root" / "datasets").mkdir(parents=True)
    proc = run_script(
        "eval.py",
        "data=pittsburgh",
        f"data.root={tmp_path}/root",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "pitts30k_test.mat", "not found")


def test_missing_centroid_file_names_the_command(data_dir, tmp_path):
    proc = run_script(
        "train.py",
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"paths.centroids_dir={tmp_path}/none",
        "cluster.auto=false",
        "logger=none",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "centroid file", "python cluster.py")


def test_unknown_config_choice(tmp_path):
    proc = run_script("train.py", "attention=nonexistent", f"hydra.run.dir={tmp_path}/r", tmp=tmp_path, check=False)
    assert_clean_failure(proc, "attention/nonexistent", "Available options")


def test_malformed_split_file_names_file_and_field(tmp_path):
    from tests.data.spec_files import pittsburgh_like

    ds = pittsburgh_like(tmp_path / "root", num_places=2)
    import scipy.io

    mat = tmp_path / "root" / "datasets" / "pitts30k_test.mat"
    record = scipy.io.loadmat(str(mat))["dbStruct"]
    fields = [f for f in record.dtype.names if f != "utmQ"]
    scipy.io.savemat(str(mat), {"dbStruct": {f: record[0, 0][f] for f in fields}})
    proc = run_script(
        "eval.py",
        "data=pitts30k",
        f"data.root={ds.root}",
        "head=gem",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "error:", "pitts30k_test.mat", "`utmQ`")
    assert sum(line.startswith("error:") for line in proc.stderr.splitlines()) == 1


def test_training_on_an_evaluation_only_dataset(tmp_path):
    from tests.data.spec_files import tokyo247_like

    ds = tokyo247_like(tmp_path / "tokyo", num_places=2)
    proc = run_script(
        "train.py",
        "data=tokyo247",
        f"data.root={ds.root}",
        "logger=none",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "tokyo247 has no train split", "evaluation-only", "test_sets")


def test_unknown_test_set(tmp_path):
    proc = run_script(
        "eval.py", "test_sets=[pitts30k,tokio247]", f"hydra.run.dir={tmp_path}/r", tmp=tmp_path, check=False
    )
    assert_clean_failure(proc, "no data config 'tokio247'", "tokyo247")


def test_missing_test_set_fails_before_training(data_dir, tmp_path):
    proc = run_script(
        "train.py",
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"test_sets=[{{data:tokyo247,root:'{tmp_path}/no_tokyo'}}]",
        "logger=none",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "no_tokyo", "does not exist")
    assert "cache pass" not in proc.stdout + proc.stderr  # nothing was trained


def test_wrong_component_setting_names_the_group(tmp_path):
    from tests.data.spec_files import pittsburgh_like

    ds = pittsburgh_like(tmp_path / "root", num_places=2)
    proc = run_script(
        "eval.py",
        "backbone=resnet18",
        "backbone.pretrained=false",
        "head.version=v9",
        f"hydra.run.dir={tmp_path}/r",
        "data=pitts30k",
        f"data.root={ds.root}",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "error: head (vpr.models.heads.netvlad.NetVLAD)", "version='v9'")
    assert "Error in call to target" not in proc.stderr


def test_malformed_numbers_are_named(data_dir, tmp_path):
    for setting, name in (
        ("data.batch_size=abc", "data.batch_size='abc'"),
        ("mining.refresh_every_queries=0", "mining.refresh_every_queries=0"),
    ):
        proc = run_script(
            "train.py",
            "data.prepare.preset=tiny",
            f"paths.data_dir={data_dir}",
            setting,
            "logger=none",
            f"hydra.run.dir={tmp_path}/r",
            tmp=tmp_path,
            check=False,
        )
        assert_clean_failure(proc, f"error: {name}: must be a whole number >= 1")


def test_synthetic_city_is_not_written_into_a_users_folder(tmp_path):
    import hashlib

    folder = tmp_path / "my_pittsburgh"
    (folder / "datasets").mkdir(parents=True)
    (folder / "datasets" / "pitts30k_train.mat").write_bytes(b"not really a mat file")
    (folder / "000").mkdir()
    (folder / "000" / "000000_pitch1_yaw1.jpg").write_bytes(b"\xff\xd8 an image")

    def digest():
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    before = digest()
    proc = run_script(
        "train.py",
        "data=synthetic",
        f"data.root={folder}",
        "logger=none",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "refusing to write the synthetic city into", "my_pittsburgh", "data=pitts30k")
    assert digest() == before


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
@pytest.mark.parametrize("launcher", ["slurm", "submitit_local"])
def test_launcher_without_its_plugin_names_the_install(script, launcher, tmp_path):
    proc = run_script_hiding(
        "hydra_plugins", script, "-m", f"hydra/launcher={launcher}", "seed=1,2", tmp=tmp_path, check=False
    )
    assert_clean_failure(proc, f"hydra/launcher={launcher}", "pip install -e '.[slurm]'")
    assert not (tmp_path / "outputs").exists()  # stopped before Hydra made a sweep folder


@pytest.mark.parametrize(
    ("script", "setting", "fragments"),
    [
        ("train.py", "seed=abc", ["error: seed='abc': must be a whole number >= 0"]),
        ("eval.py", "seed=-1", ["error: seed=-1: must be a whole number >= 0"]),
        ("train.py", "optimizer.lr=-1", ["error: optimizer (torch.optim.SGD): Invalid learning rate: -1"]),
        ("train.py", "scheduler.gamma=abc", ["error: scheduler.gamma='abc': must be a number"]),
        ("train.py", "optimizer.lr=abc", ["error: optimizer.lr='abc': must be a number"]),
        ("eval.py", "pca_dim=abc", ["error: pca_dim='abc': must be a whole number >= 1"]),
        ("eval.py", "pca_dim=2.5", ["error: pca_dim=2.5: must be a whole number >= 1"]),
        ("train.py", "loss.margin=abc", ["error: loss.margin='abc': must be a number"]),
        ("train.py", "mining.margin=abc", ["error: mining.margin='abc': must be a number, or null"]),
        ("train.py", "mining.margin=-1", ["error: mining.margin=-1: must be >= 0"]),
        ("train.py", "loss.margin=-1", ["error: loss (vpr.losses.TripletMarginLoss): margin=-1 (loss.margin)"]),
        ("train.py", "model.num_clusters=0", ["error: head (vpr.models.heads.netvlad.NetVLAD)", "model.num_clusters"]),
        ("cluster.py", "cluster.images=-5", ["error: cluster.images=-5: must be a whole number >= 1"]),
        ("cluster.py", "cluster.iterations=abc", ["error: cluster.iterations='abc': must be a whole number >= 1"]),
        ("train.py", "cluster.iterations=-1", ["error: cluster.iterations=-1: must be a whole number >= 1"]),
        ("eval.py", "cluster.descriptors_per_image=2.5", ["error: cluster.descriptors_per_image=2.5: must be"]),
        ("train.py", "model.recall_at=[0,1]", ["error: model.recall_at=[0, 1]: give a list of whole numbers >= 1"]),
        ("eval.py", "model.recall_at=[]", ["error: model.recall_at=[]: give a list of whole numbers >= 1"]),
        ("eval.py", "data.eval_radius_m=0", ["error: data.eval_radius_m=0: must be a distance > 0 (metres)"]),
        ("train.py", "data.train_radius_m=-1", ["error: data.train_radius_m=-1: must be a distance > 0 (metres)"]),
        ("train.py", "data.eval_radius_m=5", ["error: data.eval_radius_m=5 is below", "data.train_radius_m=10"]),
        ("eval.py", "data.eval_batch_size=0", ["error: data.eval_batch_size=0: must be a whole number >= 1"]),
        ("cluster.py", "data.num_workers=-1", ["error: data.num_workers=-1: must be a whole number >= 0"]),
        ("train.py", "mining.chunk_queries=0", ["error: mining.chunk_queries=0: must be a whole number >= 1"]),
        ("train.py", "trainer.check_val_every_n_epoch=0", ["error: trainer.check_val_every_n_epoch=0: must be"]),
        ("train.py", "callbacks.mask_quality.images=0", ["error: callbacks.mask_quality.images=0: must be"]),
        ("train.py", "test_after_training=maybe", ["error: test_after_training='maybe': must be true or false"]),
        ("eval.py", "eval.spatial_nms=maybe", ["error: eval.spatial_nms='maybe': must be true or false"]),
    ],
)
def test_settings_refused_before_any_work(data_dir, tmp_path, script, setting, fragments):
    proc = run_script(
        script,
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        "logger=none",
        setting,
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, *fragments)
    out = proc.stdout + proc.stderr
    assert not any(mark in out for mark in ("cache pass", "budget per epoch", "clustering now", "sampling local"))


def test_folder_layout_without_a_root(tmp_path):
    proc = run_script(
        "eval.py", "experiment=city_baseline", "data=folder", f"hydra.run.dir={tmp_path}/r", tmp=tmp_path, check=False
    )
    assert_clean_failure(proc, "error: data.root is not set for folder (data=folder)")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA GPU is present")
def test_gpu_trainer_without_a_gpu_says_what_to_drop(data_dir, tmp_path):
    proc = run_script(
        "train.py",
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        "trainer=gpu",
        "logger=none",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "error: trainer.accelerator=gpu (trainer=gpu", "add trainer=default")


def test_a_sweep_job_with_a_user_error_fails_alone_and_the_other_jobs_run(data_dir, tmp_path):
    """Hydra's launcher runs a sweep's other jobs after one fails with an Exception, and raises the first failure at
    the end; the user error's SystemExit escaped that and ended the sweep at the failing job."""
    proc = run_script(
        "cluster.py",
        "-m",
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"paths.centroids_dir={tmp_path}/c",
        "data.image_size=[48,64]",
        "model.num_clusters=4,5000,6",
        "cluster.images=5",
        "cluster.descriptors_per_image=5",
        f"hydra.sweep.dir={tmp_path}/s",
        tmp=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    written = sorted(p.name.split("_")[2] for p in (tmp_path / "c").glob("*.hdf5"))
    assert written == ["4", "6"]  # the jobs before and after the failing one
    assert "error: only 25 descriptors for 5000 clusters" in proc.stderr  # the job's own line, when it failed
    last = proc.stderr.strip().splitlines()[-3]  # the sweep's, at its end (then Hydra's HYDRA_FULL_ERROR line)
    assert last.startswith(f"error: sweep job 1 failed ({tmp_path}/s/1_") and "only 25 descriptors" in last, last


def test_eval_refuses_weights_that_do_not_fit_before_making_the_city(tmp_path):
    import torch

    torch.save({"state_dict": {"backbone.other.weight": torch.zeros(2)}}, tmp_path / "foreign.ckpt")
    proc = run_script(
        "eval.py",
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={tmp_path}/data",
        f"ckpt_path={tmp_path}/foreign.ckpt",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "foreign.ckpt", "do not fit")
    assert not (tmp_path / "data").exists()  # no city generated (seconds to minutes) for nothing


def test_resuming_with_init_weights_is_refused_instead_of_ignoring_them(data_dir, tmp_path):
    proc = run_script(
        "train.py",
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={tmp_path}/run/checkpoints/last.ckpt",
        f"init_weights={tmp_path}/other.pth",
        "logger=none",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "init_weights would not be used", "drop init_weights to resume")


@pytest.mark.parametrize("precision", ["bf16-true", "16-true", "64-true", "fp8"])
def test_a_precision_the_model_cannot_train_in_is_refused_before_any_work(data_dir, tmp_path, precision):
    """Whole-model half precision failed deep in the first convolution (float32 images, bfloat16 weights)."""
    proc = run_script(
        "train.py",
        "experiment=city_baseline",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"trainer.precision={precision}",
        "logger=none",
        f"paths.centroids_dir={tmp_path}/c",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, f"error: trainer.precision={precision}: ", "32-true, bf16-mixed, 16-mixed")
    assert not (tmp_path / "c").exists()  # refused before clustering


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA GPU is present")
def test_cluster_script_of_a_gpu_experiment_runs_on_the_cpu(data_dir, tmp_path):
    """cluster.py runs no Trainer: paper_baseline's trainer=gpu does not stop it on a CPU machine."""
    proc = run_script(
        "cluster.py",
        "experiment=paper_baseline",
        "backbone.pretrained=false",
        "data=synthetic",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"paths.centroids_dir={tmp_path}/c",
        "data.image_size=[48,64]",
        "model.num_clusters=4",
        "cluster.images=5",
        "cluster.descriptors_per_image=5",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
    )
    assert "wrote" in proc.stdout and list((tmp_path / "c").glob("vgg16-random42_city-tiny-seed0_4_48x64_*.hdf5"))


def test_cluster_script_of_a_head_without_centroids_has_nothing_to_do(data_dir, tmp_path):
    """A loop of cluster.py over configurations may meet a pooling head: it says so and succeeds, writing nothing."""
    proc = run_script(
        "cluster.py",
        "experiment=city_baseline",
        "head=gem",
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"paths.centroids_dir={tmp_path}/c",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
    )
    assert "head=vpr.models.heads.pooling.GeM needs no centroids" in proc.stdout and not (tmp_path / "c").exists()


@pytest.mark.skipif(__import__("shutil").which("srun") is not None, reason="this machine has SLURM")
def test_slurm_launcher_off_a_cluster(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = run_script("train.py", "-m", "hydra/launcher=slurm", "seed=1,2", tmp=tmp_path, check=False)
    assert_clean_failure(proc, "error: hydra/launcher=slurm submits SLURM jobs", "hydra/launcher=submitit_local")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("size", ["abc", "[480]", "[480,abc]", "[0,640]"])
def test_image_size_named_with_the_form_it_takes(tmp_path, size):
    proc = run_script(
        "eval.py",
        "experiment=city_baseline",
        f"data.image_size={size}",
        f"hydra.run.dir={tmp_path}/r",
        tmp=tmp_path,
        check=False,
    )
    assert_clean_failure(proc, "error: data.image_size=", "[height, width]")
