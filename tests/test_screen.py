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
from sklearn.metrics import cohen_kappa_score

from vsgrid.evaluation.screen import (
    LOG_EC50_STEP,
    Missing,
    Plate,
    Readout,
    ScreenSettings,
    cohen_kappa,
    decisions,
    fit_hill,
    fit_reason,
    hill,
    hit_calls,
    truth_errors,
    z_prime,
)

DOSES = np.array([0.01, 0.03, 0.1, 0.3, 1.0, 3.0])


def decide(plate: Plate, real: np.ndarray, virtual: np.ndarray, index: np.ndarray) -> dict:
    """Level-4 decisions of two readouts given per well, each fitted over ``index``."""
    return decisions(
        plate, Readout.of(plate, real, index), Readout.of(plate, virtual, index), index
    )


def plate_wells(
    compounds=("CPD-01", "CPD-02"), dmso=16, positives=8, doses=DOSES, replicates=5
) -> pd.DataFrame:
    rows = [("DMSO", 0.0)] * dmso + [("etoposide", 10.0)] * positives
    rows += [(c, d) for c in compounds for d in doses for _ in range(replicates)]
    return pd.DataFrame(rows, columns=["compound", "concentration"])


def readout(
    wells: pd.DataFrame, ec50: dict, rng, noise=0.02, top=0.1, bottom=1.0, positive=0.1
) -> np.ndarray:
    """A readout that falls from ``bottom`` (DMSO) to ``top`` with each compound's EC50."""
    values = np.full(len(wells), bottom)
    for name, e in ec50.items():
        rows = wells["compound"].eq(name).to_numpy()
        values[rows] = hill(
            np.log10(wells.loc[rows, "concentration"]), bottom, top, np.log10(e), 2.0
        )
    values[wells["compound"].eq("etoposide").to_numpy()] = positive
    return values + rng.normal(0, noise, len(values))


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
    with pytest.raises(Missing, match="call every treated well not a hit"):
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
        same["ec50_error"][0] == 0
        and same["hit_kappa"][0] == 1
        and same["z_prime"][0] == same["z_prime_real"][0]
    )
    degraded = decide(plate, real, real + rng.normal(0, 0.25, len(real)), index)
    assert degraded["ec50_error"][0] > 0.05
    assert degraded["hit_kappa"][0] < 0.9 and degraded["z_prime"][0] < same["z_prime"][0]
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
    assert isinstance(out["z_prime"], Missing) and np.isfinite(out["ec50_error"][0])

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
        assert np.array_equal(with_vehicle[metric], values), metric
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
        assert out[metric][0] == itself[metric][0]  # the plate's value comes from the plate
    drawn_twice = index[:, plate.negative][:, 0] == index[:, plate.negative][:, 1]
    assert 60 < drawn_twice.sum() < 140  # about half of 200
    assert np.isnan(out["hit_kappa"][drawn_twice]).all()
    assert np.isfinite(out["hit_kappa"][~drawn_twice]).all()

    same = real.copy()
    same[plate.negative] = 1.0  # two identical DMSO wells: the plate itself has no threshold
    out = decide(plate, same, same, index)
    assert isinstance(out["hit_kappa"], Missing) and "no spread" in str(out["hit_kappa"])
    one_dmso = plate_wells(dmso=1)  # the plate without its first DMSO well
    one = decide(
        Plate(one_dmso, ScreenSettings()), real[1:], real[1:], np.arange(len(one_dmso))[None, :]
    )
    assert str(one["hit_kappa"]).startswith("one DMSO well has no spread")
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
    """The quick grid's lung screen (one held-out plate, one field per well, three compounds),
    segmented and profiled from its real DAPI."""
    from vsgrid.data.store import open_store
    from vsgrid.data.synthetic import build_screen_store
    from vsgrid.evaluation.segment import segmenter

    config = copy.deepcopy(quick_config)
    config["evaluation"]["screen"].update(enabled=True, fields_per_well=1, compounds=3)
    store = open_store(
        build_screen_store("lung", config, tmp_path_factory.mktemp("screen"), progress=False)
    )
    images = store.images("test")[:, store.channel_index("dapi")]
    segment = segmenter(config["segmentation"], "dapi", float(store.attrs["pixel_size_um"]))
    return store, images, segment


def profiles(store, images, segment) -> pd.DataFrame:
    from vsgrid.evaluation.features import FeatureSet
    from vsgrid.evaluation.wells import train_scorer, well_profiles

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


def test_a_blurred_virtual_screen_decides_worse_than_a_faithful_one(lung_screen):
    """A faithful virtual stain (the real one with a little extra noise) against a blurred one:
    the blurred one must be worse on every level-4 metric of the cell count (measured: EC50 error
    0.033 vs 0.087, kappa 0.95 vs 0.36, Z' -1.165 vs -1.186; one field per well makes every Z' of
    this small plate negative)."""
    from scipy import ndimage as ndi

    store, images, segment = lung_screen
    real = profiles(store, images, segment)
    rng = np.random.default_rng(0)
    faithful = profiles(
        store,
        np.clip(images + rng.normal(0, 30, images.shape), 0, 65535).astype(np.uint16),
        segment,
    )
    blurred = profiles(
        store,
        np.stack([ndi.gaussian_filter(i.astype(np.float32), 3.0) for i in images]).astype(
            np.uint16
        ),
        segment,
    )
    plate = Plate(real[["compound", "concentration"]], ScreenSettings())
    index = plate.resamples(0, rng)
    good, bad = (
        decide(plate, real["cell_count"].to_numpy(), v["cell_count"].to_numpy(), index)
        for v in (faithful, blurred)
    )
    assert good["ec50_error"][0] < bad["ec50_error"][0]
    assert good["hit_kappa"][0] > bad["hit_kappa"][0]
    assert good["z_prime"][0] > bad["z_prime"][0]


def test_screen_commands_refuse_bad_input_in_one_line(tmp_path, capsys):
    from vsgrid.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dir: {tmp_path / 'data'}}}\n")
    assert main(["screen-store", "--config", str(config), "--cell-type", "kidney"]) == 2
    assert "--cell-type 'kidney' is not in grid.cell_types" in capsys.readouterr().err
    config.write_text("data: {source: ingest}\nevaluation: {screen: {enabled: true}}\n")
    assert main(["screen-tables", "--config", str(config), "--out", str(tmp_path)]) == 2
    assert "evaluation.screen.enabled needs data.source synthetic" in capsys.readouterr().err


# --------------------------------------------------------------------------- the phenotype forest


def forest_training(rng, cells=400):
    """Cells whose two first features tell the phenotypes apart, some values missing."""
    from vsgrid.evaluation.wells import ForestTraining
    from vsgrid.grid import NONTOXIC, TOXIC

    toxic = rng.random(cells) < 0.4
    features = pd.DataFrame(
        rng.normal(size=(cells, 4)) + toxic[:, None] * [1.0, 0.5, 0.0, 0.0],
        columns=["Intensity_A", "AreaShape_B", "Texture_C", "Granularity_D"],
    )
    features.iloc[::17, 2] = np.nan
    return ForestTraining(features, np.where(toxic, TOXIC, NONTOXIC).astype(object), 25, 3)


def test_the_refit_forest_scores_every_cell_as_the_forest_it_replaces(tmp_path):
    """The screen's jobs refit the forest from its training table: the same scores bit for bit
    (same data, seed and tree order; any number of threads for the fit, one for the scores)."""
    from vsgrid.evaluation.wells import ForestTraining, forest_path

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
    from vsgrid.evaluation.wells import ForestTraining, forest_path
    from vsgrid.files import write_table

    marker = tmp_path / "planted code ran"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    training = forest_training(np.random.default_rng(11))
    training.write(forest_path(tmp_path, "dapi"))
    (tmp_path / "dapi.forest.joblib").write_bytes(pickle.dumps(Payload()))  # the old name
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


def test_screen_rows_take_the_plates_value_and_a_ci_only_from_enough_defined_resamples():
    """Two DMSO wells: the kappa of the plate stands with no CI (half the resamples have no hit
    threshold, under the 90 % a CI needs); the Hill fits' EC50 error keeps its CI; the outcome
    shows the plate's values."""
    from vsgrid.grid import DataSet, Model, ScreenRun
    from vsgrid.report.screen import COLUMNS, screen_outcome, screen_rows

    rng = np.random.default_rng(12)
    wells = plate_wells(dmso=2).assign(plate="P1", fields=1)
    wells["well"] = [f"W{i:03d}" for i in range(len(wells))]
    real = readout(wells, {"CPD-01": 0.1, "CPD-02": 0.5}, rng, noise=0.05)
    own, other = (
        Model(DataSet("lung", "nontoxic"), "dapi", 0),
        Model(DataSet("breast", "nontoxic"), "dapi", 0),
    )
    virtual = {
        own.name: wells.assign(cell_count=real + rng.normal(0, 0.02, len(real))),
        other.name: wells.assign(cell_count=real + rng.normal(0, 0.2, len(real))),
    }
    runs = [ScreenRun(own, "lung"), ScreenRun(other, "lung")]
    table = pd.DataFrame(
        screen_rows(runs, wells.assign(cell_count=real), virtual, ScreenSettings(), 100, 0)
    ).reindex(columns=COLUMNS)
    row = table.set_index(["model", "metric"])
    kappa = row.loc[(other.name, "hit_kappa")]
    plate = Plate(wells[["compound", "concentration"]], ScreenSettings())
    itself = decide(
        plate, real, virtual[other.name]["cell_count"].to_numpy(), np.arange(len(wells))[None, :]
    )
    assert kappa["value"] == itself["hit_kappa"][0] and kappa["reason"] == ""
    assert np.isnan(kappa["ci_low"]) and np.isnan(kappa["delta_ci_low"])
    error = row.loc[(other.name, "ec50_error")]
    assert error["ci_low"] <= error["value"] <= error["ci_high"]
    truth = pd.DataFrame(columns=["cell_type", "stain", "readout", "compound", "error"])
    outcome = screen_outcome(table, truth).splitlines()
    (line,) = [x for x in outcome if x.startswith(other.model_type)]
    assert f"{error['value']:.2f} [{error['ci_low']:.2f}, {error['ci_high']:.2f}]" in line
    assert f"{kappa['value']:.2f} [nan, nan]" in line
