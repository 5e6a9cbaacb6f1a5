"""make bench runs (at its tiny size): the table and the JSON exist, every ratio is the quotient it claims, and the
naive NetVLAD it compares against computes the same descriptor as the project's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, script_env


def test_bench_tiny_writes_the_table_with_ratios(tmp_path):
    env = {**script_env(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vpr.bench",
            "--size",
            "tiny",
            "--repeats",
            "1",
            "--shapes",
            "1",
            "--cache-rounds",
            "2",
            "--guidance",
            "2",
            "--out",
            str(tmp_path / "b"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert "| measure | project | naive | project vs naive |" in proc.stdout
    assert (tmp_path / "b" / "bench.md").read_text().strip() in proc.stdout
    measures = {r["measure"]: r for r in result["rows"]}
    assert {
        "training step: tuples/s",
        "encoding (mining cache, evaluation): images/s",
        "mining-cache rounds from JPEG files (2 loader processes): images/s",
        "guidance targets, DeepLabV3+ (2 loader processes): images/s",
    } <= set(measures)
    for r in result["rows"]:
        assert r["project"] > 0 and r["naive"] > 0
        rate = r["measure"].endswith("/s")
        assert r["ratio"] == pytest.approx(r["project"] / r["naive"] if rate else r["naive"] / r["project"])
    assert result["train_flops_per_step"] > 0 and result["device"].startswith("CPU")
    rate = result["image_loading_images_per_s"]
    step = measures["training step: images/s"]["project"]
    import math

    n = math.ceil(step / rate)  # loader processes the training step needs at these speeds
    assert rate > 0 and f"the training step needs about {n} loader process{'es' if n != 1 else ''} and" in proc.stdout
    # --shapes 1: the tiny step (2 tuples x 2 negatives) at 3 and then 2 negatives, benchmark mode off then on
    assert [(r["cudnn_benchmark"], r["negatives"]) for r in result["new_shapes"]] == [(False, [3]), (True, [2])]
    assert "| off | 3 |" in proc.stdout and "| on | 2 |" in proc.stdout


def test_new_shape_rows_give_each_mode_shapes_of_its_own_and_restore_the_mode(monkeypatch):
    from vpr.bench import new_shape_rows

    calls = []
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # not the last mode it sets: restored or red
    rows = new_shape_rows(lambda n: calls.append((n, torch.backends.cudnn.benchmark)), 4, 40, 3, 2, torch.device("cpu"))
    # never the measured 40, never fewer than one per tuple; one first step and 2 repeats per shape
    off, on = [39, 37, 35], [38, 36, 34]
    assert calls == [(n, False) for n in off for _ in range(3)] + [(n, True) for n in on for _ in range(3)]
    assert [(r["cudnn_benchmark"], r["negatives"]) for r in rows] == [(False, off), (True, on)]
    assert all(r["first_step_seconds"] >= 0 and r["repeat_step_seconds"] >= 0 for r in rows)
    assert torch.backends.cudnn.benchmark is False


def test_naive_netvlad_equals_the_project_head():
    from vpr.bench import naive_netvlad
    from vpr.models.heads.netvlad import NetVLAD

    torch.manual_seed(0)
    head = NetVLAD(num_clusters=5, dim=16)
    x = torch.randn(3, 16, 4, 6)
    torch.testing.assert_close(naive_netvlad(head, x), head(x), atol=1e-5, rtol=1e-4)


def test_mining_benchmark_small_size():
    from vpr.bench import mining_benchmark

    r = mining_benchmark(num_db=3000, num_queries=100, dim=256, cache_dtype=torch.float16, device=torch.device("cpu"))
    assert r["cache_gb"] == pytest.approx(3000 * 256 * 2 / 1e9)  # float16: 2 bytes per value
    assert r["num_queries"] == 100 and r["tuples"] == 100  # every query keeps its negatives at this margin
    assert r["mine_seconds"] > 0 and r["process_peak_rss_gb"] > 0


def test_bench_compile_rows_compare_with_the_eager_rows_of_the_same_run(tmp_path):
    from vpr.bench import main

    assert (
        main(
            [
                "--size",
                "tiny",
                "--repeats",
                "1",
                "--compile",
                "--compile-backend",
                "aot_eager",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    eager = {r["measure"]: r["project"] for r in result["rows"]}
    compiled = {r["measure"]: r for r in result["compile"]}
    assert compiled["training step: tuples/s"]["eager"] == eager["training step: tuples/s"]
    assert compiled["encoding: images/s"]["eager"] == eager["encoding (mining cache, evaluation): images/s"]
    for r in compiled.values():
        assert r["compiled"] > 0
        if r["eager"]:
            assert r["ratio"] == pytest.approx(r["compiled"] / r["eager"])
    assert "| measure | eager | compiled | compiled vs eager |" in (tmp_path / "b" / "bench.md").read_text()


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L40", 181e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_dense_peak_by_device_name(name, peak):
    from vpr.bench import peak_flops_of

    assert peak_flops_of(name) == peak  # data-sheet dense bf16 figures, written out by hand


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--mining", "--mining-db", "0"], "--mining-db must be >= 1"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--mining", "--size", "tiny"], "--size sets the network benchmark"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(args, says, capsys):
    from vpr.bench import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("mining", [False, True])
def test_an_out_folder_that_cannot_be_made_is_refused_before_measuring(tmp_path, capsys, monkeypatch, mining):
    from vpr import bench

    def measured(*args, **kwargs):
        raise AssertionError("the benchmark ran although its output folder cannot be made")

    monkeypatch.setattr(bench, "run", measured)
    monkeypatch.setattr(bench, "mining_benchmark", measured)
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "bench"
    args = ["--mining", "--mining-db", "10"] if mining else ["--size", "tiny"]
    with pytest.raises(SystemExit) as exit_:
        bench.main([*args, "--out", str(out)])
    assert exit_.value.code == 2 and f"--out {out}" in capsys.readouterr().err


def test_search_row_is_timed_after_a_warm_up_like_the_other_rows(monkeypatch):
    """--repeats: timed calls per measure after one warm-up. A search whose first call pays a one-time cost (faiss's
    import) is timed on the calls after it."""
    import time

    import numpy as np

    from vpr import bench
    from vpr.eval import search

    calls = []

    def knn_search(db, q, k):
        calls.append(len(q))
        if len(calls) == 1:
            time.sleep(0.5)  # the one-time cost of a first call
        return np.zeros((len(q), k), np.float32), np.zeros((len(q), k), np.int64)

    monkeypatch.setattr(search, "knn_search", knn_search)
    project, naive = bench.search_seconds(50, 5, 4, torch.device("cpu"), repeats=2)
    assert calls == [5, 5, 5]  # one warm-up, two timed
    assert project < 0.25 and naive > 0


@pytest.mark.parametrize(("device", "gpus"), [("mps", 0), ("meta", 0), ("cuda:1", 1)])
def test_a_device_the_benchmark_cannot_use_is_refused_before_measuring(capsys, monkeypatch, device, gpus):
    from vpr import bench

    def measured(*args, **kwargs):
        raise AssertionError(f"the benchmark ran on {device}")

    monkeypatch.setattr(bench, "run", measured)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--device", device, "--size", "tiny"])
    assert exit_.value.code == 2 and f"--device {device}:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--guidance", "2"], "--guidance: "), (["--shapes", "2", "--compile"], "--shapes, --compile: ")],
)
def test_network_rows_asked_of_the_mining_round_are_refused(tmp_path, capsys, monkeypatch, args, says):
    """--mining runs the mining round alone: options that add rows of the network benchmark would do nothing."""
    from vpr import bench

    def measured(*args, **kwargs):
        raise AssertionError("the mining round ran and the network options were ignored")

    monkeypatch.setattr(bench, "mining_benchmark", measured)
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--mining", *args, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and says + "rows of the network benchmark" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_refused(capsys, monkeypatch):
    import torch

    from vpr.bench import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        main(["--device", "cuda", "--size", "tiny"])
    assert "this machine has no usable CUDA GPU" in capsys.readouterr().err


def test_cache_round_rates_time_kept_workers_and_a_loader_each_round(monkeypatch):
    """The first rate is the project's (workers kept between rounds), the second a loader made for each round; each
    reads every round's images once, after one untimed round."""
    from vpr import bench

    calls = []

    class Module:
        device = torch.device("cpu")

        def encode_dataset(self, dataset, desc, indices, keep_workers):
            calls.append((keep_workers, list(indices)))
            return torch.zeros(len(indices), 2)

        def release_encode_workers(self):
            calls.append("released")

    monkeypatch.setattr(
        bench, "photo_like_jpegs", lambda folder, count, h, w: [folder / f"{i}.jpg" for i in range(count)]
    )
    bench.cache_round_rates(Module(), 16, 16, workers=2, per_round=3, rounds=2)
    rounds = [list(range(r * 3, r * 3 + 3)) for r in range(3)]
    assert calls == [*[(True, r) for r in rounds], "released", *[(False, r) for r in rounds], "released"]
