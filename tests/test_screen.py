"""Level 4: Hill fits, hit calls, Z', kappa and a plate's decisions, on plates built by hand."""

import copy
import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shared import DOSES, decide, plate_wells, readout
from sklearn.metrics import cohen_kappa_score

from vsgrid.files import write_table
from vsgrid.screen.calls import assay_controls, assay_z_prime, cohen_kappa, hit_calls, z_prime
from vsgrid.screen.curves import LOG_EC50_STEP, fit_hill, fit_reason, hill, truth_errors
from vsgrid.screen.metrics import Missing
from vsgrid.screen.plate import Plate, ScreenSettings


def test_a_hill_fit_recovers_the_ec50_of_a_curve_it_was_drawn_from():
    c = np.repeat(DOSES, 5)
    exact = fit_hill(c, hill(np.log10(c), 2.0, 10.0, np.log10(0.17), 2.0)[None, :])
    # the grid's step bounds the error of a noiseless fit
    assert abs(exact.log_ec50[0] - np.log10(0.17)) <= LOG_EC50_STEP
    assert exact.bottom[0] == pytest.approx(2.0, abs=0.2) and exact.top[0] == pytest.approx(
        10.0, abs=0.2
    )
    noisy = hill(np.log10(c), 2.0, 10.0, np.log10(0.17), 2.0) + np.random.default_rng(0).normal(
        0, 0.3, (50, c.size)
    )
    fits = fit_hill(c, noisy)  # 50 rows fitted at once
    assert np.all(np.abs(fits.log_ec50 - np.log10(0.17)) < 0.15)


def test_fitting_resamples_a_block_at_a_time_gives_the_same_fits(monkeypatch):
    """The least squares run a block of resamples at a time to stay in the CPU's cache; each
    value is elementwise arithmetic on the same arrays, so any block size gives the same bits."""
    from vsgrid.screen import curves

    c = np.repeat(DOSES, 4)
    rng = np.random.default_rng(3)
    y = hill(np.log10(c), 1.0, 5.0, rng.uniform(-2, 1, (101, 1)), 1.5) + rng.normal(
        0, 0.4, (101, c.size)
    )
    fits = {}
    for block in (1, 7_000, 10**9):  # one resample per block, a few, all at once
        monkeypatch.setattr(curves, "_BLOCK", block)
        fits[block] = fit_hill(c, y)
    for fit in fits.values():
        for field in ("log_ec50", "bottom", "top", "slope", "flat", "converged"):
            np.testing.assert_array_equal(getattr(fit, field), getattr(fits[1], field))
    assert np.isfinite(fits[1].log_ec50).sum() > 50


def test_a_flat_or_out_of_range_curve_has_no_ec50_and_says_why():
    c = np.repeat(DOSES, 5)
    flat = fit_hill(c, np.random.default_rng(1).normal(5.0, 1.0, (1, c.size)))
    assert flat.flat[0] and np.isnan(flat.log_ec50[0]) and "flat" in fit_reason(flat)
    constant = fit_hill(c, np.full((1, c.size), 3.0))
    assert constant.flat[0] and np.isnan(constant.log_ec50[0])
    with pytest.raises(Missing, match="3 concentration"):
        fit_hill(np.repeat(DOSES[:3], 5), np.ones((1, 15)))


def test_z_prime_and_kappa_match_their_definitions():
    positive, negative = np.array([1.0, 1.2, 0.9, 1.1]), np.array([3.0, 3.1, 2.9, 3.2])
    expected = 1 - 3 * (positive.std(ddof=1) + negative.std(ddof=1)) / abs(
        positive.mean() - negative.mean()
    )
    assert z_prime(positive, negative)[0] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(Missing, match="same mean"):
        z_prime(np.array([1.0, 2.0]), np.array([2.0, 1.0]))
    rng = np.random.default_rng(2)
    a, b = rng.random(40) < 0.3, rng.random(40) < 0.4
    assert cohen_kappa(a, b)[0] == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    with pytest.raises(Missing, match="both stains call none of the 5 wells a hit"):
        cohen_kappa(np.zeros(5, bool), np.zeros(5, bool))


def test_hits_are_wells_k_robust_sds_from_dmso():
    dmso = np.array([9.0, 10.0, 11.0, 10.0, 10.0])  # median 10, MAD 0 -> scale 0
    with pytest.raises(Missing, match="no spread"):
        hit_calls(np.array([20.0]), dmso, 3.0)
    dmso = np.array([8.0, 9.0, 10.0, 11.0, 12.0])  # median 10, MAD 1 -> robust SD 1.4826
    calls = hit_calls(np.array([10.0, 14.0, 15.0, 5.0]), dmso, 3.0)
    assert calls.tolist() == [[False, False, True, True]]


def test_virtual_equal_to_real_agrees_perfectly_and_noise_makes_every_metric_worse():
    rng = np.random.default_rng(3)
    wells = plate_wells()
    real = readout(wells, {"CPD-01": 0.1, "CPD-02": 0.5}, rng)
    plate = Plate(wells, ScreenSettings())
    index = plate.resamples(20, np.random.default_rng(0))
    same = decide(plate, real, real.copy(), index)
    assert (
        same["ec50_error"].values[0] == 0
        and same["hit_kappa"].values[0] == 1
        and same["z_prime"].values[0] == same["z_prime_real"].values[0]
    )
    degraded = decide(plate, real, real + rng.normal(0, 0.25, len(real)), index)
    assert degraded["ec50_error"].values[0] > 0.05
    assert degraded["hit_kappa"].values[0] < 0.9
    assert degraded["z_prime"].values[0] < same["z_prime"].values[0]
    assert index.shape == (21, len(wells)) and (index[0] == np.arange(len(wells))).all()
    # resamples stay within (compound, concentration): the design of the plate is kept
    assert (
        (
            wells.iloc[index[5]].reset_index(drop=True)[["compound", "concentration"]]
            == wells[["compound", "concentration"]]
        )
        .all()
        .all()
    )


def test_bad_plates_report_the_metric_missing_with_its_reason():
    rng = np.random.default_rng(4)
    no_dmso = plate_wells(dmso=0)
    values = readout(no_dmso, {"CPD-01": 0.1, "CPD-02": 0.5}, rng)
    out = decide(Plate(no_dmso, ScreenSettings()), values, values, np.arange(len(no_dmso))[None, :])
    assert isinstance(out["hit_kappa"], Missing) and "negative-control" in str(out["hit_kappa"])
    assert isinstance(out["z_prime"], Missing) and np.isfinite(out["ec50_error"].values[0])

    no_positive = plate_wells(positives=0)
    values = readout(no_positive, {"CPD-01": 0.1, "CPD-02": 0.5}, rng)
    out = decide(
        Plate(no_positive, ScreenSettings()), values, values, np.arange(len(no_positive))[None, :]
    )
    assert isinstance(out["z_prime"], Missing) and "positive-control" in str(out["z_prime"])

    few = plate_wells(doses=DOSES[:3])
    values = readout(few, {"CPD-01": 0.1, "CPD-02": 0.5}, rng)
    out = decide(Plate(few, ScreenSettings()), values, values, np.arange(len(few))[None, :])
    assert isinstance(
        out["ec50_error"], Missing
    ) and "CPD-01: 3 concentration(s); a Hill fit needs 4" in str(out["ec50_error"])

    wells = plate_wells()
    same = np.full(len(wells), 7.0)
    out = decide(Plate(wells, ScreenSettings()), same, same, np.arange(len(wells))[None, :])
    assert all(isinstance(v, Missing) for v in out.values()), out
    assert "flat" in str(out["ec50_error"]) and "no spread" in str(out["hit_kappa"])


def test_a_single_positive_control_well_leaves_z_prime_missing_with_its_reason():
    wells = plate_wells(positives=1)
    values = readout(wells, {"CPD-01": 0.1, "CPD-02": 0.5}, np.random.default_rng(6))
    plate = Plate(wells, ScreenSettings())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "degrees of freedom <= 0" was the silent NaN
        out = decide(plate, values, values, plate.resamples(10, np.random.default_rng(0)))
    for metric in ("z_prime", "z_prime_real"):
        assert isinstance(out[metric], Missing), out[metric]
        assert str(out[metric]).startswith("one positive-control well: no spread")


def test_a_compounds_zero_concentration_wells_are_its_vehicle():
    """A compound's 0-concentration wells are left out of its fit and of the hit calls: the plate
    decides exactly as without them, whatever they read."""
    rng = np.random.default_rng(7)
    dosed = plate_wells()
    vehicle = pd.DataFrame({"compound": ["CPD-01"] * 3 + ["CPD-02"] * 2, "concentration": 0.0})
    wells = pd.concat([dosed, vehicle], ignore_index=True)
    real = readout(dosed, {"CPD-01": 0.1, "CPD-02": 0.5}, rng)
    virtual = real + rng.normal(0, 0.1, len(real))
    odd = np.array([50.0, -50.0, 9.0, 20.0, 0.0])  # hits, were they treated; virtual disagrees
    with_vehicle = decide(
        Plate(wells, ScreenSettings()),
        np.concatenate([real, odd]),
        np.concatenate([virtual, -odd]),
        np.arange(len(wells))[None, :],
    )
    without = decide(Plate(dosed, ScreenSettings()), real, virtual, np.arange(len(dosed))[None, :])
    assert with_vehicle.keys() == without.keys()
    for metric, values in without.items():  # the same wells, the same arithmetic: equal exactly
        assert np.array_equal(with_vehicle[metric].values, values.values), metric
    assert Plate(wells, ScreenSettings()).vehicle.sum() == 5
    table = truth_errors(
        Plate(wells, ScreenSettings()), np.concatenate([real, odd]), {"CPD-01": 0.1}
    )
    assert table["log_ec50"].notna().all()
    with pytest.raises(Missing, match="concentration 0 is not a dose"):
        fit_hill(np.r_[0.0, DOSES], np.ones((1, 7)))


def test_a_hill_fit_leaves_wells_without_a_value_out_or_says_why():
    c = np.repeat(DOSES, 3)
    y = hill(np.log10(c), 2.0, 10.0, np.log10(0.17), 2.0) + np.random.default_rng(8).normal(
        0, 0.3, c.size
    )
    holed = y.copy()
    holed[[2, 7]] = np.nan  # two wells without cells
    keep = np.isfinite(holed)
    fit, expected = fit_hill(c, holed[None, :]), fit_hill(c[keep], y[keep][None, :])
    for field in ("log_ec50", "bottom", "top", "slope", "flat", "converged"):
        assert np.array_equal(getattr(fit, field), getattr(expected, field)), field
    assert np.isfinite(fit.log_ec50[0]) and fit_reason(fit) == ""
    gone = y.copy()
    gone[c >= 0.3] = np.nan  # three of six concentrations have no value left
    with pytest.raises(Missing, match=r"3 concentration\(s\) with a value; a Hill fit needs 4"):
        fit_hill(c, gone[None, :])
    rows = np.vstack([y, holed])  # a resample that drew a well without a value
    with pytest.raises(Missing, match="NaN in some resamples only"):
        fit_hill(c, rows)


def test_two_dmso_wells_give_the_plates_calls_and_a_resample_without_spread_is_nan():
    """With two DMSO wells a resample draws one of them twice in half the resamples (MAD 0, no
    threshold): the plate's own calls stand, and only those resamples have no kappa."""
    rng = np.random.default_rng(9)
    wells = plate_wells(dmso=2)
    real = readout(wells, {"CPD-01": 0.1, "CPD-02": 0.5}, rng, noise=0.05)
    virtual = real + rng.normal(0, 0.05, len(real))
    plate = Plate(wells, ScreenSettings())
    index = plate.resamples(200, np.random.default_rng(0))
    out = decide(plate, real, virtual, index)
    itself = decide(plate, real, virtual, index[:1])
    for metric in ("hit_kappa", "hit_precision", "hit_recall"):
        assert not isinstance(out[metric], Missing), out[metric]
        # the plate's value comes from the plate
        assert out[metric].values[0] == itself[metric].values[0]
    drawn_twice = index[:, plate.negative][:, 0] == index[:, plate.negative][:, 1]
    assert 60 < drawn_twice.sum() < 140  # about half of 200
    kappa = out["hit_kappa"]
    assert np.isnan(kappa.values[drawn_twice]).all()
    assert np.isfinite(kappa.values[~drawn_twice]).all()
    assert set(kappa.undefined[drawn_twice]) == {
        "draw DMSO wells without spread (MAD 0, no threshold) in a stain"
    }
    assert set(kappa.undefined[~drawn_twice]) == {""}

    same = real.copy()
    same[plate.negative] = 1.0  # two identical DMSO wells: the plate itself has no threshold
    out = decide(plate, same, same, index)
    assert str(out["hit_kappa"]).startswith("real stain: the DMSO wells have no spread")
    one_dmso = plate_wells(dmso=1)  # the plate without its first DMSO well
    one = decide(
        Plate(one_dmso, ScreenSettings()), real[1:], real[1:], np.arange(len(one_dmso))[None, :]
    )
    assert str(one["hit_kappa"]).startswith("real stain: one DMSO well has no spread")
    assert str(one["z_prime"]).startswith("one negative-control well: no spread")


def test_a_resample_without_a_value_is_nan_and_the_plates_value_stands():
    assert np.isnan(
        z_prime(np.array([[1.0, 2.0], [3.0, 3.0]]), np.array([[5.0, 6.0], [3.0, 3.0]]))[1]
    )
    real = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    kappa = cohen_kappa(real, np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    assert kappa[0] == pytest.approx(0.5) and np.isnan(kappa[1])
    calls = hit_calls(np.array([[20.0], [20.0]]), np.array([[9.0, 11.0], [9.0, 9.0]]), 3.0)
    assert calls[0].tolist() == [1.0] and np.isnan(calls[1]).all()


def test_real_ec50s_are_checked_against_the_truth():
    wells = plate_wells(replicates=5)
    truth = {"CPD-01": 0.1, "CPD-02": 0.5}
    table = truth_errors(
        Plate(wells, ScreenSettings()), readout(wells, truth, np.random.default_rng(5)), truth
    )
    assert table["compound"].tolist() == ["CPD-01", "CPD-02"]
    assert (table["error"].abs() < 0.1).all() and (table["reason"] == "").all()


# --------------------------------------------------------------------------- on a synthetic screen


@pytest.fixture(scope="module")
def lung_screen(quick_config, tmp_path_factory):
    """The quick grid's lung screen, one field per well (one held-out plate, three compounds),
    segmented and profiled from its real DAPI."""
    from vsgrid.data.store import open_store
    from vsgrid.data.synthetic import build_screen_store
    from vsgrid.evaluation.segment import segmenter

    config = copy.deepcopy(quick_config)
    config["evaluation"]["screen"].update(enabled=True, fields_per_well=1, compounds=3)
    # A plate whose wells do not vary: the metrics are under test, and with one field per well the
    # default seeding variation alone moves these EC50s by up to 0.56 log10 and leaves no hits.
    variation = config["data"]["synthetic"]["variation"]
    config["data"]["synthetic"]["variation"] = dict.fromkeys(variation, 0.0)
    store = open_store(
        build_screen_store("lung", config, tmp_path_factory.mktemp("screen"), progress=False)
    )
    images = store.images("test")[:, store.channel_index("dapi")]
    segment = segmenter(config["segmentation"], "dapi", float(store.attrs["pixel_size_um"]))
    return store, images, segment


def profiles(store, images, segment) -> pd.DataFrame:
    from vsgrid.evaluation.features import FeatureSet
    from vsgrid.screen.wells import train_scorer, well_profiles

    features = FeatureSet.of(
        ("intensity", "sizeshape"), names=["Intensity_MeanIntensity", "AreaShape_Area"]
    )
    masks = segment(images)
    meta = store.split_metadata("test")
    cells = pd.concat(
        [
            features.measure(image, m).assign(phenotype=p)
            for image, m, p in zip(images[::3], masks[::3], meta["phenotype"][::3])
        ]
    )
    scorer = train_scorer(cells, cells["phenotype"].to_numpy(), features.columns, trees=20, seed=0)
    return well_profiles(
        images, masks, meta, features, scorer, counts=True, readouts=features.columns, block_size=16
    )


def test_the_real_stains_cell_count_finds_the_true_ec50s_of_the_synthetic_plate(lung_screen):
    store, images, segment = lung_screen
    real = profiles(store, images, segment)
    assert len(real) == store.split_metadata("test")[["plate", "well"]].drop_duplicates().shape[0]
    table = truth_errors(
        Plate(real[["compound", "concentration"]], ScreenSettings()),
        real["cell_count"].to_numpy(),
        store.attrs["true_ec50_um"],
    )
    # measured: all three within 0.2 log10 units of the truth
    assert (table["error"].abs() <= 0.3).sum() >= 2, table


@pytest.fixture(scope="module")
def assay(quick_config, tmp_path_factory):
    """The quick grid's lung screen as it runs (three compounds, its wells varying), DAPI only,
    the real DAPI segmented and profiled by the level-4 steps, screen-segment and
    screen-reference, into the results layout, with a ranking of 20 intensity and shape features
    written by hand."""
    from vsgrid.data.synthetic import build_screen_store
    from vsgrid.evaluation.features import feature_names
    from vsgrid.evaluation.segment import segment_store
    from vsgrid.layout import Layout
    from vsgrid.screen.wells import measure_screen_reference, screen_store, segment_forest_fields

    work = tmp_path_factory.mktemp("assay")
    config = copy.deepcopy(quick_config)
    config["data"]["dir"], config["results"]["dir"] = str(work / "data"), str(work / "results")
    config["grid"]["cell_types"] = ["lung"]
    config["evaluation"]["screen"].update(
        enabled=True, compounds=3, forest_fields=100, train_phenotypes=["nontoxic"]
    )
    build_screen_store("lung", config, Path(config["data"]["dir"]), progress=False)
    store, layout = screen_store(config, "lung"), Layout.of(config)
    names = [n for n in feature_names(("intensity", "sizeshape")) if "Euler" not in n][:20]
    ranking = work / "ranking.tsv"
    write_table(pd.DataFrame({"feature": names, "selected": True, "rank": range(1, 21)}), ranking)
    masks = layout.screen_masks("lung", "dapi")
    forest_masks = layout.screen_forest_masks("lung", "dapi")
    segment_store(config, store, "dapi", masks)
    segment_forest_fields(config, "lung", "dapi", forest_masks)
    real = measure_screen_reference(
        config,
        "lung",
        "dapi",
        masks=masks,
        forest_masks=forest_masks,
        ranking=ranking,
        wells_out=layout.screen_real_wells("lung", "dapi"),
        forest_out=layout.screen_forest("lung", "dapi"),
        workers=1,
    )
    return config, store, real


@pytest.mark.slow  # the quick grid's lung screen built, segmented and measured: a minute
def test_the_screen_controls_say_the_oracle_is_replaceable_and_the_degraded_stain_is_not(assay):
    """Through the steps the workflow runs (screen-controls, screen-run, screen-tables): the real
    DAPI plus camera noise (SD 30 counts) keeps every CI inside its margin; blurred (sigma 3 px)
    it lies wholly outside one. They are the outcome's first lines, the screen's model after them;
    the real stain passes as an assay (Z' >= 0.5)."""
    from vsgrid.grid import ScreenControl, control_runs, screen_controls, screen_runs
    from vsgrid.layout import Layout
    from vsgrid.screen.controls import write_controls
    from vsgrid.screen.tables import SUMMARY_READOUT, write_screen_tables
    from vsgrid.screen.wells import measure_screen_run

    config, store, real = assay
    layout, rng = Layout.of(config), np.random.default_rng(0)
    names = screen_controls(config)  # the quick config's: the oracle and the degraded
    assert names == ("oracle", "degraded")
    controls = {c: ScreenControl(c, "dapi") for c in names}
    write_controls(
        config,
        "lung",
        "dapi",
        {c: layout.screen_prediction(m, "lung") for c, m in controls.items()},
        masks=layout.screen_masks("lung", "dapi"),
    )
    for control in controls.values():
        measure_screen_run(
            config,
            "lung",
            "dapi",
            model=control.name,
            reference=layout.screen_real_wells("lung", "dapi"),
            forest=layout.screen_forest("lung", "dapi"),
            prediction=layout.screen_prediction(control, "lung"),
            out=layout.screen_wells(control, "lung"),
        )
    # The screen's one model stains as the oracle does, and says how far to trust each well.
    (model,) = [run.model for run in screen_runs(config)]
    said = pd.read_parquet(layout.screen_wells(controls["oracle"], "lung"))
    write_table(said.assign(ood=rng.random(len(said))), layout.screen_wells(model, "lung"))

    write_screen_tables(config, layout.tables)
    table = pd.read_parquet(layout.table("screen"))
    verdicts = pd.read_parquet(layout.table("screen_verdicts")).set_index("model_type")
    margins = config["evaluation"]["screen"]["margins"]
    z_real = table.set_index(["model", "readout", "metric"]).loc[
        (model.name, SUMMARY_READOUT, "z_prime_real")
    ]
    assert z_real["ci_low"] >= margins["z_prime"], z_real
    assert verdicts.loc["control-oracle.dapi", "verdict"] == "replaceable", verdicts
    assert verdicts.loc["control-degraded.dapi", "verdict"] == "not replaceable", verdicts
    assert verdicts.loc["control-oracle.dapi", "control"] == "oracle"
    assert list(verdicts.index) == [*(c.name for c in controls.values()), model.model_type]
    assert verdicts.loc[model.model_type, "verdict"] == "replaceable", verdicts
    controlled = table[table["control"] != ""]
    assert controlled["baseline_model"].eq("").all() and controlled["delta"].isna().all()
    assert len(control_runs(config)) == len(names)
    outcome = layout.tables.joinpath("screen_outcome.txt").read_text().splitlines()
    assert [line.split()[0] for line in outcome[1:4]] == list(verdicts.index)
    from vsgrid.screen.figures import figure8

    figure = figure8(table, verdicts.reset_index(), ["lung"], ["dapi"])
    (panel,) = [ax for ax in figure.axes if ax.get_title().startswith("replaceable?")]
    assert [t.get_text() for t in panel.get_yticklabels()] == [*names, "lung-nontoxic"]
    assert [t.get_text().split("\n")[0] for t in panel.texts] == ["yes", "no", "yes"]

    # The sentinel rows read the same readout, wells and resamples: k = 0 is the screen table's
    # row (Z' on the readout normalized per plate, not as measured: equal to rounding).
    from vsgrid.screen.sentinels import LOWEST_TRUST, smallest_replaceable_k

    trust = pd.read_parquet(layout.table("screen_trust"))
    screened = table[table["readout"] == SUMMARY_READOUT].set_index(["model", "metric"])
    unsentinelled = trust[(trust["k"] == 0) & (trust["choice"] == LOWEST_TRUST)]
    assert len(unsentinelled)
    for row in unsentinelled.itertuples():
        expected = screened.loc[(row.model, row.metric)]
        exact = row.metric in ("ec50_error", "hit_kappa", "hit_precision", "hit_recall")
        for column in ("value", "ci_low", "ci_high"):
            assert getattr(row, column) == pytest.approx(
                expected[column], rel=0 if exact else 1e-9, nan_ok=True
            ), (row.metric, column)
    own_rows = trust[(trust["model"] == model.name) & (trust["metric"] != "flip_auroc")]
    assert smallest_replaceable_k(own_rows, margins) == 0
    assert set(trust["metric"]) >= {"flip_auroc", "ec50_error", "hit_kappa", "z_prime"}


def test_dmso_wells_on_one_edge_leave_calls_z_and_profiles_missing_and_the_verdict_undecided():
    """DMSO down column 1 only: the baseline every call and Z' reads is the edge's. Each metric that
    reads it is missing with that reason, and no verdict is given on it."""
    from vsgrid.config import validate
    from vsgrid.data.plates import well_name
    from vsgrid.screen.tables import SUMMARY_READOUT
    from vsgrid.screen.verdicts import verdict_table

    rng = np.random.default_rng(4)
    wells = plate_wells(dmso=16)
    real = readout(wells, {"CPD-01": 0.1, "CPD-02": 0.5}, rng)
    names = [well_name(i % 16, i // 16) for i in range(len(wells))]  # the 16 DMSO wells: column 1
    faithful = real + rng.normal(0, 0.001, len(real))
    flattened = 0.6 + 0.1 * (real - 0.6) + rng.normal(0, 0.05, len(real))  # wholly outside
    table, name = two_runs(wells, real, faithful, flattened, names=names)
    rows = table.set_index(["model", "readout", "metric"])
    for readout_, metric in (
        (SUMMARY_READOUT, "hit_kappa"),
        (SUMMARY_READOUT, "z_prime_real"),
        ("profile", "activity_map"),
    ):
        row = rows.loc[(name, readout_, metric)]
        assert np.isnan(row["value"]), (readout_, metric)
        assert row["reason"].startswith("every DMSO well lies on one edge (column 1 of plate P1)")
    assert np.isfinite(rows.loc[(name, SUMMARY_READOUT, "ec50_error"), "value"])
    margins = validate({})["evaluation"]["screen"]["margins"]
    verdicts = verdict_table(table, margins, SUMMARY_READOUT)
    assert set(verdicts["verdict"]) == {"undecided"}
    assert verdicts["why"].str.contains("column 1 of plate P1").all(), verdicts["why"]


MODEL = "lung-nontoxic.dapi.s0"
NAN_IN_DMSO = (
    f"the readout is missing (NaN) in all 32 negative-control wells (DMSO) in the {MODEL} "
    "virtual stain"
)


def nan_in(wells: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A real readout, and a virtual one that is NaN in every DMSO well or in every well."""
    real = readout(wells, {"CPD-01": 0.1, "CPD-02": 0.5}, np.random.default_rng(4))
    lost = wells["compound"].eq("DMSO").to_numpy() if where == "dmso" else np.ones(len(wells), bool)
    return real, np.where(lost, np.nan, real)


def test_a_readout_missing_in_every_dmso_well_says_so_not_that_the_plate_has_none():
    from vsgrid.screen.profiles import activity

    wells = plate_wells(dmso=32)
    real, virtual = nan_in(wells, "dmso")
    plate, usable = Plate(wells, ScreenSettings()).valued({"real": real, MODEL: virtual})
    out = decide(plate, real[usable], virtual[usable], np.arange(usable.sum())[None, :])
    assert str(out["hit_kappa"]) == str(out["z_prime"]) == NAN_IN_DMSO
    with pytest.raises(Missing, match=re.escape(f"{NAN_IN_DMSO}: no treatment can be retrieved")):
        activity(plate, real[usable, None])
    plate, _ = Plate(wells.iloc[32:], ScreenSettings()).valued({"real": real[32:]})
    assert plate.without("negative", "negative-control wells") == (
        "the plate has no negative-control wells"  # none on the plate: that is what is true
    )


def test_a_readout_missing_in_every_well_says_so_not_that_the_plate_has_no_compounds():
    wells = plate_wells(dmso=32)
    real, virtual = nan_in(wells, "all")
    plate, usable = Plate(wells, ScreenSettings()).valued({"real": real, MODEL: virtual})
    out = decide(plate, real[usable], virtual[usable], np.arange(0)[None, :])
    every = f"the readout is missing (NaN) in all {len(wells)} wells in the {MODEL} virtual stain"
    assert str(out["ec50_error"]) == f"no compound has a real-stain EC50 ({every})"
    assert str(out["hit_kappa"]) == str(out["z_prime"]) == every


@pytest.mark.parametrize("where", ["dmso", "all"])
def test_the_screen_table_says_the_virtual_readout_is_missing_not_that_wells_are(where):
    wells = plate_wells(dmso=32)
    real, virtual = nan_in(wells, where)
    table, name = two_runs(wells, real, real, virtual, resamples=5)
    reasons = " ".join(table.loc[table["model"] == name, "reason"].dropna())
    assert "the plate has no" not in reasons and "no compounds on the plate" not in reasons
    assert f"in the {name} virtual stain" in reasons


def test_z_prime_is_an_assays_per_plate_and_per_positive_control():
    """Two plates, the second's readout twice the first's (a staining batch), and two positive
    controls that move it by different amounts: pooled, Z' would count the plates' and the
    controls' differences as noise. Each plate's best control (staurosporine, Z' about 0.91) is
    what the screen reports, averaged over its plates; resamples keep wells on their plate."""
    rng = np.random.default_rng(7)
    design = pd.DataFrame(
        {
            "compound": ["DMSO"] * 16 + ["etoposide"] * 8 + ["staurosporine"] * 8,
            "concentration": [0.0] * 16 + [10.0] * 8 + [1.0] * 8,
        }
    )
    wells = pd.concat([design.assign(plate=p) for p in ("P1", "P2")], ignore_index=True)
    means, sds = np.repeat([0.1, 0.5, 0.8], [16, 8, 8]), np.repeat([0.01, 0.01, 0.01], [16, 8, 8])
    values = np.r_[rng.normal(means, sds), 2 * rng.normal(means, sds)]
    plate = Plate(wells, ScreenSettings())
    index = plate.resamples(50, rng)
    controls = assay_controls(plate, values)
    assert controls == {"P1": "staurosporine", "P2": "staurosporine"}
    z = assay_z_prime(plate, values, index, controls)
    per_plate = [
        z_prime(
            values[on & wells["compound"].eq("staurosporine").to_numpy()],
            values[on & plate.negative],
        )[0]
        for on in (wells["plate"].eq(p).to_numpy() for p in ("P1", "P2"))
    ]
    assert z[0] == pytest.approx(np.mean(per_plate)) and z[0] > 0.85
    assert z_prime(values[plate.positive], values[plate.negative])[0] < 0  # pooled
    assert (wells["plate"].to_numpy()[index] == wells["plate"].to_numpy()).all()


def test_screen_commands_refuse_bad_input_in_one_line(tmp_path, capsys):
    from vsgrid.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dir: {tmp_path / 'data'}}}\n")
    assert main(["screen-store", "--config", str(config), "--cell-type", "kidney"]) == 2
    assert "--cell-type 'kidney' is not a cell type of the grid" in capsys.readouterr().err


# --------------------------------------------------------------------------- the phenotype forest


def forest_training(rng, cells=400):
    """Cells whose two first features tell the phenotypes apart, some values missing."""
    from vsgrid.grid import NONTOXIC, TOXIC
    from vsgrid.screen.wells import ForestTraining

    toxic = rng.random(cells) < 0.4
    features = pd.DataFrame(
        rng.normal(size=(cells, 4)) + toxic[:, None] * [1.0, 0.5, 0.0, 0.0],
        columns=["Intensity_A", "AreaShape_B", "Texture_C", "Granularity_D"],
    )
    features.iloc[::17, 2] = np.nan
    return ForestTraining(features, np.where(toxic, TOXIC, NONTOXIC).astype(object), 25, 3)


def forest_path(results, stain):
    """Where the lung screen's jobs keep what a stain's phenotype forest is trained from."""
    from vsgrid.layout import Layout

    return Layout(results, results).screen_forest("lung", stain)


def test_the_refit_forest_scores_every_cell_as_the_forest_it_replaces(tmp_path):
    """The screen's jobs refit the forest from its training table: the same scores bit for bit
    (same data, seed and tree order; any number of threads for the fit, one for the scores)."""
    from vsgrid.screen.wells import ForestTraining

    rng = np.random.default_rng(10)
    training = forest_training(rng)
    original = training.fit()
    path = forest_path(tmp_path, "dapi")
    training.write(path)
    refit = ForestTraining.read(path).fit(n_jobs=2)
    cells = forest_training(rng, cells=300).cells
    scores = original(cells)
    assert refit.features == original.features and np.array_equal(refit(cells), scores)
    assert len(np.unique(scores)) > 100  # scores spread over the cells, not one value


def test_the_forest_is_data_and_a_planted_pickle_is_never_loaded(tmp_path):
    from vsgrid.errors import VsgridError
    from vsgrid.files import write_table
    from vsgrid.screen.wells import ForestTraining

    marker = tmp_path / "planted code ran"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    training = forest_training(np.random.default_rng(11))
    training.write(forest_path(tmp_path, "dapi"))
    forest_path(tmp_path, "dapi").with_name("dapi.forest.joblib").write_bytes(
        pickle.dumps(Payload())
    )  # the old name
    ForestTraining.read(forest_path(tmp_path, "dapi")).fit()
    forest_path(tmp_path, "fitc").write_bytes(pickle.dumps(Payload()))  # a pickle at the new name
    with pytest.raises(VsgridError, match="fitc.forest.parquet"):
        ForestTraining.read(forest_path(tmp_path, "fitc"))
    assert not marker.exists()
    source = Path(__file__).resolve().parents[1] / "src" / "vsgrid"
    loader = re.compile(r"joblib|pickle\.loads?\(|allow_pickle=True")  # what runs a pickle's code
    assert [p for p in source.rglob("*.py") if loader.search(p.read_text())] == []

    damaged = forest_path(tmp_path, "dapi")
    damaged.write_bytes(damaged.read_bytes()[:-100])
    with pytest.raises(VsgridError, match="dapi.forest.parquet"):
        ForestTraining.read(damaged)
    write_table(training.cells, forest_path(tmp_path, "cy5"))  # features without phenotypes
    with pytest.raises(VsgridError, match="cy5.forest.parquet is not a phenotype forest"):
        ForestTraining.read(forest_path(tmp_path, "cy5"))


def two_runs(
    wells: pd.DataFrame, real, faithful, other, resamples=100, names=None
) -> tuple[pd.DataFrame, str]:
    """The screen rows of two runs on a lung plate, per-well phenotype scores given: the lung-trained
    model (``faithful``, the baseline) and a breast-trained one (``other``), with the name of the
    other's model. ``names``: the wells' names (default W000, W001 ..., on no edge)."""
    from vsgrid.grid import DataSet, Model, ScreenRun
    from vsgrid.screen.tables import COLUMNS, screen_rows

    names = names or [f"W{i:03d}" for i in range(len(wells))]
    wells = wells.assign(plate="P1", fields=1, well=names)
    own, theirs = (Model(DataSet(c, "nontoxic"), "dapi", 0) for c in ("lung", "breast"))
    virtual = {
        own.name: wells.assign(phenotype_score=faithful),
        theirs.name: wells.assign(phenotype_score=other),
    }
    runs = [ScreenRun(own, "lung"), ScreenRun(theirs, "lung")]
    rows = screen_rows(
        runs, wells.assign(phenotype_score=real), virtual, ScreenSettings(), resamples, 0
    )
    return pd.DataFrame(rows).reindex(columns=COLUMNS), theirs.name


EMPTY_TRUTH = pd.DataFrame(columns=["cell_type", "stain", "readout", "compound", "error"])


def outcome_of(table: pd.DataFrame) -> str:
    """The screen outcome of a screen table, with the default margins' verdicts."""
    from vsgrid.config import validate
    from vsgrid.screen.tables import SUMMARY_READOUT, screen_outcome
    from vsgrid.screen.verdicts import verdict_table

    margins = validate({})["evaluation"]["screen"]["margins"]
    return screen_outcome(table, EMPTY_TRUTH, verdict_table(table, margins, SUMMARY_READOUT))


def test_screen_rows_take_the_plates_value_and_a_ci_over_the_resamples_that_define_it():
    """Two DMSO wells: half the resamples draw one twice (no hit threshold). The kappa of the plate
    stands, its CI is over the other half and its reason says so; the outcome prints both CIs."""

    rng = np.random.default_rng(12)
    wells = plate_wells(dmso=2)
    real = readout(wells, {"CPD-01": 0.1, "CPD-02": 0.5}, rng, noise=0.05)
    other = real + rng.normal(0, 0.2, len(real))
    table, name = two_runs(wells, real, real + rng.normal(0, 0.02, len(real)), other)
    row = table.set_index(["model", "metric"])
    kappa = row.loc[(name, "hit_kappa")]
    plate = Plate(wells[["compound", "concentration"]], ScreenSettings())
    itself = decide(plate, real, other, np.arange(len(wells))[None, :])
    assert kappa["value"] == itself["hit_kappa"].values[0]
    assert kappa["ci_low"] <= kappa["ci_high"] and 0.3 < kappa["undefined_share"] < 0.7
    defined = f"{100 * (1 - kappa['undefined_share']):.0f} %"
    assert kappa["reason"] == (
        f"CI over {defined} of resamples; {100 * kappa['undefined_share']:.0f} % draw DMSO wells "
        "without spread (MAD 0, no threshold) in a stain"
    )
    assert np.isfinite(kappa["delta_ci_low"]) and kappa["delta_undefined_share"] > 0.3
    error = row.loc[(name, "ec50_error")]
    assert error["ci_low"] <= error["value"] <= error["ci_high"] and error["reason"] == ""
    assert error["undefined_share"] == 0
    outcome = outcome_of(table)
    (line,) = [
        x
        for x in outcome.splitlines()
        if x.startswith("breast-nontoxic.dapi") and " phenotype_score " in x
    ]
    assert f"{error['value']:.2f} [{error['ci_low']:.2f}, {error['ci_high']:.2f}]" in line
    assert f"{kappa['value']:.2f} [{kappa['ci_low']:.2f}, {kappa['ci_high']:.2f}]" in line
    assert f"breast-nontoxic.dapi lung phenotype_score hit_kappa: {kappa['reason']}" in outcome


def quick_grid_plate(rng) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The quick grid's lung cell count of issue 21, by hand: 152 compound wells (19 compounds x
    4 doses x 2), the real stain calling 52 of them hits and the virtual 5 (all real hits),
    8 positive controls both call hits, and 8 DMSO wells of whole cell counts, half of them 10:
    the plate has a robust SD, a resample that draws 10 more than four times has none."""
    wells = plate_wells(
        tuple(f"CPD-{i:02d}" for i in range(19)), dmso=8, positives=8, doses=DOSES[2:], replicates=2
    )
    real = np.full(len(wells), 10.0) + rng.uniform(-0.5, 0.5, len(wells))  # under 3 robust SDs
    real[wells["compound"].eq("DMSO").to_numpy()] = [10, 10, 10, 10, 11, 9, 12, 8]
    real[wells["compound"].eq("etoposide").to_numpy()] = 30.0
    top = wells["concentration"].isin(DOSES[-2:]).to_numpy()
    dosed_in = wells["compound"].isin([f"CPD-{i:02d}" for i in range(13)]).to_numpy()
    virtual = real.copy()
    real[top & dosed_in] = 20.0
    five = np.flatnonzero(top & wells["compound"].isin(["CPD-00", "CPD-01"]).to_numpy())[:5]
    virtual[five] = 20.0
    return wells, real, virtual


def robust_calls(values: np.ndarray, wells: pd.DataFrame, called: np.ndarray) -> np.ndarray:
    """Hit calls written out from their definition, in the wells ``called``."""
    dmso = values[wells["compound"].eq("DMSO").to_numpy()]
    scale = 1.4826 * np.median(np.abs(dmso - np.median(dmso)))
    return np.abs(values[called] - np.median(dmso)) > 3 * scale


def test_a_kappa_defined_on_its_plate_is_reported_with_its_ci_and_what_the_ci_lacks():
    """Issue 21's case (real 52 hits of 152 compound wells, virtual 5, kappa 0.123) was reported
    "both stains call every treated well not a hit" because some resamples have no threshold."""

    wells, real, virtual = quick_grid_plate(np.random.default_rng(13))
    compounds = wells["compound"].str.startswith("CPD").to_numpy()
    calls_real, calls_virtual = (robust_calls(v, wells, compounds) for v in (real, virtual))
    assert (calls_real.sum(), calls_virtual.sum(), len(calls_real)) == (52, 5, 152)
    expected = cohen_kappa_score(calls_real, calls_virtual)
    assert expected == pytest.approx(0.123, abs=5e-4)
    table, name = two_runs(wells, real, real, virtual, resamples=200)
    kappa = table.set_index(["model", "metric"]).loc[(name, "hit_kappa")]
    # the same calls, kappa by two formulas: equal to rounding
    assert kappa["value"] == pytest.approx(expected, abs=1e-12)
    assert kappa["ci_low"] <= kappa["value"] <= kappa["ci_high"]
    share = kappa["undefined_share"]
    assert 0.1 < share < 0.9  # measured 0.34: five or more of the eight DMSO draws are 10
    assert kappa["reason"].startswith(f"CI over {100 * (1 - share):.0f} % of resamples; ")
    assert "draw DMSO wells without spread" in kappa["reason"]
    assert "every treated well" not in outcome_of(table)


def test_a_plate_that_defines_kappa_where_no_resample_does_gives_the_value_without_a_ci():
    from vsgrid.screen.metrics import interval_columns

    wells, real, virtual = quick_grid_plate(np.random.default_rng(14))
    plate = Plate(wells, ScreenSettings())
    index = plate.resamples(50, np.random.default_rng(0))
    index[1:, plate.negative] = np.flatnonzero(plate.negative)[0]  # every resample: one DMSO well
    out = decide(plate, real, virtual, index)
    columns = interval_columns(out["hit_kappa"])
    assert columns["value"] == pytest.approx(0.123, abs=5e-4) and columns["undefined_share"] == 1
    assert np.isnan(columns["ci_low"]) and np.isnan(columns["ci_high"])
    assert columns["reason"] == (
        "no CI: every resample is without a value (100 % draw DMSO wells without spread (MAD 0, "
        "no threshold) in a stain)"
    )
    table = pd.DataFrame(
        [
            {
                "model_type": "breast-nontoxic.dapi",
                "control": "",
                "train_cell_type": "breast",
                "cell_type": "lung",
                "stain": "dapi",
                "seed": 0,
                "readout": "phenotype_score",
                "metric": metric,
                **interval_columns(values),
            }
            for metric, values in out.items()
        ]
    )
    outcome = outcome_of(table)
    assert "nan" not in outcome
    assert f"{columns['value']:.2f} (no CI)" in outcome
    assert f"hit_kappa: {columns['reason']}" in outcome


def test_a_kappa_the_plate_does_not_define_is_missing_with_a_reason_true_of_the_plate():

    wells, real, _ = quick_grid_plate(np.random.default_rng(15))
    compounds = wells["compound"].str.startswith("CPD").to_numpy()
    quiet = np.where(compounds, 10.0, real)  # no compound well is a hit in either stain
    table, name = two_runs(wells, quiet, quiet, quiet.copy())
    row = table.set_index(["model", "metric"])
    assert row.loc[(name, "hit_kappa"), "reason"] == (
        "both stains call none of the 152 compound wells a hit: kappa is undefined (perfect "
        "agreement by chance)"
    )
    assert row.loc[(name, "hit_precision"), "reason"] == (
        "the virtual stain calls none of the 152 compound wells a hit: precision is undefined"
    )
    assert np.isnan(row.loc[(name, "hit_kappa"), ["value", "ci_low", "undefined_share"]]).all()
    outcome = outcome_of(table)
    (line,) = [
        x
        for x in outcome.splitlines()
        if x.startswith("breast-nontoxic.dapi") and " phenotype_score " in x
    ]
    assert line.split()[-3] == "missing" and "nan" not in outcome
    assert "hit_kappa: both stains call none of the 152 compound wells a hit" in outcome

    flat = real.copy()
    flat[wells["compound"].eq("DMSO").to_numpy()] = 10.0  # the virtual DMSO wells alike
    out = decide(Plate(wells, ScreenSettings()), real, flat, np.arange(len(wells))[None, :])
    assert str(out["hit_kappa"]).startswith("virtual stain: the DMSO wells have no spread")


def test_hits_are_called_in_compound_wells_unless_hit_wells_says_treated():
    from vsgrid.config import validate
    from vsgrid.errors import VsgridError

    wells, real, virtual = quick_grid_plate(np.random.default_rng(16))
    config = validate({"evaluation": {"screen": {"hit_wells": "treated"}}})
    treated = ScreenSettings.from_config(config)
    assert treated.hit_wells == "treated" and ScreenSettings().hit_wells == "compounds"
    assert ScreenSettings.from_config(validate({})).hit_wells == "compounds"
    with pytest.raises(VsgridError, match="evaluation.screen.hit_wells: 'all' is not one of"):
        ScreenSettings(hit_wells="all")
    index = np.arange(len(wells))[None, :]
    for settings, called in (
        (ScreenSettings(), wells["compound"].str.startswith("CPD").to_numpy()),
        (treated, ~wells["compound"].eq("DMSO").to_numpy()),
    ):
        plate = Plate(wells, settings)
        assert np.array_equal(plate.called, called)
        expected = cohen_kappa_score(*(robust_calls(v, wells, called) for v in (real, virtual)))
        out = decide(plate, real, virtual, index)
        assert out["hit_kappa"].values[0] == pytest.approx(expected, abs=1e-12)
        # the 8 positive controls are hits in both stains: they add 8 true positives
        assert out["hit_recall"].values[0] == (5 + 8 * (settings is treated)) / (
            52 + 8 * (settings is treated)
        )
    # positive controls alone: no compound well is a hit, so only hit_wells: treated has a kappa
    compounds = wells["compound"].str.startswith("CPD").to_numpy()
    quiet = np.where(compounds, 10.0, real)
    assert isinstance(
        decide(Plate(wells, ScreenSettings()), quiet, quiet, index)["hit_kappa"], Missing
    )
    assert decide(Plate(wells, treated), quiet, quiet, index)["hit_kappa"].values[0] == 1


def test_the_phenotype_forest_learns_control_wells_of_the_other_plates(quick_config):
    """As a screening group trains a phenotype classifier: the screen store's train split holds
    negative- and positive-control wells of plates the screen does not hold, at most
    forest_fields of them, spread over those plates."""
    from vsgrid.data.plates import NEGATIVE_CONTROLS, POSITIVE_CONTROLS
    from vsgrid.data.synthetic import screen_fields

    config = copy.deepcopy(quick_config)
    config["evaluation"]["screen"].update(fields_per_well=2, forest_fields=50)
    fields = screen_fields("lung", config)
    train, test = fields["train"], fields["test"]
    assert len(train) == 50 and set(train["plate"]).isdisjoint(test["plate"])
    assert train["plate"].nunique() == config["data"]["synthetic"]["plates_per_cell_type"] - 1
    assert set(train["compound"]) == {*NEGATIVE_CONTROLS, *POSITIVE_CONTROLS}
    # the screen holds each well of its plate whole, every field
    assert (test.groupby(["plate", "well"]).size() == 2).all()


def test_a_faithful_virtual_stain_is_replaceable_and_a_flattened_one_is_not():
    """Verdicts through the code that makes the tables (screen_rows, then verdict_table): the real
    readout plus camera-like noise keeps every CI inside its margin; one whose dose response and
    controls are flattened into noise (as a blurred stain's) lies wholly outside one. Where the
    real stain's controls do not separate, or there are none, the verdict is undecided and says
    why."""
    from vsgrid.config import validate
    from vsgrid.screen.tables import SUMMARY_READOUT
    from vsgrid.screen.verdicts import verdict_table

    margins = validate({})["evaluation"]["screen"]["margins"]
    ec50 = {"CPD-01": 0.1, "CPD-02": 0.3, "CPD-03": 1.0}
    rng = np.random.default_rng(3)
    # 32 DMSO wells, as a 384-well plate holds; noise a twentieth of the wells' own (0.02): kappa's
    # CI is the tightest margin, and the verdict held for each of 12 seeds tried
    wells = plate_wells(tuple(ec50), dmso=32, positives=8)
    real = readout(wells, ec50, rng)
    faithful = real + rng.normal(0, 0.001, len(real))
    flattened = 0.6 + 0.3 * (real - 0.6) + rng.normal(0, 0.05, len(real))
    table, other = two_runs(wells, real, faithful, flattened)
    verdicts = verdict_table(table, margins, SUMMARY_READOUT).set_index("model_type")
    assert verdicts.loc["lung-nontoxic.dapi", "verdict"] == "replaceable"
    judged = verdicts.loc["breast-nontoxic.dapi"]
    assert judged["verdict"] == "not replaceable" and "wholly outside" in judged["why"]
    z = table.set_index(["model", "metric"]).loc[(other, "z_prime")]
    assert judged["deciding_metric"] != "z_prime" or z["ci_high"] < margins["z_prime"]
    outcome = outcome_of(table)
    assert outcome.splitlines()[1].split()[:4] == ["breast-nontoxic.dapi", "lung", "dapi", "not"]
    real_z = table.set_index(["model", "metric"]).loc[(other, "z_prime_real"), "value"]
    assert (
        f"  lung      dapi  phenotype_score {real_z:.2f}" in outcome
    )  # the readouts that separate
    # Figure 8's verdict panel: train (rows) x screen (columns), lung and breast; one screen here
    from matplotlib.colors import to_hex

    from vsgrid.screen.figures import figure8

    figure = figure8(table, verdicts.reset_index(), ["lung", "breast"], ["dapi"])
    (panel,) = [ax for ax in figure.axes if ax.get_title().startswith("replaceable?")]
    assert [to_hex(patch.get_facecolor()) for patch in panel.patches] == [
        "#4daf4a",
        "#ffffff",
        "#e41a1c",
        "#ffffff",
    ]
    assert [t.get_text().split("\n")[0] for t in panel.texts] == ["yes", "n/a", "no", "n/a"]

    weak = readout(wells, ec50, rng, positive=0.9)  # controls 5 SDs apart: real Z' below 0.5
    table, _ = two_runs(wells, weak, weak + rng.normal(0, 0.001, len(weak)), weak)
    no_assay = verdict_table(table, margins, SUMMARY_READOUT)
    assert set(no_assay["verdict"]) == {"undecided"}
    assert set(no_assay["deciding_metric"]) == {"z_prime_real"}
    # the real Z' itself is below the margin: no number of control wells would validate it
    assert no_assay["why"].str.contains("reaches below 0.5: no assay to reproduce; its Z").all()
    assert (
        no_assay["why"].str.endswith("no number of control wells or plates would validate it").all()
    )

    no_positives = plate_wells(tuple(ec50), dmso=32, positives=0)
    real = readout(no_positives, ec50, rng)
    table, _ = two_runs(no_positives, real, real + rng.normal(0, 0.001, len(real)), real)
    undecided = verdict_table(table, margins, SUMMARY_READOUT).set_index("model_type")
    assert undecided.loc["lung-nontoxic.dapi", "verdict"] == "undecided"
    assert undecided.loc["lung-nontoxic.dapi", "deciding_metric"] == "z_prime_real"
    assert "no positive-control wells" in undecided.loc["lung-nontoxic.dapi", "why"]


def test_figure7_draws_every_screen_with_its_own_stains():
    """A row per screen, a panel per compound, each row's legend naming the stains of that screen
    (a model trained on both phenotypes is on its own screen only)."""
    from vsgrid.screen.figures import figure7

    rng = np.random.default_rng(11)
    wells = plate_wells()

    def profile(shift):
        return wells.assign(
            phenotype_score=readout(wells, {"CPD-01": 0.1, "CPD-02": 0.5}, rng) + shift
        )

    screens = {
        "lung": {
            "real": profile(0),
            "control: oracle": profile(0.01),
            "trained on lung-both": profile(0.2),
        },
        "breast": {"real": profile(0), "control: oracle": profile(0.01)},
    }
    figure = figure7(screens, ScreenSettings(), 2, "dapi")
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "lung screen: CPD-01",
        "lung screen: CPD-02",
        "breast screen: CPD-01",
        "breast screen: CPD-02",
    ]
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in panels[1::2]]
    assert legends == [list(screens["lung"]), list(screens["breast"])]
