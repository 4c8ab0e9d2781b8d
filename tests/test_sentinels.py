"""Sentinel wells: which wells are stained for real, the line recalibrated on them, its decisions."""

import numpy as np
import pandas as pd
import pytest
from test_screen import DOSES, decide, plate_wells, readout

from vsgrid.config import validate
from vsgrid.errors import VsgridError
from vsgrid.screen.decisions import (
    Missing,
    Plate,
    Readout,
    ScreenSettings,
    decisions,
    interval_columns,
)
from vsgrid.screen.figures import figure11
from vsgrid.screen.sentinels import (
    LOWEST_TRUST,
    RANDOM,
    choose_sentinels,
    flip_auroc,
    flip_row,
    recalibrate,
    sentinel_rows,
    smallest_replaceable_k,
)

EC50 = {"CPD-01": 0.1, "CPD-02": 0.5}
# The same decisions of the same wells, read through a map and back: equal up to rounding.
ROUNDING = 1e-9


def values_of(decided: dict) -> dict:
    """Each metric's values per resample, or its reason when it is missing."""
    return {m: str(v) if isinstance(v, Missing) else v.values for m, v in decided.items()}


def assert_same_decisions(one: dict, other: dict) -> None:
    assert one.keys() == other.keys()
    for metric, values in values_of(one).items():
        if isinstance(values, str):
            assert values == values_of(other)[metric]
        else:
            np.testing.assert_allclose(values, other[metric].values, atol=ROUNDING, err_msg=metric)


def two_plates() -> Plate:
    wells = plate_wells()
    return Plate(
        pd.concat([wells.assign(plate=p) for p in ("P1", "P2")], ignore_index=True),
        ScreenSettings(),
    )


def test_choose_sentinels_takes_the_k_riskiest_wells_of_each_plate_or_k_at_random():
    plate = two_plates()
    n = len(plate.wells) // 2
    risk = np.random.default_rng(0).random(2 * n)
    risk[[3, 5]] = 2.0  # a tie: the earlier well goes first
    risk[n + 7] = np.nan  # a well the score cannot judge: least trusted
    chosen = choose_sentinels(plate, 3, risk=risk)
    first = np.argsort(-risk[:n])[:3]
    assert set(np.flatnonzero(chosen[:n])) == set(first) and {3, 5} <= set(first)
    judged = np.argsort(-np.nan_to_num(risk[n:], nan=-np.inf))[:2]  # the two riskiest with a score
    assert set(np.flatnonzero(chosen[n:])) == {7, *judged}
    tied = risk.copy()
    tied[[3, 5, 9]] = 2.0
    assert np.flatnonzero(choose_sentinels(plate, 2, risk=tied)[:n]).tolist() == [3, 5]
    assert choose_sentinels(plate, n + 10, risk=risk).all()  # more than a plate: all its wells
    assert not choose_sentinels(plate, 0, risk=risk).any()

    drawn = [choose_sentinels(plate, 8, rng=np.random.default_rng(s)) for s in (1, 1, 2)]
    assert all(d[:n].sum() == 8 and d[n:].sum() == 8 for d in drawn)
    assert (drawn[0] == drawn[1]).all() and (drawn[0] != drawn[2]).any()
    for wrong in ({}, {"risk": risk, "rng": np.random.default_rng(0)}):
        with pytest.raises(VsgridError, match="give either risk"):
            choose_sentinels(plate, 3, **wrong)
    with pytest.raises(VsgridError, match="risk: 5 values for a plate of 168 wells"):
        choose_sentinels(plate, 3, risk=risk[:5])


def test_recalibrate_fits_a_line_per_plate_and_gives_the_sentinels_their_real_values():
    plate = two_plates()
    n = len(plate.wells) // 2
    rng = np.random.default_rng(1)
    real = rng.normal(1.0, 0.3, 2 * n)
    noise = rng.normal(0, 0.05, 2 * n)
    virtual = np.r_[2 * (real[:n] + noise[:n]) + 5, -3 * (real[n:] + noise[n:]) + 1]
    sentinels = choose_sentinels(plate, 10, rng=rng)
    out = recalibrate(plate, real, virtual, sentinels)
    assert (out[sentinels] == real[sentinels]).all()
    for on, sign in ((np.arange(2 * n) < n, 1), (np.arange(2 * n) >= n, -1)):
        # each plate's own least-squares line over its sentinels, solved here another way
        stained, rest = on & sentinels, on & ~sentinels
        design = np.c_[np.ones(stained.sum()), virtual[stained]]
        (a, b), *_ = np.linalg.lstsq(design, real[stained], rcond=None)
        np.testing.assert_allclose(out[rest], a + b * virtual[rest], atol=ROUNDING)
        assert np.sign(b) == sign
    assert (recalibrate(plate, real, virtual, np.zeros(2 * n, bool)) == virtual).all()
    one = np.zeros(2 * n, bool)
    one[[0, n, n + 1]] = True  # plate 1: one sentinel, no line; plate 2: two, a line
    partial = recalibrate(plate, real, virtual, one)
    assert (partial[:n] == virtual[:n]).all() and (partial[[n, n + 1]] == real[[n, n + 1]]).all()
    with pytest.raises(VsgridError, match="virtual has wells without a value"):
        recalibrate(plate, real, np.where(sentinels, np.nan, virtual), sentinels)


def test_every_decision_is_invariant_to_an_affine_map_of_one_plate_but_not_of_one_of_two():
    """The reason a line alone changes nothing on one plate, a sign flip included: hit calls are
    |x - median| against a MAD, Hill fits free in bottom and top, Z' a ratio of spreads. With two
    plates, hit thresholds and Hill fits pool their wells: one plate's map moves them, and the
    per-plate line of a few sentinels brings them back."""
    rng = np.random.default_rng(2)
    wells = plate_wells()
    plate = Plate(wells, ScreenSettings())
    real = readout(wells, EC50, rng)
    virtual = real + rng.normal(0, 0.1, len(real))
    index = plate.resamples(20, rng)
    as_is = decide(plate, real, virtual, index)
    assert 0 < as_is["hit_kappa"].values[0] < 1 and as_is["ec50_error"].values[0] > 0
    for slope in (2.0, -2.0, 0.01):
        assert_same_decisions(decide(plate, real, 5.0 + slope * virtual, index), as_is)

    plates = two_plates()
    n = len(wells)
    real2 = np.r_[real, readout(wells, EC50, rng)]
    virtual2 = real2 + rng.normal(0, 0.02, 2 * n)
    flipped = np.r_[virtual2[:n], 5.0 - 2.0 * virtual2[n:]]  # plate 2 read inverted
    index = np.arange(2 * n)[None, :]
    faithful, inverted = (decide(plates, real2, v, index) for v in (virtual2, flipped))
    assert inverted["hit_kappa"].values[0] < faithful["hit_kappa"].values[0] - 0.3
    assert inverted["ec50_error"].values[0] > faithful["ec50_error"].values[0] + 0.3
    assert inverted["z_prime"].values[0] == pytest.approx(faithful["z_prime"].values[0])
    sentinels = choose_sentinels(plates, 8, rng=rng)
    fixed = decide(plates, real2, recalibrate(plates, real2, flipped, sentinels), index)
    assert fixed["hit_kappa"].values[0] > inverted["hit_kappa"].values[0] + 0.3
    assert fixed["ec50_error"].values[0] < inverted["ec50_error"].values[0] - 0.3


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).set_index(["k", "choice", "metric"]).sort_index()


def test_sentinels_on_a_virtual_stain_that_is_an_affine_map_of_the_real_one_change_nothing():
    """virtual = 2 real + 5: uncorrected, it decides as the real stain (the invariance); every
    sentinel line maps it onto the real one exactly, so no k and no choice changes a decision."""
    rng = np.random.default_rng(3)
    wells = plate_wells()
    plate = Plate(wells, ScreenSettings())
    real = readout(wells, EC50, rng)
    risk = rng.random(len(wells))
    table = rows_frame(
        sentinel_rows(plate, real, 2 * real + 5, risk, ks=(0, 8, 16), resamples=10, rng=rng)
    )
    uncorrected = table.xs((0, LOWEST_TRUST), level=["k", "choice"])
    assert (
        uncorrected.loc["hit_kappa", "value"] == 1 and uncorrected.loc["ec50_error", "value"] == 0
    )
    for (k, choice), group in table.groupby(level=["k", "choice"]):
        values = group.droplevel(["k", "choice"])
        columns = ["value", "ci_low", "ci_high"]
        np.testing.assert_allclose(
            values[columns].to_numpy(float), uncorrected[columns].to_numpy(float), atol=ROUNDING
        )
        assert (values["stain_cost_saved"] == 1 - k / len(wells)).all(), (k, choice)


def test_k_0_is_the_uncorrected_virtual_stains_decisions_for_both_choices():
    rng = np.random.default_rng(4)
    wells = plate_wells()
    plate = Plate(wells, ScreenSettings())
    real = readout(wells, EC50, rng)
    virtual = real + rng.normal(0, 0.1, len(real))
    rows = sentinel_rows(
        plate, real, virtual, rng.random(len(wells)), ks=(0,), resamples=20,
        rng=np.random.default_rng(5),
    )  # fmt: skip
    index = plate.resamples(20, np.random.default_rng(5))
    uncorrected = decisions(
        plate, Readout.of(plate, real, index), Readout.of(plate, virtual, index), index
    )
    expected = {metric: interval_columns(values) for metric, values in uncorrected.items()}
    assert {(r["choice"], r["stain_cost_saved"]) for r in rows} == {(LOWEST_TRUST, 1), (RANDOM, 1)}
    for row in rows:
        assert {c: row[c] for c in expected[row["metric"]]} == expected[row["metric"]]


@pytest.fixture(scope="module")
def corrupted():
    """A virtual stain faithful up to its scale (2 real + 5) but for ten wells of CPD-01, at its
    lowest dose (no hit) and at 0.3 uM (a hit), that the risk points at: there the model paints
    one value, the mean of their real values (the average phenotype, five false hits and a
    curve without its low plateau). Those ten pull the line neither way (their residuals sum to
    0 at one abscissa), so the sentinels' line is the faithful ones': sixteen lowest-trust
    sentinels (the ten and six others) give the real readout back exactly; sixteen random ones
    cover two of the ten on average and leave the rest wrong. Eight lowest-trust sentinels are
    eight of the ten, one value: no line, the plate as it is."""
    rng = np.random.default_rng(6)
    wells = plate_wells()
    plate = Plate(wells, ScreenSettings())
    real = readout(wells, EC50, rng)
    bad = (wells["compound"].eq("CPD-01") & wells["concentration"].isin([DOSES[0], 0.3])).to_numpy()
    virtual = 2 * np.where(bad, real[bad].mean(), real) + 5
    risk = np.where(bad, 1.0, 0.0) + rng.random(len(wells)) / 2
    rows = sentinel_rows(plate, real, virtual, risk, ks=(0, 8, 16), resamples=30, rng=rng)
    return rows, int(bad.sum())


def test_lowest_trust_sentinels_fix_the_corrupted_wells_the_risk_points_at_and_random_ones_do_not(
    corrupted,
):
    rows, bad = corrupted
    table = rows_frame(rows)
    assert bad == 10
    value = table["value"]
    assert value[(0, LOWEST_TRUST, "hit_kappa")] < 0.9
    assert value[(0, LOWEST_TRUST, "ec50_error")] > 0.1
    assert value[(16, LOWEST_TRUST, "hit_kappa")] == pytest.approx(1.0, abs=ROUNDING)
    assert value[(16, LOWEST_TRUST, "ec50_error")] == pytest.approx(0.0, abs=ROUNDING)
    assert value[(16, RANDOM, "hit_kappa")] < 0.9
    assert value[(16, RANDOM, "ec50_error")] > 0.1
    # eight sentinels of one virtual value draw no line: the plate as it is
    for metric in ("hit_kappa", "ec50_error", "z_prime"):
        assert value[(8, LOWEST_TRUST, metric)] == value[(0, LOWEST_TRUST, metric)]
    # the random choice's CI holds its draws: wider than lowest trust's at the same k
    kappa = table.xs("hit_kappa", level="metric")
    assert (kappa["ci_high"] - kappa["ci_low"])[(16, RANDOM)] > (
        kappa["ci_high"] - kappa["ci_low"]
    )[(16, LOWEST_TRUST)]


def test_the_smallest_replaceable_k_is_the_first_whose_lowest_trust_cis_lie_inside_the_margins(
    corrupted,
):
    rows, _ = corrupted
    margins = validate({})["evaluation"]["screen"]["margins"]
    assert smallest_replaceable_k(rows, margins) == 16
    assert smallest_replaceable_k([r for r in rows if r["k"] < 16], margins) is None
    assert smallest_replaceable_k(rows, {**margins, "hit_kappa": 1.01}) is None


def test_figure11_has_a_panel_per_decision_metric_with_both_choices(corrupted):
    rows, _ = corrupted
    run = {"model": "lung-nontoxic.dapi.s0", "cell_type": "lung", "train_cell_type": "lung"}
    figure = figure11(pd.DataFrame(rows).assign(**run), ["lung"])
    panels = [ax for ax in figure.axes if ax.get_ylabel()]
    labels = [ax.get_ylabel() for ax in panels]
    assert len(panels) == 3 and "log10" in labels[0] and "kappa" in labels[1] and "Z'" in labels[2]
    for ax in panels:
        assert "stain cost saved" in ax.get_xlabel()
        assert {LOWEST_TRUST, RANDOM} <= {line.get_label() for line in ax.get_lines()}
        (x_lowest,) = [
            line.get_xdata() for line in ax.get_lines() if line.get_label() == LOWEST_TRUST
        ]
        assert sorted(np.asarray(x_lowest, float)) == pytest.approx(
            sorted(100 * (1 - np.array([0, 8, 16]) / 84))
        )


def test_the_flip_auroc_is_high_where_the_risk_points_at_the_flipped_calls():
    rng = np.random.default_rng(6)
    wells = plate_wells()
    plate = Plate(wells, ScreenSettings())
    real = readout(wells, EC50, rng)
    bad = (wells["compound"].eq("CPD-01") & wells["concentration"].isin([DOSES[0], 0.3])).to_numpy()
    virtual = 2 * np.where(bad, real[bad].mean(), real) + 5  # calls flip among the bad wells only
    risk = np.where(bad, 1.0, 0.0) + rng.random(len(wells)) / 2
    index = plate.resamples(40, rng)
    found = flip_auroc(plate, real, virtual, risk, index)
    # flipped wells outrank every faithful well, and tie on average with the unflipped bad ones
    assert found.values[0] > 0.85 and np.nanpercentile(found.values[1:], 2.5) > 0.7
    assert flip_auroc(plate, real, virtual, -risk, index).values[0] < 0.15
    faithful = flip_auroc(plate, real, 2 * real + 5, risk, index)
    assert isinstance(faithful, Missing) and "flips none" in str(faithful)
    [row] = [flip_row(plate, real, virtual, risk, index)]
    assert row["metric"] == "flip_auroc" and row["value"] == found.values[0] and np.isnan(row["k"])
