"""Tests for vpr/report.py on fake multirun folders with hand-chosen recalls (expected numbers worked out by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vpr.report import collect_runs, format_markdown, main, plot_recall_curves, summarise

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    root: Path,
    folder: str,
    variant: str | None,
    seed: int,
    recall_at: dict[int, float] | None,
    split: str = "test",
    dataset: str = "city",
    untrained: dict[int, float] | None = None,
    overrides: list[str] | None = None,
    config: str = "",
    checkpoint: str = "last.ckpt",
) -> Path:
    """A job folder as train.py writes it; recall_at=None makes a failed job (config only, no results.json).
    overrides: the lines of .hydra/overrides.yaml (none: no such file, as in a copied folder); config: more lines of
    config.yaml."""
    d = root / folder
    d.mkdir(parents=True)
    lines = [f"seed: {seed}", "tags: [city]", "data:", f"  name: {dataset}"]
    if variant is not None:
        lines.append(f"variant: {variant}")
    text = "\n".join(lines) + "\n" + config
    (d / "config.yaml").write_text(text)
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text(text)
    if overrides is not None:
        (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {line}\n" for line in overrides))

    def payload(recalls: dict[int, float]) -> str:
        return json.dumps(
            {
                "dataset": dataset,
                "split": split,
                "num_queries": 200,
                "num_database": 400,
                "recall_at": {str(n): r for n, r in recalls.items()},
                "checkpoint": checkpoint,
            }
        )

    if recall_at is not None:
        (d / "results.json").write_text(payload(recall_at))
    if untrained is not None:
        (d / "results_untrained.json").write_text(payload(untrained))
    return d


def table_rows(markdown: str) -> dict[str, list[str]]:
    """variant -> its cells, parsed from the first markdown table."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| variant"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def header(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("| variant"))
    return [c.strip() for c in line.strip("|").split("|")]


def cell(markdown: str, variant: str, column: str) -> str:
    return table_rows(markdown)[variant][header(markdown).index(column) - 1]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """baseline R@1 0.40/0.50/0.60 (mean 50, std 10); se R@1 0.70/0.71/0.72 (mean 71, std 1); crn one run."""
    root = tmp_path / "multirun"
    for i, (r1, seed) in enumerate([(0.40, 1), (0.50, 2), (0.60, 3)]):
        write_run(root, f"{i}_", "baseline", seed, {1: r1, 5: r1 + 0.1, 10: r1 + 0.2, 20: r1 + 0.3})
    for i, (r1, seed) in enumerate([(0.70, 1), (0.71, 2), (0.72, 3)], start=3):
        write_run(root, f"{i}_", "se", seed, {1: r1, 5: 0.8, 10: 0.9, 20: 0.95})
    write_run(root, "6_", "crn", 1, {1: 0.52, 5: 0.6, 10: 0.7, 20: 0.8})
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_collect_runs_reads_variant_seed_split_and_recalls(sweep: Path):
    runs = collect_runs(sweep)
    assert len(runs) == 7
    first = next(r for r in runs if r.path.name == "0_")
    assert (first.variant, first.seed, first.dataset, first.split) == ("baseline", 1, "city", "test")
    assert first.recall_at == pytest.approx({1: 0.40, 5: 0.50, 10: 0.60, 20: 0.70})
    assert list(first.recall_at) == [1, 5, 10, 20]  # int keys, numeric order


def test_mean_and_sample_std_match_hand_computation(sweep: Path):
    rows = {row.variant: row for row in summarise(collect_runs(sweep))}
    # baseline R@1: mean (40 + 50 + 60) / 3 = 50; sample var ((-10)^2 + 0 + 10^2) / (3 - 1) = 100 -> std 10.
    assert rows["baseline"].mean_pct[1] == pytest.approx(50.0)
    assert rows["baseline"].std_pct[1] == pytest.approx(10.0)
    # se R@1: mean 71; var (1 + 0 + 1) / 2 = 1 -> std 1.
    assert rows["se"].mean_pct[1] == pytest.approx(71.0)
    assert rows["se"].std_pct[1] == pytest.approx(1.0)
    assert rows["se"].std_pct[5] == pytest.approx(0.0)
    assert math.isnan(rows["crn"].std_pct[1])  # one run: no sample std
    cells = table_rows(format_markdown(summarise(collect_runs(sweep))))
    assert cells["baseline"][:4] == ["50.0 ± 10.0", "60.0 ± 10.0", "70.0 ± 10.0", "80.0 ± 10.0"]
    assert cells["se"][0] == "71.0 ± 1.0"
    assert cells["crn"][0] == "52.0 ± –"


def test_uneven_values_round_to_one_decimal(tmp_path: Path):
    # R@1 0.30 and 0.34: mean 32.0, std = sqrt((2^2 + 2^2) / 1) = 2.828... -> "2.8".
    write_run(tmp_path, "0_", "se", 1, {1: 0.30, 5: 0.5, 10: 0.6})
    write_run(tmp_path, "1_", "se", 2, {1: 0.34, 5: 0.5, 10: 0.6})
    cells = table_rows(format_markdown(summarise(collect_runs(tmp_path))))
    assert cells["se"][0] == "32.0 ± 2.8"
    assert cell(format_markdown(summarise(collect_runs(tmp_path))), "se", "runs") == "2"


def test_rows_follow_the_paper_order_then_alphabetical(tmp_path: Path):
    for i, variant in enumerate(["zeta", "deattention_se", "se", "alpha", "baseline", "crn", "deattention"]):
        write_run(tmp_path, f"{i}_", variant, 1, {1: 0.5, 5: 0.6, 10: 0.7})
    rows = summarise(collect_runs(tmp_path))
    assert [r.variant for r in rows] == [
        "baseline",
        "crn",
        "se",
        "deattention",
        "deattention_se",
        "alpha",
        "zeta",
    ]
    assert list(table_rows(format_markdown(rows))) == [r.variant for r in rows]


def test_columns_are_the_common_ns_plus_1_5_10(tmp_path: Path):
    write_run(tmp_path, "0_", "baseline", 1, {1: 0.4, 5: 0.5, 10: 0.6, 20: 0.7, 2: 0.45})
    write_run(tmp_path, "1_", "baseline", 2, {1: 0.6, 10: 0.8, 2: 0.65})  # no R@5, no R@20
    md = format_markdown(summarise(collect_runs(tmp_path)))
    # R@2 is in every run; R@5 only in one but always shown; R@20 only in one and not a must -> dropped.
    assert header(md)[:5] == ["variant", "R@1", "R@2", "R@5", "R@10"]
    assert "R@20" not in header(md)
    cells = table_rows(md)["baseline"]
    assert cells[0] == "50.0 ± 14.1"  # values 40, 60: std = sqrt(200) = 14.14
    assert cells[2] == "50.0 ± – (1 of 2 runs)"


def test_split_column_and_mixed_split(tmp_path: Path):
    write_run(tmp_path, "0_", "baseline", 1, {1: 0.5, 5: 0.6, 10: 0.7}, split="test")
    write_run(tmp_path, "1_", "baseline", 2, {1: 0.5, 5: 0.6, 10: 0.7}, split="test")
    write_run(tmp_path, "2_", "se", 1, {1: 0.6, 5: 0.7, 10: 0.8}, split="test")
    write_run(tmp_path, "3_", "se", 2, {1: 0.6, 5: 0.7, 10: 0.8}, split="val")
    rows = {r.variant: r for r in summarise(collect_runs(tmp_path))}
    assert rows["baseline"].split == "city/test"
    assert rows["se"].split == "mixed"
    assert rows["se"].splits == ("city/test", "city/val")
    md = format_markdown(list(rows.values()))
    assert cell(md, "baseline", "split") == "city/test"
    assert cell(md, "se", "split") == "mixed"
    assert cell(md, "se", "ΔR@1 vs baseline") == "n/a (split differs)"  # no delta across splits
    assert "`se` mixes splits city/test, city/val" in md


def test_metric_split_keeps_only_the_chosen_split(tmp_path: Path, capsys):
    write_run(tmp_path, "0_", "se", 1, {1: 0.6, 5: 0.7, 10: 0.8}, split="test")
    write_run(tmp_path, "1_", "se", 2, {1: 0.2, 5: 0.7, 10: 0.8}, split="val")
    assert main([str(tmp_path), "--no-plot", "--metric-split", "test"]) == 0
    out = capsys.readouterr().out
    assert table_rows(out)["se"][0] == "60.0 ± –"
    assert cell(out, "se", "split") == "city/test"
    assert "skipped (split val, not test): 1_" in out


def test_delta_vs_baseline_and_noise_verdict(sweep: Path):
    md = format_markdown(summarise(collect_runs(sweep)))
    assert header(md)[-1] == "ΔR@1 vs baseline"
    cells = table_rows(md)
    assert cells["baseline"][-1] == "–"
    # se: 71 - 50 = +21.0; stds 1 + 10 = 11 < 21 -> beyond.
    assert cells["se"][-1] == "+21.0 (beyond 11.0)"
    # crn: one run, std unknown.
    assert cells["crn"][-1] == "+2.0 (std n/a)"


def test_delta_within_noise(tmp_path: Path):
    for i, r in enumerate([0.40, 0.50, 0.60]):
        write_run(tmp_path, f"b{i}", "baseline", i, {1: r, 5: 0.7, 10: 0.8})
    for i, r in enumerate([0.48, 0.52, 0.56]):  # mean 52, std 4 -> +2 within 14
        write_run(tmp_path, f"s{i}", "se", i, {1: r, 5: 0.7, 10: 0.8})
    assert table_rows(format_markdown(summarise(collect_runs(tmp_path))))["se"][-1] == "+2.0 (within 14.0)"


def test_no_baseline_no_delta_column(tmp_path: Path):
    write_run(tmp_path, "0_", "se", 1, {1: 0.6, 5: 0.7, 10: 0.8})
    assert not any(h.startswith("ΔR@1") for h in header(format_markdown(summarise(collect_runs(tmp_path)))))


def test_missing_jobs_are_listed_not_fatal(sweep: Path, capsys):
    write_run(sweep, "7_attention=cbam", "cbam", 1, None)  # failed: config but no results.json
    (sweep / "8_attention=bam" / ".hydra").mkdir(parents=True)  # died before writing config.yaml
    # Inside a finished run, logger folders with their own config.yaml are not jobs.
    (sweep / "0_" / "wandb" / "run-1" / "files").mkdir(parents=True)
    (sweep / "0_" / "wandb" / "run-1" / "files" / "config.yaml").write_text("_wandb: {}\n")
    (sweep / "1_" / "extra").mkdir()
    (sweep / "1_" / "extra" / "config.yaml").write_text("x: 1\n")
    # A sweep-level wandb folder (WANDB_DIR inside the sweep) holds config.yaml files too.
    (sweep / "wandb" / "run-2" / "files").mkdir(parents=True)
    (sweep / "wandb" / "run-2" / "files" / "config.yaml").write_text("_wandb: {}\n")
    # A failed job's own sub-folders are not separate jobs: listed once.
    (sweep / "7_attention=cbam" / "eval").mkdir()
    (sweep / "7_attention=cbam" / "eval" / "config.yaml").write_text("x: 1\n")
    # A job whose results.json sits one level down (e.g. an eval sub-folder) is not missing.
    write_run(sweep, "10_", "bam", 1, None)
    write_run(sweep / "10_", "eval", "bam", 1, {1: 0.5, 5: 0.6, 10: 0.7})
    assert main([str(sweep), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "- missing: 7_attention=cbam\n" in out
    assert "- missing: 8_attention=bam\n" in out
    assert out.count("missing:") == 2
    assert "cbam" not in table_rows(out)
    assert cell(out, "bam", "runs") == "1"  # the nested run counts


def test_a_failed_job_is_listed_with_the_error_its_log_ends_with(sweep: Path, capsys):
    """train.py writes a user error as the last record of the job's log (Hydra's format, configs/hydra); a job
    killed, or run again in its folder and still going after an earlier failure, ends with another record."""
    log = "[07:31:37][vpr.data.datamodule][INFO] loaded city/val: 40 database, 20 queries\n"
    write_run(sweep, "7_baseline_seed4", "baseline", 4, None)
    (sweep / "7_baseline_seed4" / "train.log").write_text(
        log + "[07:31:38][vpr][ERROR] optimizer (torch.optim.SGD): Invalid learning rate: -1\n"
    )
    write_run(sweep, "8_se_seed4", "se", 4, None)  # a message over two lines: its first line names it
    (sweep / "8_se_seed4" / "train.log").write_text(
        log + "[07:31:38][vpr][ERROR] data.root=/x does not exist\n  set data.root\n"
    )
    write_run(sweep, "9_crn_seed4", "crn", 4, None)  # killed in training
    (sweep / "9_crn_seed4" / "train.log").write_text(log + "[07:32:01][vpr.callbacks][INFO] epoch 0 trained\n")
    write_run(sweep, "10_crn_seed5", "crn", 5, None)  # failed once, running again
    (sweep / "10_crn_seed5" / "train.log").write_text("[07:31:38][vpr][ERROR] bad\n" + log)
    write_run(sweep, "11_crn_seed6", "crn", 6, None)  # another library's error record is not the script's
    (sweep / "11_crn_seed6" / "eval.log").write_text(log + "[07:31:38][lightning][ERROR] something\n")
    assert main([str(sweep), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "- missing: 7_baseline_seed4 (failed: optimizer (torch.optim.SGD): Invalid learning rate: -1)\n" in out
    assert "- missing: 8_se_seed4 (failed: data.root=/x does not exist)\n" in out
    for job in ("9_crn_seed4", "10_crn_seed5", "11_crn_seed6"):
        assert f"- missing: {job}\n" in out
    assert cell(out, "baseline", "runs") == "3"  # the finished jobs' rows as before


def test_a_sweep_whose_jobs_all_failed_names_the_first_failure(tmp_path: Path, capsys):
    write_run(tmp_path, "0_baseline_seed1", "baseline", 1, None)
    (tmp_path / "0_baseline_seed1" / "train.log").write_text("[07:31:38][vpr][ERROR] monitor=train/loss: choose\n")
    write_run(tmp_path, "1_baseline_seed2", "baseline", 2, None)
    assert main([str(tmp_path), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: vpr.report: no results.json anywhere under {tmp_path} (2 job folder(s), none ")
    assert "; 0_baseline_seed1 failed: monitor=train/loss: choose. Fix that and run the sweep again.\n" in err


def test_runs_found_at_any_depth_and_variant_fallbacks(tmp_path: Path):
    write_run(tmp_path / "sweepA", "0_", "baseline", 1, {1: 0.5, 5: 0.6, 10: 0.7})
    # No variant: Hydra's experiment choice from .hydra/overrides.yaml ...
    d = write_run(tmp_path / "sweepB" / "deeper", "0_", None, 2, {1: 0.5, 5: 0.6, 10: 0.7})
    (d / ".hydra" / "overrides.yaml").write_text("- experiment=city_se\n- seed=2\n")
    # ... or the choice recorded in .hydra/hydra.yaml (unresolvable interpolations in it are fine) ...
    d = write_run(tmp_path / "sweepB", "1_", None, 4, {1: 0.5, 5: 0.6, 10: 0.7})
    (d / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  run:\n    dir: ${paths.log_dir}/x\n  runtime:\n    choices:\n      experiment: city_crn\n"
    )
    # ... and without either the folder name minus the job number.
    write_run(tmp_path / "sweepC", "3_attention=cbam", None, 3, {1: 0.5, 5: 0.6, 10: 0.7})
    runs = {r.seed: r for r in collect_runs(tmp_path)}
    assert {s: r.variant for s, r in runs.items()} == {
        1: "baseline",
        2: "city_se",
        3: "attention=cbam",
        4: "city_crn",
    }


def test_unreadable_results_are_reported(sweep: Path, capsys):
    bad = write_run(sweep, "9_", "se", 9, None)
    # Recall in percent, not as a fraction: rejected, listed, not counted.
    (bad / "results.json").write_text('{"dataset": "city", "recall_at": {"1": 42.0}}')
    assert main([str(sweep), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "unreadable: 9_" in out
    assert cell(out, "se", "runs") == "3"  # the bad run is not counted


def test_plot_is_a_valid_png(sweep: Path, tmp_path: Path):
    from matplotlib.image import imread

    path = plot_recall_curves(collect_runs(sweep), tmp_path / "plots" / "curves.png")
    assert path == tmp_path / "plots" / "curves.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0  # not a blank canvas
    assert not list(path.parent.glob(".*"))  # no temporary file left behind
    # Rows are accepted as well as runs.
    assert plot_recall_curves(summarise(collect_runs(sweep)), tmp_path / "rows.png").read_bytes()[:8] == PNG_SIGNATURE


def test_empty_folder_exits_2_with_a_hint(tmp_path: Path, capsys):
    (tmp_path / "0_").mkdir()
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "results.json" in err and "train.py -m" in err
    with pytest.raises(FileNotFoundError, match="no results.json"):
        collect_runs(tmp_path)


def test_a_run_folder_keeps_its_own_results_md(tmp_path: Path):
    """Given one run's folder, the report must not replace the results.md that train.py / eval.py wrote there."""
    run = write_run(tmp_path, "run", "baseline", 1, {1: 0.5, 5: 0.75, 10: 1.0})
    own = "Test recall (%)\n| R@1 | 50.0 |\n"
    (run / "results.md").write_text(own)
    assert main([str(run), "--no-plot"]) == 0
    assert (run / "results.md").read_text() == own
    assert table_rows((run / "report.md").read_text())["baseline"][0] == "50.0 ± –"


def test_missing_folder_exits_2(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "train.py -m" in err


def test_cli_writes_table_and_plot(sweep: Path, tmp_path: Path, capsys):
    out_md, out_png = tmp_path / "t" / "table.md", tmp_path / "t" / "curves.png"
    assert main([str(sweep), "--out", str(out_md), "--plot", str(out_png)]) == 0
    printed = capsys.readouterr().out
    text = out_md.read_text()
    assert text in printed  # what is printed is what is written
    assert table_rows(text)["baseline"][0] == "50.0 ± 10.0"
    assert out_png.read_bytes()[:8] == PNG_SIGNATURE
    # Defaults: next to the runs.
    assert main([str(sweep)]) == 0
    assert (sweep / "results.md").read_text() == text
    assert (sweep / "recall_curves.png").read_bytes()[:8] == PNG_SIGNATURE


def test_untrained_table(tmp_path: Path, capsys):
    write_run(tmp_path, "0_", "baseline", 1, {1: 0.5, 5: 0.6, 10: 0.7}, untrained={1: 0.1, 5: 0.2, 10: 0.3})
    write_run(tmp_path, "1_", "baseline", 2, {1: 0.5, 5: 0.6, 10: 0.7}, untrained={1: 0.3, 5: 0.2, 10: 0.3})
    assert main([str(tmp_path), "--no-plot", "--untrained"]) == 0
    out = capsys.readouterr().out
    before = out.split("Before training")[1]
    # untrained R@1 10, 30: mean 20, std sqrt(200) = 14.1
    assert table_rows(before)["baseline"][0] == "20.0 ± 14.1"
    # a sweep that did not test the untrained network says so instead of printing nothing
    plain = tmp_path / "plain"
    write_run(plain, "0_", "baseline", 1, {1: 0.5, 5: 0.6, 10: 0.7})
    assert main([str(plain), "--no-plot", "--untrained"]) == 0
    assert "no job wrote results_untrained.json" in capsys.readouterr().out


def test_mask_auc_column_mean_and_std_by_hand(tmp_path: Path):

    for i, (variant, auc) in enumerate(
        [("baseline", None), ("deattention", 0.70), ("deattention", 0.80), ("deattention", 0.90)]
    ):
        d = write_run(tmp_path, f"{i}_", variant, i, {1: 0.5, 5: 0.7, 10: 0.8})
        if auc is not None:
            data = json.loads((d / "results.json").read_text())
            data["mask"] = {"auc": auc, "mask_on_suppressed": 0.3, "mask_on_static": 0.8}
            (d / "results.json").write_text(json.dumps(data))
    md = format_markdown(summarise(collect_runs(tmp_path)))
    assert "mask AUC" in header(md)
    # mean 0.8, sample std sqrt(((0.1)^2 + 0 + (0.1)^2) / 2) = 0.1
    assert cell(md, "deattention", "mask AUC") == "0.800 ± 0.100"
    assert cell(md, "baseline", "mask AUC") == "–"
    # no run measured a mask: no column
    other = tmp_path / "plain"
    write_run(other, "0_", "baseline", 1, {1: 0.5, 5: 0.7, 10: 0.8})
    assert "mask AUC" not in header(format_markdown(summarise(collect_runs(other))))


def test_runs_at_several_occlusion_levels_get_a_row_each_and_a_plot(tmp_path: Path):
    plan = [
        ("baseline", "default-occlusion-low", 0.60),
        ("baseline", "default", 0.50),
        ("baseline", "default-occlusion-high", 0.30),
        ("deattention", "default-occlusion-low", 0.62),
        ("deattention", "default", 0.55),
        ("deattention", "default-occlusion-high", 0.40),
    ]
    for i, (variant, preset, r1) in enumerate(plan):
        d = write_run(tmp_path, f"{i}_", variant, 1, {1: r1, 5: 0.8, 10: 0.9})
        config = (
            (d / "config.yaml")
            .read_text()
            .replace("  name: city\n", f"  name: city\n  prepare:\n    preset: {preset}\n")
        )
        (d / "config.yaml").write_text(config)
    md = format_markdown(summarise(collect_runs(tmp_path)))
    assert header(md)[:2] == ["variant", "occlusion"]
    lines = [line for line in md.splitlines() if line.startswith("| deattention")]
    assert [line.split("|")[2].strip() for line in lines] == ["low", "medium", "high"]
    # each level's difference is to the baseline at the same level: +2.0, +5.0, +10.0 points
    assert ["+2.0", "+5.0", "+10.0"] == [line.split("|")[-2].strip().split()[0] for line in lines]
    assert main([str(tmp_path), "--out", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "recall_vs_occlusion.png").stat().st_size > 1000


def test_eval_over_test_sets_gives_a_table_per_set(tmp_path: Path, capsys):
    """eval.py with test_sets writes results_sets.json ({label: results}) and no results.json: one table per set,
    each averaging that set's numbers only (by hand: tokyo R@1 (30 + 50) / 2 = 40; pitts (60 + 80) / 2 = 70)."""
    for folder, seed, pitts, tokyo in (("0_baseline_seed1", 1, 0.6, 0.3), ("1_baseline_seed2", 2, 0.8, 0.5)):
        d = write_run(tmp_path, folder, "baseline", seed, None)
        sets = {
            label: {"dataset": name, "split": "test", "test_set": label, "recall_at": {"1": r, "5": min(1.0, r + 0.1)}}
            for label, name, r in (("pitts", "pitts30k", pitts), ("tokyo", "tokyo247", tokyo))
        }
        (d / "results_sets.json").write_text(json.dumps(sets))
    assert main([str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    pitts, tokyo = out.split("(test set tokyo)")
    assert "(test set pitts)" in pitts and "missing" not in out
    assert table_rows(pitts)["baseline"][0] == "70.0 ± 14.1"  # sample std of 60, 80: sqrt(200) = 14.14
    assert table_rows(tokyo)["baseline"][0] == "40.0 ± 14.1"


def write_sets(run_dir: Path, recalls: dict[str, tuple[str, float]]) -> None:
    """results_sets.json as run_test_sets writes it: {label: results.json-shaped entry}; recalls: label ->
    (dataset, R@1), R@5 = R@1 + 0.1."""
    sets = {
        label: {
            "dataset": dataset,
            "split": "test",
            "test_set": label,
            "recall_at": {"1": r1, "5": r1 + 0.1},
            "checkpoint": str(run_dir / "checkpoints" / "epoch001.ckpt"),
        }
        for label, (dataset, r1) in recalls.items()
    }
    (run_dir / "results_sets.json").write_text(json.dumps(sets))


def test_train_with_test_sets_gives_the_own_test_and_a_table_per_set(tmp_path: Path, capsys):
    """train.py with test_sets writes results.json (its own test split) and results_sets.json: both are read. By
    hand: own R@1 (40 + 60) / 2 = 50, std sqrt(200) = 14.1; pitts (70 + 80) / 2 = 75, std sqrt(50) = 7.1;
    tokyo (20 + 30) / 2 = 25, std 7.1."""
    for folder, seed, own, pitts, tokyo in (
        ("0_baseline_seed1", 1, 0.4, 0.7, 0.2),
        ("1_baseline_seed2", 2, 0.6, 0.8, 0.3),
    ):
        d = write_run(tmp_path, folder, "baseline", seed, {1: own, 5: own + 0.1, 10: own + 0.2})
        write_sets(d, {"pitts": ("pitts30k", pitts), "tokyo": ("tokyo247", tokyo)})
    runs = collect_runs(tmp_path)
    assert sorted((r.seed, r.test_set or "") for r in runs) == [
        (1, ""),
        (1, "pitts"),
        (1, "tokyo"),
        (2, ""),
        (2, "pitts"),
        (2, "tokyo"),
    ]
    assert main([str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    own, sets = out.split("(test set pitts)")
    pitts, tokyo = sets.split("(test set tokyo)")
    assert "(own test split)" in own
    assert table_rows(own)["baseline"][0] == "50.0 ± 14.1"
    assert cell(own, "baseline", "split") == "city/test"
    assert table_rows(pitts)["baseline"][0] == "75.0 ± 7.1"
    assert cell(pitts, "baseline", "split") == "pitts30k/test"
    assert table_rows(tokyo)["baseline"][0] == "25.0 ± 7.1"
    assert cell(tokyo, "baseline", "runs") == "2"


def test_a_damaged_results_sets_json_leaves_the_own_test(tmp_path: Path, capsys):
    d = write_run(tmp_path, "0_baseline_seed1", "baseline", 1, {1: 0.5, 5: 0.6, 10: 0.7})
    (d / "results_sets.json").write_text('{"pitts": {"dataset": "pitts30k", "recall_at": {"1": 55.0}}}')
    assert main([str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert table_rows(out)["baseline"][0] == "50.0 ± –"
    assert "unreadable: 0_baseline_seed1/results_sets.json" in out
    assert "test set" not in out


@pytest.fixture
def saved_figures(monkeypatch) -> list:
    """The matplotlib figures vpr.report saves, kept for a look at their panels (and still written)."""
    import vpr.viz.retrievals as retrievals

    figures, save = [], retrievals.save_figure_atomic

    def keep(fig, path, *args, **kwargs):
        figures.append(fig)
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(retrievals, "save_figure_atomic", keep)
    return figures


def test_recall_curves_have_a_panel_per_test_set_named_by_it(tmp_path: Path, saved_figures: list):
    """One recall_curves.png, a panel per table: the own test split's and each set's, titled with the set, each
    drawing that set's means (by hand, tokyo: R@1 (20 + 30) / 2 = 25, R@5 (30 + 40) / 2 = 35)."""
    for folder, seed, own, pitts, tokyo in (
        ("0_baseline_seed1", 1, 0.4, 0.7, 0.2),
        ("1_baseline_seed2", 2, 0.6, 0.8, 0.3),
    ):
        d = write_run(tmp_path, folder, "baseline", seed, {1: own, 5: own + 0.1, 10: own + 0.2})
        write_sets(d, {"pitts": ("pitts30k", pitts), "tokyo": ("tokyo247", tokyo)})
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "recall_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    (fig,) = saved_figures
    assert [ax.get_title() for ax in fig.axes] == [
        "Recall@N on city/test (own test split)",
        "Recall@N on test set pitts (pitts30k/test)",
        "Recall@N on test set tokyo (tokyo247/test)",
    ]
    own, pitts, tokyo = ([line.get_ydata() for line in ax.lines] for ax in fig.axes)
    assert list(own[0]) == pytest.approx([50.0, 60.0, 70.0])
    assert list(pitts[0]) == pytest.approx([75.0, 85.0])
    assert list(tokyo[0]) == pytest.approx([25.0, 35.0])


def test_eval_over_test_sets_plots_every_set(tmp_path: Path, saved_figures: list):
    for folder, seed, pitts, tokyo in (("0_baseline_seed1", 1, 0.6, 0.3), ("1_baseline_seed2", 2, 0.8, 0.5)):
        write_sets(
            write_run(tmp_path, folder, "baseline", seed, None),
            {"pitts": ("pitts30k", pitts), "tokyo": ("tokyo247", tokyo)},
        )
    out_png = tmp_path / "plots" / "curves.png"
    assert main([str(tmp_path), "--plot", str(out_png)]) == 0
    assert out_png.read_bytes()[:8] == PNG_SIGNATURE
    (fig,) = saved_figures
    assert [ax.get_title() for ax in fig.axes] == [
        "Recall@N on test set pitts (pitts30k/test)",
        "Recall@N on test set tokyo (tokyo247/test)",
    ]
    # R@1 means by hand: pitts (60 + 80) / 2 = 70, tokyo (30 + 50) / 2 = 40
    assert [ax.lines[0].get_ydata()[0] for ax in fig.axes] == pytest.approx([70.0, 40.0])


def test_a_sweep_without_test_sets_keeps_its_single_plot(sweep: Path, saved_figures: list):
    assert main([str(sweep)]) == 0
    (fig,) = saved_figures
    assert [ax.get_title() for ax in fig.axes] == ["Recall@N on city/test"]
    assert len(fig.axes[0].lines) == 3  # baseline, crn, se


# ------------------------------------------------------------------------- rows of distinct settings (overrides)


def write_lr_sweep(root: Path, plan: list[tuple[str, str, int, float]]) -> list[Path]:
    """`train.py -m experiment=... optimizer.lr=... seed=...` as Hydra lays it out: plan is (experiment's variant,
    lr as Hydra writes it, seed, R@1) per job, in job order."""
    folders = []
    for i, (variant, lr, seed, r1) in enumerate(plan):
        folders.append(
            write_run(
                root,
                f"{i}_{variant}_seed{seed}",
                variant,
                seed,
                {1: r1, 5: r1 + 0.1, 10: r1 + 0.2},
                overrides=[f"experiment=city_{variant}", f"optimizer.lr={lr}", f"seed={seed}"],
                config=f"task_name: train\noptimizer:\n  lr: {lr}\n",
                checkpoint=str(root / f"{i}_{variant}_seed{seed}" / "checkpoints" / "epoch001.ckpt"),
            )
        )
    return folders


LR_PLAN = [
    # baseline lr 0.001: R@1 60, 50 -> 55.0 ± 7.1 (sample std sqrt(50)); lr 0.1: 20, 30 -> 25.0 ± 7.1
    ("baseline", "0.001", 1, 0.60),
    ("baseline", "0.001", 2, 0.50),
    ("baseline", "0.1", 1, 0.20),
    ("baseline", "0.1", 2, 0.30),
    # se lr 0.001: 70, 72 -> 71.0 ± 1.4 (std sqrt(2)); lr 0.1: 26, 28 -> 27.0 ± 1.4
    ("se", "0.001", 1, 0.70),
    ("se", "0.001", 2, 0.72),
    ("se", "0.1", 1, 0.26),
    ("se", "0.1", 2, 0.28),
]


def test_a_learning_rate_sweep_gives_a_row_per_rate_averaged_over_seeds_only(tmp_path: Path, capsys):
    write_lr_sweep(tmp_path, LR_PLAN)
    assert main([str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert list(rows) == [
        "baseline (optimizer.lr=0.001)",
        "baseline (optimizer.lr=0.1)",
        "se (optimizer.lr=0.001)",
        "se (optimizer.lr=0.1)",
    ]
    assert rows["baseline (optimizer.lr=0.001)"][0] == "55.0 ± 7.1"
    assert rows["baseline (optimizer.lr=0.1)"][0] == "25.0 ± 7.1"
    assert rows["se (optimizer.lr=0.001)"][0] == "71.0 ± 1.4"
    assert rows["se (optimizer.lr=0.1)"][0] == "27.0 ± 1.4"
    assert cell(out, "baseline (optimizer.lr=0.1)", "runs") == "2"
    # each se row is compared with the baseline of its own rate: 71 - 55 = +16.0 against 7.07 + 1.41 = 8.5;
    # 27 - 25 = +2.0 within 8.5
    assert cell(out, "se (optimizer.lr=0.001)", "ΔR@1 vs baseline") == "+16.0 (beyond 8.5)"
    assert cell(out, "se (optimizer.lr=0.1)", "ΔR@1 vs baseline") == "+2.0 (within 8.5)"
    assert cell(out, "baseline (optimizer.lr=0.1)", "ΔR@1 vs baseline") == "–"
    assert "appear more than once" not in out  # each row holds seeds 1 and 2 once


def test_component_sweep_without_experiment_gives_a_row_per_component(tmp_path: Path, capsys):
    """`train.py -m backbone=resnet18 attention=none,se seed=1,2`: no variant, folders <n>_train_seed<seed>. By
    hand: attention=none R@1 40, 50 -> 45.0 ± 7.1; se 60, 80 -> 70.0 ± 14.1 (std sqrt(200))."""
    for i, (attention, seed, r1) in enumerate([("none", 1, 0.4), ("none", 2, 0.5), ("se", 1, 0.6), ("se", 2, 0.8)]):
        write_run(
            tmp_path,
            f"{i}_train_seed{seed}",
            None,
            seed,
            {1: r1, 5: 0.9, 10: 0.95},
            overrides=["backbone=resnet18", f"attention={attention}", f"seed={seed}"],
            config="task_name: train\n",
        )
    assert main([str(tmp_path), "--no-plot"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["train (attention=none)", "train (attention=se)"]
    assert rows["train (attention=none)"][0] == "45.0 ± 7.1"
    assert rows["train (attention=se)"][0] == "70.0 ± 14.1"


def test_settings_that_do_not_change_a_model_do_not_split_rows(tmp_path: Path):
    """Seeds of one model run with other loggers, loader workers, output paths or launcher settings, and a rate
    spelled 1e-3 or 0.001, are one row: R@1 40, 60 -> 50.0 ± 14.1. A different trainer.devices is not (under DDP
    the ranks' batches make another training)."""
    write_run(
        tmp_path,
        "0_baseline_seed1",
        "baseline",
        1,
        {1: 0.4, 5: 0.6, 10: 0.7},
        overrides=["experiment=city_baseline", "optimizer.lr=1e-3", "seed=1", "logger=csv", "data.num_workers=2"],
    )
    write_run(
        tmp_path,
        "1_baseline_seed2",
        "baseline",
        2,
        {1: 0.6, 5: 0.6, 10: 0.7},
        overrides=[
            "experiment=city_baseline",
            "optimizer.lr=0.001",
            "seed=2",
            "logger=wandb",
            "paths.log_dir=/scratch/out",
            "hydra.launcher.partition=gpu",
            "ckpt_path=last",
        ],
    )
    rows = summarise(collect_runs(tmp_path))
    assert [(r.label, r.runs) for r in rows] == [("baseline", 2)]
    assert table_rows(format_markdown(rows))["baseline"][0] == "50.0 ± 14.1"
    write_run(
        tmp_path,
        "2_baseline_seed3",
        "baseline",
        3,
        {1: 0.9, 5: 0.9, 10: 0.9},
        overrides=["experiment=city_baseline", "optimizer.lr=0.001", "seed=3", "trainer.devices=2"],
    )
    labels = [r.label for r in summarise(collect_runs(tmp_path))]
    assert labels == ["baseline (trainer.devices not given)", "baseline (trainer.devices=2)"]


def test_the_ablation_sweep_keeps_plain_variant_rows(tmp_path: Path, capsys):
    """`experiment=city_baseline,city_se seed=1,2` (and `make evidence`'s data.prepare.preset levels): the
    experiment and the preset's occlusion differ between rows but never within a variant's level, so rows are
    named by the variant alone. By hand: baseline low R@1 60, 70 -> 65.0 ± 7.1."""
    jobs = [
        (variant, level, seed, r1)
        for variant, base in (("baseline", 0.6), ("se", 0.5))
        for level, shift in (("default-occlusion-low", 0.0), ("default", -0.2))
        for seed, r1 in ((1, base + shift), (2, base + shift + 0.1))
    ]
    for i, (variant, preset, seed, r1) in enumerate(jobs):
        d = write_run(
            tmp_path,
            f"{i}_{variant}_seed{seed}",
            variant,
            seed,
            {1: r1, 5: 0.9, 10: 0.95},
            overrides=[f"experiment=city_{variant}", f"seed={seed}", f"data.prepare.preset={preset}"],
            config="task_name: train\n",
        )
        config = (d / "config.yaml").read_text()
        (d / "config.yaml").write_text(
            config.replace("  name: city\n", f"  name: city\n  prepare:\n    preset: {preset}\n")
        )
    assert main([str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    lines = [line.split("|")[1:3] for line in out.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [(a.strip(), b.strip()) for a, b in lines] == [
        ("baseline", "low"),
        ("baseline", "medium"),
        ("se", "low"),
        ("se", "medium"),
    ]
    assert table_rows(out)["baseline"][:2] == ["low", "65.0 ± 7.1"]  # the first baseline row: low


def test_runs_without_overrides_are_grouped_by_variant_as_before(tmp_path: Path):
    """Copied job folders without .hydra/overrides.yaml: nothing tells the rates apart, one row per variant."""
    folders = write_lr_sweep(tmp_path, LR_PLAN[:4])
    for d in folders:
        (d / ".hydra" / "overrides.yaml").unlink()
    rows = summarise(collect_runs(tmp_path))
    assert [(r.label, r.runs) for r in rows] == [("baseline", 4)]
    assert rows[0].mean_pct[1] == pytest.approx(40.0)  # (60 + 50 + 20 + 30) / 4


def write_eval_sweep(root: Path, train_folders: list[Path], r1s: list[float]) -> None:
    """`eval.py -m ckpt_path=A,B,...` over checkpoints of runs with a variant: each job's config.yaml records the
    checkpoint's variant and seed, its results.json the checkpoint's path; its folder is named as eval.py names it."""
    for i, (train_dir, r1) in enumerate(zip(train_folders, r1s)):
        trained = (train_dir / "config.yaml").read_text()
        seed = int(trained.split("seed: ")[1].split("\n")[0])
        variant = trained.split("variant: ")[1].split("\n")[0]
        ckpt = str(train_dir / "checkpoints" / "epoch001.ckpt")
        write_run(
            root,
            f"{i}_{variant}_seed{seed}",
            variant,
            seed,
            {1: r1, 5: 0.9, 10: 0.95},
            overrides=[f"ckpt_path={ckpt}"],
            config=f"task_name: eval\nckpt_path: {ckpt}\noptimizer:\n  lr: 0.001\n",  # eval.py's own default lr
            checkpoint=ckpt,
        )


def test_eval_over_checkpoints_follows_each_training_runs_settings(tmp_path: Path, capsys):
    """An eval.py sweep over the checkpoints of a learning-rate sweep: its config records the variant and seed, not
    the rate; the rate comes from the training job's .hydra/overrides.yaml (the checkpoint's folder, two up). By
    hand: lr 0.001 R@1 62, 52 -> 57.0 ± 7.1; lr 0.1 24, 34 -> 29.0 ± 7.1."""
    train_folders = write_lr_sweep(tmp_path / "train", LR_PLAN[:4])
    write_eval_sweep(tmp_path / "eval", train_folders, [0.62, 0.52, 0.24, 0.34])
    assert main([str(tmp_path / "eval"), "--no-plot"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["baseline (optimizer.lr=0.001)", "baseline (optimizer.lr=0.1)"]
    assert rows["baseline (optimizer.lr=0.001)"][0] == "57.0 ± 7.1"
    assert rows["baseline (optimizer.lr=0.1)"][0] == "29.0 ± 7.1"


def test_eval_over_checkpoints_of_a_sweep_without_variant(tmp_path: Path, capsys):
    """The training sweep had no experiment (attention=none,se seed=1,2), so eval.py names every job eval_seed42;
    with test_sets it writes results_sets.json alone. Rows follow the training runs: by hand, pitts R@1
    attention=none 40, 50 -> 45.0 ± 7.1; se 60, 80 -> 70.0 ± 14.1."""
    train_folders = []
    for i, (attention, seed) in enumerate([("none", 1), ("none", 2), ("se", 1), ("se", 2)]):
        folder = f"{i}_train_seed{seed}"
        train_folders.append(
            write_run(
                tmp_path / "train",
                folder,
                None,
                seed,
                {1: 0.5, 5: 0.9, 10: 0.95},
                overrides=["backbone=resnet18", f"attention={attention}", f"seed={seed}"],
                config="task_name: train\nvariant: null\n",
            )
        )
    for i, (train_dir, r1) in enumerate(zip(train_folders, [0.4, 0.5, 0.6, 0.8])):
        seed = int((train_dir / "config.yaml").read_text().split("seed: ")[1].split("\n")[0])
        ckpt = str(train_dir / "checkpoints" / "epoch001.ckpt")
        d = write_run(
            tmp_path / "eval",
            f"{i}_eval_seed42",
            None,
            seed,
            None,
            overrides=[f"ckpt_path={ckpt}", "test_sets=[pitts30k]"],
            config=f"task_name: eval\nckpt_path: {ckpt}\n",
        )
        (d / "results_sets.json").write_text(
            json.dumps({"pitts": {"dataset": "pitts30k", "split": "test", "recall_at": {"1": r1}, "checkpoint": ckpt}})
        )
    assert main([str(tmp_path / "eval"), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "(test set pitts)" in out
    rows = table_rows(out)
    assert list(rows) == ["train (attention=none)", "train (attention=se)"]
    assert rows["train (attention=none)"][0] == "45.0 ± 7.1"
    assert rows["train (attention=se)"][0] == "70.0 ± 14.1"


def test_eval_whose_training_folders_are_gone_falls_back_to_the_recorded_variant(tmp_path: Path, capsys):
    """Without the training jobs' folders, the rate is not known: one row of the recorded variant, and the note
    that seeds repeat says something is off (by hand: (62 + 52 + 24 + 34) / 4 = 43.0)."""
    import shutil

    train_folders = write_lr_sweep(tmp_path / "train", LR_PLAN[:4])
    write_eval_sweep(tmp_path / "eval", train_folders, [0.62, 0.52, 0.24, 0.34])
    shutil.rmtree(tmp_path / "train")
    assert main([str(tmp_path / "eval"), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert table_rows(out)["baseline"][0].startswith("43.0 ± ")
    assert cell(out, "baseline", "runs") == "4"
    assert "baseline: seed(s) 1, 2 appear more than once" in out


def test_an_eval_sweep_over_released_files_gives_a_row_per_file(tmp_path: Path, capsys):
    """`eval.py -m ckpt_path=<baseline file>,<SE file>`: released files have no training run and no variant, so
    each file is its own row (they were averaged as one `eval` row of two seeds 42). By hand: 30 and 50."""
    for i, (name, r1) in enumerate([("netvlad/checkpoint.pth.tar", 0.30), ("paper/se.pth.tar", 0.50)]):
        ckpt = str(tmp_path / "weights" / name)
        write_run(
            tmp_path / "eval",
            f"{i}_eval_seed42",
            None,
            42,
            {1: r1, 5: 0.9},
            overrides=[f"ckpt_path={ckpt}"],
            config=f"task_name: eval\nckpt_path: {ckpt}\n",
            checkpoint=ckpt,
        )
    assert main([str(tmp_path / "eval"), "--no-plot"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["eval (checkpoint=netvlad/checkpoint.pth.tar)"][0].startswith("30.0")
    assert rows["eval (checkpoint=paper/se.pth.tar)"][0].startswith("50.0")
    assert len(rows) == 2


def test_sweeps_read_together_merge_a_setting_given_on_one_command_line_and_left_at_its_default_in_the_other(
    tmp_path: Path, capsys
):
    """Sweep A gave optimizer.lr=0.001,0.1, optimizer=sgd and data.image_size=[48, 64]; sweep B gave none of them,
    its config had the same values (lr 0.001, the sgd option, [48, 64]): B's run is one more seed of A's lr-0.001
    model. By hand: lr 0.001 R@1 60, 50 (A) and 70 (B) -> 60.0 ± 10.0 (sample std sqrt(200 / 2)); lr 0.1 20, 30 ->
    25.0 ± 7.1. Sweep C's config had lr 0.01: a row of its own, named by that value; a job whose config does not
    say its rate stays "not given"."""

    def job(sweep: str, folder: str, seed: int, r1: float, overrides: list[str], lr: str | None) -> None:
        """A train.py job folder: its resolved config.yaml and Hydra's choices of config groups, written by hand."""
        d = write_run(
            tmp_path / sweep,
            folder,
            "baseline",
            seed,
            {1: r1, 5: 0.9, 10: 0.95},
            overrides=["experiment=city_baseline", *overrides, f"seed={seed}"],
            config="task_name: train\noptimizer:\n  momentum: 0.9\n" + (f"  lr: {lr}\n" if lr else ""),
        )
        text = (
            (d / "config.yaml").read_text().replace("  name: city\n", "  name: city\n  image_size:\n  - 48\n  - 64\n")
        )
        (d / "config.yaml").write_text(text)
        choices = {"experiment": "city_baseline", "optimizer": "sgd", "data": "synthetic"}
        (d / ".hydra" / "hydra.yaml").write_text(
            "hydra:\n  runtime:\n    choices:\n" + "".join(f"      {k}: {v}\n" for k, v in choices.items())
        )

    given = ["optimizer=sgd", "data.image_size=[48, 64]"]
    job("A", "0_baseline_seed1", 1, 0.60, [*given, "optimizer.lr=1e-3"], "0.001")
    job("A", "1_baseline_seed2", 2, 0.50, [*given, "optimizer.lr=1e-3"], "0.001")
    job("A", "2_baseline_seed1", 1, 0.20, [*given, "optimizer.lr=0.1"], "0.1")
    job("A", "3_baseline_seed2", 2, 0.30, [*given, "optimizer.lr=0.1"], "0.1")
    job("B", "0_baseline_seed3", 3, 0.70, [], "0.001")
    assert main([str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert list(rows) == ["baseline (optimizer.lr=0.001)", "baseline (optimizer.lr=0.1)"]
    assert rows["baseline (optimizer.lr=0.001)"][0] == "60.0 ± 10.0"
    assert cell(out, "baseline (optimizer.lr=0.001)", "runs") == "3"
    assert rows["baseline (optimizer.lr=0.1)"][0] == "25.0 ± 7.1"

    job("C", "0_baseline_seed1", 1, 0.40, [], "0.01")
    job("D", "0_baseline_seed1", 1, 0.45, [], None)  # a config without the rate
    assert main([str(tmp_path), "--no-plot"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == [
        "baseline (optimizer.lr not given)",
        "baseline (optimizer.lr=0.001)",
        "baseline (optimizer.lr=0.01)",
        "baseline (optimizer.lr=0.1)",
    ]
    assert rows["baseline (optimizer.lr=0.01)"][0] == "40.0 ± –"
