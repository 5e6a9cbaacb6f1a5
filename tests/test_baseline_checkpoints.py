"""Checkpoints of the NetVLAD baseline (pytorch-NetVlad's layout: ``encoder.<i>.*`` = VGG16 ``features[<i>]`` up
to conv5_3, ``pool.conv.weight``, ``pool.centroids``, numpy scalars beside them, optionally DataParallel's
``.module``) load as weights only, give the descriptor of the project's network holding the same tensors, evaluate
through eval.py and start a training through init_weights; a file that does not fit is refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import compose_script, run_script, the_error_line

K = 8
NETWORK = ["backbone=vgg16", "backbone.pretrained=false", "attention=none", "head=netvlad", f"model.num_clusters={K}"]


def baseline_file(path, parallel=False, mutate=None):
    """Written as the baseline's main.py does: torch.save of a dict with numpy scalars; the encoder is
    torchvision's VGG16 ``features[:-2]`` (keys ``<i>.weight``), the pool NetVLAD (K x 512, no bias: vladv2=False)."""
    g = torch.Generator().manual_seed(0)
    encoder = torchvision.models.vgg16(weights=None).features[:-2].state_dict()
    prefix, pool = ("encoder.module.", "pool.module.") if parallel else ("encoder.", "pool.")
    sd = {
        prefix + k: torch.randn(v.shape, generator=g) * (2.0 / max(1, v[0].numel())) ** 0.5 for k, v in encoder.items()
    }
    sd[pool + "conv.weight"] = torch.randn(K, 512, 1, 1, generator=g)
    sd[pool + "centroids"] = torch.randn(K, 512, generator=g)
    if mutate:
        mutate(sd)
    torch.save(
        {
            "epoch": 5,
            "state_dict": sd,
            "recalls": {1: np.float64(0.5), 5: np.float64(0.7)},
            "best_score": np.float64(0.7),
            "optimizer": {"state": {}, "param_groups": []},
            "parallel": parallel,
        },
        path,
    )
    return sd


def as_saved_under_numpy1(path):
    """The file as numpy < 2 writes it (the released files were): its numpy scalars pickled under the module name
    ``numpy.core.multiarray`` (numpy 2 writes ``numpy._core.multiarray``). Every other byte is kept."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info, data in entries:
            if info.filename.endswith("/data.pkl"):
                assert b"cnumpy._core.multiarray\nscalar\n" in data
                data = data.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
            z.writestr(info, data)


def project_network():
    from vpr.build import build_module

    cfg = compose_script("eval", *NETWORK, "paths.output_dir=.")
    return build_module(cfg, with_training=False).eval()


def native_copy(sd, parallel=False):
    """The project's network holding the file's tensors, copied by layer order (not by name)."""
    module = project_network()
    convs = [m for m in module.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    prefix, pool = ("encoder.module.", "pool.module.") if parallel else ("encoder.", "pool.")
    indices = sorted({int(k.split(".")[-2]) for k in sd if k.startswith(prefix)})
    assert len(convs) == len(indices) == 13
    with torch.no_grad():
        for conv, i in zip(convs, indices):
            conv.weight.copy_(sd[f"{prefix}{i}.weight"])
            conv.bias.copy_(sd[f"{prefix}{i}.bias"])
        module.head.conv.weight.copy_(sd[pool + "conv.weight"])
        module.head.centroids.copy_(sd[pool + "centroids"])
    return module


@pytest.mark.parametrize(
    ("parallel", "numpy1"),
    [(False, False), (True, False), (False, True)],
    ids=["single-gpu", "data-parallel", "saved-under-numpy1"],
)
def test_baseline_file_gives_the_descriptor_of_the_same_tensors(tmp_path, parallel, numpy1):
    from vpr.checkpoints import load_weights_only

    sd = baseline_file(tmp_path / "checkpoint.pth.tar", parallel=parallel)
    if numpy1:
        as_saved_under_numpy1(tmp_path / "checkpoint.pth.tar")
    state = load_weights_only(str(tmp_path / "checkpoint.pth.tar"))
    loaded = project_network()
    loaded.load_state_dict(state["state_dict"])  # strict: every key of the project's network is in the file
    native = native_copy(sd, parallel)
    images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(images), native(images))


@pytest.mark.parametrize("saved", ["network-wrapped-whole", "state-dict-alone"])
def test_a_network_wrapped_whole_or_a_state_dict_alone_gives_the_same_descriptor(tmp_path, saved):
    """Two common ways of saving the baseline's tensors: a network wrapped whole in DataParallel (or
    DistributedDataParallel), whose every key starts with ``module.``, and ``torch.save(model.state_dict())``,
    without the dict around it. Both load as the file of the plain keys does."""
    from vpr.checkpoints import load_weights_only

    sd = baseline_file(tmp_path / "checkpoint.pth.tar")
    if saved == "network-wrapped-whole":
        torch.save({"epoch": 5, "state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "other.pth.tar")
    else:
        torch.save(dict(sd), tmp_path / "other.pth.tar")
    state = load_weights_only(str(tmp_path / "other.pth.tar"))
    assert state["released"].layout == "netvlad_baseline"
    loaded = project_network()
    loaded.load_state_dict(state["state_dict"])  # strict
    native = native_copy(sd)
    images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(images), native(images))


def test_baseline_file_evaluates_like_the_native_checkpoint_and_starts_a_training(data_dir, tmp_path):
    sd = baseline_file(tmp_path / "checkpoint.pth.tar")
    torch.save({"state_dict": native_copy(sd).state_dict()}, tmp_path / "native.ckpt")
    common = [
        *NETWORK,
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        "data.num_workers=0",
        "data.image_size=[48,64]",
    ]
    results = {}
    for name in ("checkpoint.pth.tar", "native.ckpt"):
        run_script(
            "eval.py", *common, f"ckpt_path={tmp_path / name}", f"hydra.run.dir={tmp_path / name}.run", tmp=tmp_path
        )
        results[name] = json.loads((tmp_path / f"{name}.run" / "results.json").read_text())["recall_at"]
    assert results["checkpoint.pth.tar"] == results["native.ckpt"]
    proc = run_script(
        "train.py",
        "experiment=city_baseline",
        *common,
        f"init_weights={tmp_path / 'checkpoint.pth.tar'}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "logger=none",
        "test_after_training=false",
        "mining.refresh_every_queries=8",
        f"hydra.run.dir={tmp_path / 'train'}",
        tmp=tmp_path,
    )
    assert "NetVLAD baseline's layout" in proc.stdout + proc.stderr
    assert (tmp_path / "train" / "checkpoints" / "last.ckpt").is_file()


def test_resuming_a_baseline_file_is_refused_before_any_work_naming_init_weights(data_dir, tmp_path):
    """train.py ckpt_path=<a baseline file> took it for a run of its own to resume: it moved its checkpoints into the
    file's folder and ended, after reading the data, in Lightning's traceback. The file holds weights only: one
    error line names init_weights, before the data is read, and the file's folder gets nothing."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    baseline_file(downloads / "checkpoint.pth.tar")
    proc = run_script(
        "train.py",
        "experiment=city_baseline",
        *NETWORK,
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        "data.num_workers=0",
        "data.image_size=[48,64]",
        "logger=none",
        f"ckpt_path={downloads / 'checkpoint.pth.tar'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        tmp=tmp_path,
        check=False,
    )
    error = the_error_line(proc)
    assert "checkpoint of the NetVLAD baseline" in error
    assert f"init_weights={downloads / 'checkpoint.pth.tar'}" in error
    assert "loaded city" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in downloads.iterdir()) == ["checkpoint.pth.tar"]


@pytest.mark.parametrize(
    "mutate, says",
    [
        (lambda sd: sd.__setitem__("pool.centroids", torch.randn(K, 256)), "centroids"),
        (lambda sd: sd.__setitem__("pool.extra", torch.zeros(1)), "pool.extra"),
        (
            lambda sd: sd.pop("encoder.28.bias"),
            "missing from the file: encoder.28.bias (this network's backbone.features.28.bias)",
        ),
        (
            lambda sd: sd.__setitem__("pool.conv.weight", torch.randn(K // 2, 512, 1, 1)),
            "the file disagrees with itself: pool.conv.weight has shape (4, 512, 1, 1) and pool.centroids (8, 512)",
        ),
    ],
    ids=["wrong-shape", "foreign-key", "missing-key", "inconsistent-k"],
)
def test_a_baseline_file_that_does_not_fit_is_refused(data_dir, tmp_path, mutate, says):
    baseline_file(tmp_path / "bad.pth.tar", mutate=mutate)
    proc = run_script(
        "eval.py",
        *NETWORK,
        "data.prepare.preset=tiny",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={tmp_path / 'bad.pth.tar'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        tmp=tmp_path,
        check=False,
    )
    assert says in the_error_line(proc)


def test_load_model_reads_a_baseline_files_k_from_its_tensors(tmp_path):
    """vpr.api.load_model of a baseline file whose K (8) is not the config's default (64) builds a NetVLAD of the
    file's K, as eval.py does, and gives the descriptor of a separate NetVLAD forward pass over the file's
    tensors (a loop over clusters)."""
    import torch.nn.functional as F

    from vpr.api import load_model

    sd = baseline_file(tmp_path / "checkpoint.pth.tar")
    model, cfg = load_model(tmp_path / "checkpoint.pth.tar", device="cpu")
    assert cfg.head.num_clusters == cfg.model.num_clusters == K and model.head.num_clusters == K

    encoder = torchvision.models.vgg16(weights=None).features[:-2]
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")})
    images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = F.normalize(encoder.eval()(images), dim=1).flatten(2)  # (B, D, N)
        soft = F.softmax(torch.einsum("kd,bdn->bkn", sd["pool.conv.weight"].flatten(1), x), dim=1)
        expected = []
        for b in range(len(images)):
            vlad = torch.stack(
                [(soft[b, k] * (x[b] - sd["pool.centroids"][k][:, None])).sum(1) for k in range(K)]
            )  # (K, D): sum over locations of a_k(x) (x - c_k)
            expected.append(F.normalize(F.normalize(vlad, dim=1).flatten(), dim=0))
        torch.testing.assert_close(model(images), torch.stack(expected), atol=1e-5, rtol=1e-4)


def test_encode_images_names_a_missing_image_before_any_loader_starts(tmp_path):
    """A missing path is one DataError naming it (and how many others are missing), also when the network encodes
    with loader worker processes, whose own errors come back inside the worker's traceback text."""
    from PIL import Image

    from vpr.api import encode_images, load_model
    from vpr.errors import DataError

    baseline_file(tmp_path / "checkpoint.pth.tar")
    model, _ = load_model(tmp_path / "checkpoint.pth.tar", ["data.num_workers=2"], device="cpu")
    Image.new("RGB", (80, 64)).save(tmp_path / "there.png")
    gone = [tmp_path / "gone.jpg", tmp_path / "also_gone.jpg"]
    with pytest.raises(DataError) as refused:
        encode_images(model, [tmp_path / "there.png", *gone], [64, 80])
    assert str(refused.value) == f"image {gone[0]} not found (and 1 more)"
