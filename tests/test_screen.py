"""Level 4: Hill fits, hit calls, Z', kappa and a plate's decisions, on plates built by hand."""

import copy

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
