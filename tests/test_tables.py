"""Delta and task tables on hand-made run folders whose every value is known by construction."""

import numpy as np
import pandas as pd
import pytest

from vsgrid.config import validate
from vsgrid.data.store import create_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.scoring import RunValues, run_scores, score
from vsgrid.files import write_table
from vsgrid.grid import data_sets, runs
from vsgrid.layout import Layout
from vsgrid.report import outcome
from vsgrid.report.tables import delta_table, task_table
from vsgrid.stats import bootstrap_weights

FEATURES = ["AreaShape_Area", "Intensity_MeanIntensity"]


def write_run(layout, run, ssim, nmae_sums, n_pairs=(2, 2), real_std=(2.0, 4.0), matched=2, real=4):
    """A run folder whose images score ``ssim`` and whose feature sums are ``nmae_sums`` (per
    feature, on every image); two images."""
    n = len(ssim)
    images = pd.DataFrame({"image": range(n), "ssim": ssim, "psnr": [30.0] * n})
    differences = pd.DataFrame(
        [
            {
                "image": i,
                "feature": f,
                "abs_diff_sum": s,
                "n_pairs": p,
                "n_matched": matched,
                "n_real": real,
                "real_std": sd,
            }
            for i in range(n)
            for f, s, p, sd in zip(FEATURES, nmae_sums, n_pairs, real_std)
        ]
    )
    folder = layout.run_dir(run.model, run.test_set)
    folder.mkdir(parents=True)
    write_table(images, folder / "images.parquet")
    write_table(differences, folder / "feature_differences.parquet")
    write_table(run_scores(RunValues.from_tables(images, differences)), folder / "scores.parquet")


def write_test_store(path, wells):
    """A store of tiny test images, one per entry of ``wells`` (what the bootstrap needs: wells)."""
    metadata = pd.DataFrame(
        {"split": "test", "index": range(len(wells)), "plate": "P1", "well": wells, "field": 1}
    )
    with create_store(
        path, {"test": len(wells)}, (4, 4), metadata, {"data_set": path.stem}, with_masks=False
    ):
        pass


@pytest.fixture
def grid(tmp_path):
    """One cell type, two seeds: runs lung-nontoxic -> lung-nontoxic, -> lung-toxic, lung-toxic -> lung-toxic;
    two test images per test set, in two wells; the image-level CI unless a test says otherwise."""
    config = validate(
        {
            "grid": {"cell_types": ["lung"], "stains": ["dapi"], "seeds": [0, 1]},
            "data": {"dir": str(tmp_path / "data")},
            "results": {"dir": str(tmp_path)},
            "evaluation": {"bootstrap_resamples": 200, "ci": "images"},
        }
    )
    layout = Layout.of(config)
    for data_set in data_sets(config["grid"]):
        write_test_store(layout.store(data_set), wells=["A01", "A02"])
    for run in runs(config):
        trained_toxic = run.model.train_set.phenotype == "toxic"
        seed = run.model.seed
        # The toxic-trained baseline: SSIM 0.9 and 0.7 (mean 0.8); N-MAE sums 2 and 8 -> N-MAE 0.5 and 1.0.
        # The non-toxic model: SSIM mean 0.6 (seed 0) and 0.7 (seed 1); N-MAE 1.0 and 2.0.
        ssim = [0.9, 0.7] if trained_toxic else [0.5 + 0.1 * seed, 0.7 + 0.1 * seed]
        sums = (2.0, 8.0) if trained_toxic else (4.0, 16.0)
        write_run(layout, run, ssim, sums)
    return config


def row(deltas, train_set, test_set, metric, kind="test_distribution"):
    match = deltas[
        (deltas["train_set"] == train_set)
        & (deltas["test_set"] == test_set)
        & (deltas["metric"] == metric)
        & (deltas["baseline_kind"] == kind)
    ]
    assert len(match) == 1
    return match.iloc[0]


def test_value_baseline_and_delta_are_means_over_seeds(grid):
    deltas = delta_table(grid)
    ssim = row(deltas, "lung-nontoxic", "lung-toxic", "ssim")
    assert ssim["value"] == pytest.approx(0.65) and ssim["baseline"] == pytest.approx(0.8)
    assert ssim["delta"] == pytest.approx(-0.15) and ssim["seeds"] == 2 and ssim["task"] == 1
    # N-MAE per feature: sums 4 + 4 over 2 + 2 pairs / SD 2 = 1.0; 16 + 16 over 4 pairs / SD 4 = 2.0.
    nmae = row(deltas, "lung-nontoxic", "lung-toxic", "nmae")
    assert (
        nmae["value"] == pytest.approx(1.5)
        and nmae["baseline"] == pytest.approx(0.75)
        and nmae["delta"] == pytest.approx(0.75)
    )
    assert row(deltas, "lung-nontoxic", "lung-toxic", "match_rate")["value"] == pytest.approx(0.5)
    baseline = row(deltas, "lung-toxic", "lung-toxic", "ssim")
    assert baseline["delta"] == 0 and baseline["ci_low"] == baseline["ci_high"] == 0


def test_the_confidence_interval_brackets_the_delta_and_follows_the_images(grid):
    deltas = delta_table(grid)
    ssim = row(deltas, "lung-nontoxic", "lung-toxic", "ssim")
    # Each resample draws the same images for model and baseline: per image the delta is
    # (0.55 - 0.9) on image 0 and (0.75 - 0.7) on image 1, so every replicate lies between.
    assert -0.35 - 1e-12 <= ssim["ci_low"] <= ssim["delta"] <= ssim["ci_high"] <= 0.05 + 1e-12
    # N-MAE is the same on every image, so every resample gives the same delta.
    nmae = row(deltas, "lung-nontoxic", "lung-toxic", "nmae")
    assert nmae["ci_low"] == pytest.approx(0.75) and nmae["ci_high"] == pytest.approx(0.75)


def test_one_function_gives_the_value_and_every_replicate(grid):
    layout = Layout.of(grid)
    run = next(
        r
        for r in runs(grid)
        if r.model.train_set.phenotype == "nontoxic" and r.test_set.phenotype == "toxic"
    )
    values = RunValues.read(layout.run_dir(run.model, run.test_set))
    scores = pd.read_parquet(layout.run_dir(run.model, run.test_set) / "scores.parquet").set_index(
        ["metric", "feature"]
    )["value"]
    weights = bootstrap_weights(np.array(["A01", "A02"]), 50, np.random.default_rng(0), nested=True)
    for metric in values.metrics:
        assert float(score(metric, values, np.ones(values.n_images))) == scores[(metric, "")]
        by_resample = np.array([score(metric, values, w) for w in weights])
        np.testing.assert_allclose(score(metric, values, weights), by_resample, rtol=1e-12)
    assert (weights.sum(1) == values.n_images).all()


def test_task_table_ranks_worst_and_best_in_each_metrics_direction():
    deltas = pd.DataFrame(
        {
            "baseline_kind": "test_distribution",
            "task": 2,
            "stain": "dapi",
            "train_set": ["a-nontoxic", "b-nontoxic"] * 2,
            "baseline_train_set": ["c-nontoxic"] * 4,
            "level": ["pixel", "pixel", "feature", "feature"],
            "metric": ["ssim", "ssim", "nmae", "nmae"],
            "delta": [-0.2, 0.1, -0.3, 0.4],
        }
    )
    tasks = task_table(deltas).set_index("metric")
    assert tasks.loc["ssim", "worst"] == -0.2 and tasks.loc["ssim", "best"] == 0.1
    assert (
        tasks.loc["nmae", "worst"] == 0.4 and tasks.loc["nmae", "best"] == -0.3
    )  # lower N-MAE is better
    assert tasks.loc["nmae", "delta"] == pytest.approx(0.05) and tasks.loc["nmae", "pairs"] == 2


def test_images_with_a_blank_or_saturated_real_stain_weigh_nothing():
    images = pd.DataFrame(
        {
            "image": [0, 1, 2],
            "flag": ["blank", "", "saturated"],
            "ssim": [0.0, 0.8, 0.1],
            "psnr": [-65.0, 30.0, 10.0],
        }
    )
    differences = pd.DataFrame(
        {
            "image": [0, 1, 2],
            "feature": "AreaShape_Area",
            "abs_diff_sum": [0.0, 3.0, 90.0],
            "n_pairs": [0, 3, 3],
            "n_matched": [0, 3, 3],
            "n_real": [0, 4, 3],
            "real_std": 1.0,
        }
    )
    values = RunValues.from_tables(images, differences)
    everyone = np.ones(3)
    assert score("ssim", values, everyone) == 0.8 and score("psnr", values, everyone) == 30.0
    assert score("nmae", values, everyone) == 1.0 and score("match_rate", values, everyone) == 0.75


def test_a_damaged_run_table_is_named(grid):
    layout = Layout.of(grid)
    run = runs(grid)[0]
    damaged = layout.run_dir(run.model, run.test_set) / "images.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(
        VsgridError,
        match=f"{damaged} cannot be read as a table .*it is damaged, rerun the step that writes it",
    ):
        delta_table(grid)


def test_a_folder_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    import errno
    from pathlib import Path

    from vsgrid.cli import main

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    (tmp_path / "c.yaml").write_text("{}\n")
    monkeypatch.setattr(Path, "write_text", refuse)
    assert (
        main(
            [
                "grid",
                "--config",
                str(tmp_path / "c.yaml"),
                "--tsv",
                str(tmp_path / "out" / "runs.tsv"),
            ]
        )
        == 2
    )
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"cannot write {tmp_path / 'out' / 'runs.tsv'}: Permission denied")
    )
    assert not list((tmp_path / "out").iterdir())


def test_the_nested_bootstrap_draws_wells_then_their_fields():
    units = np.array(["A01"] * 3 + ["B02"] * 3 + ["C03"] * 2)
    weights = bootstrap_weights(units, 400, np.random.default_rng(0), nested=True)
    per_well = np.stack([weights[:, units == u].sum(1) for u in ("A01", "B02", "C03")], axis=1)
    # A well drawn k times contributes k times its number of fields: 3, 3 or 2 per draw.
    assert np.all(per_well[:, :2] % 3 == 0) and np.all(per_well[:, 2] % 2 == 0)
    assert np.all((per_well / [3, 3, 2]).sum(1) == 3)  # three wells drawn per resample
    flat = bootstrap_weights(units, 400, np.random.default_rng(0), nested=False)
    assert np.all(flat.sum(1) == 8) and np.any(
        flat[:, units == "A01"].sum(1) % 3
    )  # images drawn one by one


def test_the_hierarchical_ci_counts_wells_and_seeds(grid, tmp_path):
    """With two seeds a side, drawing seeds too widens the interval of images alone (one field per
    well here, so wells and images are drawn alike); with one seed the table says so."""
    grid["evaluation"]["ci"] = "hierarchical"
    hierarchical = row(delta_table(grid), "lung-nontoxic", "lung-toxic", "ssim")
    grid["evaluation"]["ci"] = "images"
    images = row(delta_table(grid), "lung-nontoxic", "lung-toxic", "ssim")
    assert hierarchical["ci_levels"] == "seeds, wells, fields" and images["ci_levels"] == "images"
    assert (
        hierarchical["ci_high"] - hierarchical["ci_low"]
        >= images["ci_high"] - images["ci_low"] - 1e-12
    )
    one_seed = {
        **grid,
        "grid": {**grid["grid"], "seeds": [0]},
        "evaluation": {**grid["evaluation"], "ci": "hierarchical"},
    }
    assert (
        "a single seed: training variation not counted"
        in row(delta_table(one_seed), "lung-nontoxic", "lung-toxic", "ssim")["ci_levels"]
    )


def test_the_outcome_shows_in_distribution_quality_and_deltas_whose_ci_excludes_zero():
    runs = pd.DataFrame(
        [
            {"shift": shift, "stain": "dapi", "metric": metric, "feature": "", "value": value}
            for shift, metric, value in [
                ("none", "ssim", 0.9),
                ("none", "ssim", 0.8),
                ("none", "f1", 0.6),
                ("phenotype", "ssim", 0.1),
            ]
        ]
    )
    deltas = pd.DataFrame(
        [
            {
                "baseline_kind": "test_distribution",
                "task": 1,
                "shift": "phenotype",
                "stain": "dapi",
                "metric": "ssim",
                "delta": d,
                "ci_low": lo,
                "ci_high": hi,
            }
            for d, lo, hi in [(-0.2, -0.3, -0.1), (-0.1, -0.2, 0.05), (0.0, 0.0, 0.0)]
        ]
        + [
            {
                "baseline_kind": "train_celltype",
                "task": 1,
                "shift": "phenotype",
                "stain": "dapi",
                "metric": "ssim",
                "delta": 5,
                "ci_low": 4,
                "ci_high": 6,
            }
        ]
    )
    quality = outcome.in_distribution(runs)
    assert quality.loc["dapi", "ssim"] == pytest.approx(0.85) and quality.loc[
        "dapi", "f1"
    ] == pytest.approx(0.6)
    single = "wells, fields (a single seed: training variation not counted)"
    deltas = deltas.assign(seeds=1, ci="hierarchical", ci_levels=single)
    row = outcome.task_deltas(deltas).iloc[0]
    assert row["delta ssim"] == "-0.100 (1/3)" and row["delta f1"] == "-"
    assert row["CIs count"] == "1 seed: not training"
    text = outcome.outcome_text(runs, deltas)
    assert "-0.100 (1/3)" in text and "not training variation" in text
    # Two seeds a side: the CIs count training, and the outcome says nothing more.
    two = deltas.assign(seeds=2, ci_levels="seeds, wells, fields")
    assert outcome.task_deltas(two).iloc[0]["CIs count"] == "2+ seeds"
    assert "not training variation" not in outcome.outcome_text(runs, two)
    # Task 0 compares the same models on two acquisitions: no training variation to count.
    control = deltas.assign(task=0, shift="acquisition")
    assert outcome.task_deltas(control).iloc[0]["CIs count"] == "same models"
