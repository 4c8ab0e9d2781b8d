"""The trust table on hand-made run folders whose uncertainties and errors are known by
construction, and the statistics it is made of."""

import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import stats
from sklearn.metrics import roc_auc_score

from vsgrid import arrays
from vsgrid.config import validate
from vsgrid.data.store import create_store, open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.input_ood import write_bf_texture
from vsgrid.evaluation.ood import TABLE_COLUMNS, shift_aurocs
from vsgrid.evaluation.scoring import RunValues, run_scores
from vsgrid.evaluation.trust import write_seed_spread
from vsgrid.files import read_table, write_table
from vsgrid.grid import data_sets, runs, seed_groups
from vsgrid.layout import Layout
from vsgrid.report.figures import figure10
from vsgrid.report.trust import ALL, SEEDS, image_errors, trust_table, write_trust
from vsgrid.stats import auroc, drawn, spearman

N = 20  # test images per test set, two fields in each of ten wells
FEATURE = "AreaShape_Area"


def write_run(layout, run, ssim, *, tta=None, ood=None, nmae=None, cells=None):
    """A run folder: per image its SSIM, N-MAE (one feature of real SD 1, one matched pair) and,
    when given, what the model said of it."""
    images = pd.DataFrame({"image": range(N), "flag": "", "ssim": ssim})
    for name, values in (("tta", tta), ("ood", ood)):
        if values is not None:
            images[name] = values
    differences = pd.DataFrame(
        {
            "image": range(N),
            "feature": FEATURE,
            "abs_diff_sum": nmae if nmae is not None else 1.0,
            "n_pairs": 1,
            "n_matched": 1,
            "n_real": 1,
            "real_std": 1.0,
        }
    )
    folder = layout.run_dir(run.model, run.test_set)
    folder.mkdir(parents=True)
    write_table(images, folder / "images.parquet")
    write_table(differences, folder / "feature_differences.parquet")
    write_table(run_scores(RunValues.from_tables(images, differences)), folder / "scores.parquet")
    if cells is None:  # a run whose predictions matched no cell
        cells = pd.DataFrame(columns=["image", "label", "nmae"])
    write_table(cells, folder / "cells.parquet")


def grid_config(tmp_path, seeds: list[int], cell_types=("lung",)) -> dict:
    """``cell_types``, DAPI, ``seeds``; a store of N small training and N test images per data
    set, whose BF is noise, a hundred times stronger in the toxic one (a shift of texture the
    no-model baseline must find)."""
    config = validate(
        {
            "grid": {"cell_types": list(cell_types), "stains": ["dapi"], "seeds": seeds},
            "data": {"dir": str(tmp_path / "data")},
            "results": {"dir": str(tmp_path)},
            "evaluation": {"bootstrap_resamples": 100},
        }
    )
    layout = Layout.of(config)
    metadata = pd.DataFrame(
        {
            "split": np.repeat(["train", "test"], N),
            "index": np.tile(range(N), 2),
            "plate": "P1",
            "well": [f"A{i // 2:02d}" for i in range(N)] * 2,
            "field": 1,
        }
    )
    rng = np.random.default_rng(3)
    for data_set in data_sets(config["grid"]):
        path = layout.store(data_set)
        sizes, attrs = {"train": N, "test": N}, {"data_set": path.stem, "pixel_size_um": 1.3}
        with create_store(path, sizes, (16, 16), metadata, attrs, with_masks=False) as group:
            noise = 100 * (100 if data_set.phenotype == "toxic" else 1)
            for split in sizes:
                group[split][:, 0] = 1000 + rng.integers(0, noise, (N, 16, 16), dtype=np.uint16)
        write_bf_texture(config, data_set.name, layout.bf_texture(data_set), progress=False)
    return config


def write_runs(config: dict) -> dict:
    layout = Layout.of(config)
    rng = np.random.default_rng(0)
    for run in runs(config):
        # Each image's spread ranks its SSIM loss exactly; its N-MAE is noise; the shifted test
        # set's fields all lie further out than the in-distribution ones.
        spread = rng.permutation(N).astype(float) + 1
        shifted = run.shift != "none"
        # three matched cells an image, whose mean spread ranks their N-MAE exactly
        nmae = rng.random(3 * N)
        cells = pd.DataFrame(
            {"image": np.repeat(np.arange(N), 3), "label": 1, "nmae": nmae, "tta": 2 * nmae + 1}
        )
        write_run(
            layout,
            run,
            1 - spread / 100,
            tta=spread,
            nmae=rng.random(N),
            ood=rng.random(N) + (5.0 if shifted else 0.0),
            cells=cells,
        )
    return config


@pytest.fixture
def config(tmp_path):
    return write_runs(grid_config(tmp_path, [0]))


def test_the_table_finds_a_perfect_ranking_and_a_perfect_detector(config, tmp_path):
    table = trust_table(config)
    ranked = table[(table["statistic"] == "spearman") & (table["uncertainty"] == "tta")]
    exact = ranked[ranked["error"] == "1 - ssim"]
    # a monotone relation on every image, in every resample too (1 to float rounding: scipy
    # computes the ranks' Pearson correlation)
    assert len(exact) == 3 + 2
    np.testing.assert_allclose(exact[["value", "ci_low", "ci_high"]], 1.0, rtol=1e-12)
    noise = ranked[(ranked["error"] == "nmae") & (ranked["test_set"] != ALL)]
    assert (noise["value"].abs() < 0.6).all() and (noise["ci_low"] < 0).all()
    assert "1 - f1" not in set(table["error"])  # the runs have no instance scores
    per_cell = table[table["error"] == "cell nmae"]
    assert len(per_cell) == 3 and set(per_cell["images"]) == {3 * N}  # one row a run; cells
    np.testing.assert_allclose(per_cell[["value", "ci_low", "ci_high"]], 1.0, rtol=1e-12)
    detectors = table[table["statistic"] == "auroc"]
    assert list(detectors["uncertainty"]) == ["ood", "bf texture"]  # the model's, the baseline's
    for detector in detectors.itertuples():
        assert (detector.test_set, detector.shift, detector.task) == ("lung-toxic", "phenotype", 1)
        assert detector.value == 1.0 and detector.ci_low == pytest.approx(1.0, abs=1e-12)
    pooled = table[(table["test_set"] == ALL) & (table["model"] == "lung-nontoxic.dapi.s0")]
    assert set(pooled["images"]) == {2 * N} and set(pooled["shift"]) == {ALL}
    written = write_trust(config, tmp_path / "tables")
    pd.testing.assert_frame_equal(read_table(written["trust.parquet"]), table)


def test_a_kind_of_shift_met_in_two_runs_or_more_is_pooled(tmp_path):
    """Three cell types: a model meets the new cell type in two runs, and the new cell type and
    phenotype in two; each kind's AUROCs over its runs' images together, resampled as each run."""
    table = trust_table(write_runs(grid_config(tmp_path, [0], ("lung", "ovarian", "breast"))))
    model = table[(table["model"] == "lung-nontoxic.dapi.s0") & (table["statistic"] == "auroc")]
    pooled = model[model["test_set"] == ALL]
    assert sorted(zip(pooled["shift"], pooled["uncertainty"])) == [
        ("both", "bf texture"),
        ("both", "ood"),
        ("cell_type", "bf texture"),
        ("cell_type", "ood"),
    ]
    assert set(pooled["images"]) == {2 * N} and set(pooled["task"]) == {-1}
    ood = pooled[pooled["uncertainty"] == "ood"]
    np.testing.assert_allclose(ood[["value", "ci_low"]], 1.0, atol=1e-12)  # shifted all higher
    # the ovarian and breast BF are like lung's in the nontoxic runs: no texture to find there
    runs_of = model[(model["test_set"] != ALL) & (model["uncertainty"] == "bf texture")]
    assert (runs_of[runs_of["shift"] == "cell_type"]["ci_low"] < 0.5).all()


def test_the_trust_table_reads_its_first_resamples_and_at_most_its_cells(config):
    """``trust_resamples`` takes the first of the deltas' draws (a CI from 20 of 100 draws is
    that of a grid with 20 bootstrap resamples) and ``trust_cells`` a random subset of a run's
    cells, the perfect per-cell ranking still perfect on it."""
    capped = trust_table(
        {**config, "evaluation": {**config["evaluation"], "trust_resamples": 20, "trust_cells": 25}}
    )
    fewer = trust_table(
        {**config, "evaluation": {**config["evaluation"], "bootstrap_resamples": 20}}
    )
    images = capped["error"] != "cell nmae"
    pd.testing.assert_frame_equal(
        capped[images].reset_index(drop=True),
        fewer[fewer["error"] != "cell nmae"].reset_index(drop=True),
    )
    per_cell = capped[~images]
    assert set(per_cell["images"]) == {25}
    np.testing.assert_allclose(per_cell[["value", "ci_low", "ci_high"]], 1.0, rtol=1e-12)


def test_vsgrid_ood_gives_the_trust_tables_auroc_and_ci_for_the_same_scores(config):
    """``vsgrid ood`` (:func:`shift_aurocs`) and trust.csv draw an OOD AUROC's CI from the same
    resamples (each side's wells, then fields, the first ``trust_resamples`` of the deltas'):
    given the run's own OOD scores, the same value and CI to 1e-12, float rounding (the same
    function on the same weights; leaving out one of the 40 resamples moves the lower bound by
    6e-4). The scores overlap, so the CI is no point and its bounds tell draws apart."""
    config["evaluation"]["trust_resamples"] = 40  # of the 100 drawn: the first ones, in both
    layout, rng = Layout.of(config), np.random.default_rng(7)
    tables = []
    for run in runs(config):
        images = layout.run_table(run.model, run.test_set, "images")
        ood = rng.normal(1.0 if run.shift != "none" else 0.0, 1.0, N)
        write_table(read_table(images).assign(ood=ood), images)
        fields = open_store(layout.store(run.test_set)).split_metadata("test")
        tables.append(fields.assign(model=run.model.name, test_set=run.test_set.name, ood=ood))
    table = pd.concat(tables, ignore_index=True)[list(TABLE_COLUMNS)]
    [ours] = shift_aurocs(config, table).itertuples()
    [theirs] = (
        trust_table(config).query("statistic == 'auroc' and uncertainty == 'ood'").itertuples()
    )
    assert (ours.model, ours.test_set) == (theirs.model, theirs.test_set)
    assert theirs.ci_low < theirs.value < theirs.ci_high
    np.testing.assert_allclose(
        [ours.auroc, ours.auroc_low, ours.auroc_high],
        [theirs.value, theirs.ci_low, theirs.ci_high],
        rtol=1e-12,
    )
    shuffled = table.sample(frac=1.0, random_state=0)  # rows no longer in the test split's order
    with pytest.raises(VsgridError, match="not its 20 test fields in their order"):
        shift_aurocs(config, shuffled)


def test_runs_whose_predictions_say_nothing_have_no_rows(config):
    layout = Layout.of(config)
    for run in runs(config):
        images = layout.run_table(run.model, run.test_set, "images")
        write_table(read_table(images).drop(columns=["tta", "ood"]), images)
    assert trust_table(config).empty


def test_each_image_error_is_the_run_score_of_that_image_alone():
    images = pd.DataFrame({"image": range(3), "flag": ["", "blank", ""], "ssim": [0.9, 0.5, 0.7]})
    differences = pd.DataFrame(
        {
            "image": [0, 1, 2, 0, 1, 2],
            "feature": ["a"] * 3 + ["b"] * 3,
            "abs_diff_sum": [2.0, 1.0, 0.0, 4.0, 1.0, 8.0],
            "n_pairs": [1, 1, 0, 2, 1, 2],
            "n_matched": 1,
            "n_real": 1,
            "real_std": [2.0] * 3 + [4.0] * 3,
        }
    )
    errors = image_errors(RunValues.from_tables(images, differences), block=2)
    # a flagged image has no error; image 2 has no pair of feature a: its N-MAE is b's alone
    np.testing.assert_allclose(errors["1 - ssim"], [0.1, np.nan, 0.3])
    np.testing.assert_allclose(errors["nmae"], [(1.0 + 0.5) / 2, np.nan, 1.0])
    assert set(errors) == {"1 - ssim", "nmae"}


def test_spearman_and_auroc_of_constructed_cases():
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(np.r_[x, np.nan], np.r_[x, 1.0]) == pytest.approx(1.0)  # NaN pairs dropped
    assert np.isnan(spearman(x, np.ones(10))) and np.isnan(spearman(x[:2], x[:2]))
    assert auroc(x, x + 100) == 1.0 and auroc(x, x) == 0.5 and np.isnan(auroc(x, [np.nan]))
    assert list(drawn(np.array([0, 2, 1]))) == [1, 1, 2]
    rng = np.random.default_rng(0)
    tied = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)  # ties: average ranks
    assert spearman(*tied) == pytest.approx(stats.spearmanr(*tied).statistic, rel=1e-12)
    labels = np.r_[np.zeros(30), np.ones(20)]
    scores = rng.integers(0, 6, 50).astype(float)  # ties across the two sides count a half
    assert auroc(scores[:30], scores[30:]) == pytest.approx(
        roc_auc_score(labels, scores), rel=1e-12
    )


def test_a_resample_by_weights_scores_as_its_images_written_out():
    """The trust table scores every bootstrap resample from its weights in one call: each value
    equals scipy's and sklearn's on the resample written out (ties, a NaN and undrawn images
    included), to 1e-12."""
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=200), 1)
    y, x[5] = np.round(x + rng.normal(size=200), 1), np.nan
    weights = rng.poisson(1.0, (40, 200))
    weights[0, :197] = 0  # three images drawn: 2 with both values, too few for a Spearman
    found = spearman(x, y, weights=weights)
    for w, value in zip(weights, found):
        picked = drawn(w)
        picked = picked[np.isfinite(x[picked])]
        expected = stats.spearmanr(x[picked], y[picked]).statistic if len(picked) >= 3 else np.nan
        np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)
    inside, shifted = np.round(rng.normal(size=60), 1), np.round(rng.normal(0.5, 1, 50), 1)
    w_in, w_shifted = rng.poisson(1.0, (30, 60)), rng.poisson(1.0, (30, 50))
    found = auroc(inside, shifted, inside_weights=w_in, shifted_weights=w_shifted)
    for a, b, value in zip(w_in, w_shifted, found):
        labels = np.r_[np.zeros(a.sum()), np.ones(b.sum())]
        scores = np.r_[inside[drawn(a)], shifted[drawn(b)]]
        assert value == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)


def write_prediction(layout, run, images: np.ndarray) -> None:
    """A prediction group of ``run`` as inference writes it (image only), of ``images``."""
    store = open_store(layout.store(run.test_set))
    group = zarr.open_group(layout.prediction(run.model, run.test_set), mode="w", zarr_format=3)
    image = arrays.create(group, images.shape, chunks=(1, 4, 4), dtype="uint16", name="image")
    image[:] = images
    group.attrs.update(
        model=run.model.name, stain="dapi", test_set=run.test_set.name, store_id=store.store_id
    )


def test_the_spread_over_seeds_is_read_from_their_predictions_and_joins_the_table(tmp_path):
    config = grid_config(tmp_path, [0, 1, 2])
    layout = Layout.of(config)
    groups = seed_groups(config)
    assert len(groups) == 3 and all(len(group) == 3 for group in groups.values())
    rng = np.random.default_rng(3)
    truth = {}
    for (model_type, test_set), group in groups.items():
        # the seeds disagree more on later images: image i's pixels spread by about 20 i counts
        # (wide enough apart that rounding to counts leaves no two images' spreads tied)
        base = rng.integers(1000, 2000, (N, 4, 4))
        offsets = rng.normal(size=(3, N, 1, 1)) * 20 * np.arange(1, N + 1)[None, :, None, None]
        stack = np.rint(base + offsets).astype(np.uint16)
        for run, images in zip(group, stack):
            write_prediction(layout, run, images)
        out = layout.seed_spread(model_type, test_set)
        spread = write_seed_spread(config, model_type, test_set, out)
        expected = stack.astype(float).std(0, ddof=1).mean((1, 2))
        # the same numbers block by block or at once: float64 sums in another order
        np.testing.assert_allclose(spread, expected, rtol=1e-12)
        np.testing.assert_array_equal(read_table(out)["seeds"], spread)
        truth[(model_type, test_set)] = spread
    for run in runs(config):
        write_run(layout, run, 1 - truth[(run.model.model_type, run.test_set.name)] / 1000)
    table = trust_table(config)
    ranked = table[(table["uncertainty"] == SEEDS) & (table["error"] == "1 - ssim")]
    # every run, and each model over its runs: the spread ranks the SSIM loss exactly
    assert len(ranked) == 3 * 3 + 2 * 3  # 9 runs; 2 train sets x 3 seeds
    np.testing.assert_allclose(ranked["value"], 1.0, rtol=1e-12)
    with pytest.raises(VsgridError, match="not a run of the grid with two seeds"):
        write_seed_spread(
            grid_config(tmp_path / "one", [0]),
            "lung-nontoxic.dapi",
            "lung-toxic",
            tmp_path / "x.parquet",
        )


def test_figure_10a_shows_the_models_ood_score_per_run_only(config):
    """The baseline's AUROCs and those pooled over a kind of shift are in trust.csv, not in the
    figure's cells, where they would be averaged with the model's."""
    table = trust_table(config)
    run = table[(table["statistic"] == "auroc") & (table["uncertainty"] == "ood")]
    table.loc[table["uncertainty"] == "bf texture", "value"] = 0.25
    pooled = run.assign(test_set=ALL, shift="phenotype", value=0.5)
    figure = figure10(pd.concat([table, pooled]), ["dapi"])[0]
    shown = [text.get_text() for text in figure.axes[0].texts]
    assert shown == [f"{v:.2f}" for v in run["value"]] and "0.25" not in shown
