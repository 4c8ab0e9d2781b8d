"""Sentinel wells: which wells are stained for real, the line recalibrated on them, its decisions."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from shared import DOSES, decide, plate_wells, readout

from vsgrid.config import validate
from vsgrid.errors import VsgridError
from vsgrid.screen.decisions import Readout, decisions
from vsgrid.screen.figures import figure11
from vsgrid.screen.metrics import Missing, interval_columns
from vsgrid.screen.plate import Plate, ScreenSettings
from vsgrid.screen.sentinels import (
    CHOICES,
    LOWEST_TRUST,
    RANDOM,
    RANDOM_LINE,
    choose_sentinels,
    flip_auroc,
    flip_row,
    recalibrate,
    sentinel_rows,
    sentinel_wells,
    smallest_replaceable_k,
    theil_sen,
    verdicts_by_k,
)

EC50 = {"CPD-01": 0.1, "CPD-02": 0.5}
MARGINS = validate({})["evaluation"]["screen"]["margins"]
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


def plates_of(count: int) -> Plate:
    wells = plate_wells()
    return Plate(
        pd.concat([wells.assign(plate=f"P{p + 1}") for p in range(count)], ignore_index=True),
        ScreenSettings(),
    )


def two_plates() -> Plate:
    return plates_of(2)


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
    among = np.arange(2 * n) % 2 == 0
    for chosen in (
        choose_sentinels(plate, 8, rng=np.random.default_rng(3), among=among),
        choose_sentinels(plate, 8, risk=risk, among=among),
    ):
        assert chosen[:n].sum() == 8 and chosen[n:].sum() == 8 and not (chosen & ~among).any()
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
        # each plate's own Theil-Sen line over its sentinels, as scipy fits it
        stained, rest = on & sentinels, on & ~sentinels
        b, a, *_ = stats.theilslopes(real[stained], virtual[stained], method="joint")
        np.testing.assert_allclose(out[rest], a + b * virtual[rest], atol=ROUNDING)
        assert np.sign(b) == sign
    assert (recalibrate(plate, real, virtual, np.zeros(2 * n, bool)) == virtual).all()
    one = np.zeros(2 * n, bool)
    one[[0, n, n + 1]] = True  # plate 1: one sentinel, no line; plate 2: two, a line
    partial = recalibrate(plate, real, virtual, one)
    assert (partial[:n] == virtual[:n]).all() and (partial[[n, n + 1]] == real[[n, n + 1]]).all()
    with pytest.raises(VsgridError, match="virtual has wells without a value"):
        recalibrate(plate, real, np.where(sentinels, np.nan, virtual), sentinels)
    # a line fitted on some wells only: the other sentinels take their real values, no part in it
    line = sentinels & (np.arange(2 * n) % 2 == 0)
    out = recalibrate(plate, real, virtual, sentinels, line=line)
    assert (out[sentinels] == real[sentinels]).all()
    for on in (np.arange(2 * n) < n, np.arange(2 * n) >= n):
        a, b = theil_sen(virtual[on & line], real[on & line])
        np.testing.assert_allclose(out[on & ~sentinels], a + b * virtual[on & ~sentinels])


def test_theil_sen_is_scipys_joint_line_and_a_few_points_off_it_do_not_tilt_it():
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, 30)
    x[[3, 4]] = x[5]  # pairs of equal x give no slope
    y = 2.0 - 0.7 * x + rng.normal(0, 0.1, 30)
    slope, intercept, *_ = stats.theilslopes(y, x, method="joint")
    assert theil_sen(x, y) == pytest.approx((intercept, slope), abs=1e-12)
    exact = 1.0 + 3.0 * x
    exact[:6] = rng.normal(0, 20, 6)  # 6 of 30 points anywhere: 20 %, under its 29 %
    assert theil_sen(x, exact) == pytest.approx((1.0, 3.0), abs=1e-12)


def test_the_robust_line_is_not_tilted_by_a_few_off_line_sentinels_where_least_squares_is():
    """A faithful virtual stain read on another scale (3 real - 2) but for the three sentinels
    the model paints at the DMSO level where the real wells are the positive control's (the
    least typical wells a lowest-trust choice stains): the Theil-Sen line over the twelve
    sentinels is the other nine's, and puts every other well on the real scale exactly; the
    least-squares line is tilted by the three, and moves every well."""
    wells = plate_wells()
    plate = Plate(wells, ScreenSettings())
    real = readout(wells, EC50, np.random.default_rng(12))
    virtual = 3 * real - 2
    sentinels = np.zeros(len(wells), bool)
    sentinels[np.r_[16:19, 30:84:6]] = True  # three positive controls, nine compound wells
    off = np.flatnonzero(sentinels)[:3]
    virtual[off] = 3 * real[wells["compound"].eq("DMSO").to_numpy()].mean() - 2
    out = recalibrate(plate, real, virtual, sentinels)
    rest = ~sentinels
    np.testing.assert_allclose(out[rest], real[rest], atol=ROUNDING)
    b, a = np.polyfit(virtual[sentinels], real[sentinels], 1)
    tilted = a + b * virtual[rest] - real[rest]
    assert np.abs(tilted).max() > 0.1 and abs(b - 1 / 3) > 0.05


def test_random_line_and_lowest_trust_stains_the_riskiest_half_and_fits_on_wells_spread_over_the_rest():
    plate = two_plates()
    n = len(plate.wells) // 2
    rng = np.random.default_rng(13)
    risk, virtual = rng.random(2 * n), rng.normal(0, 1, 2 * n)
    sentinels, line = sentinel_wells(plate, 9, RANDOM_LINE, risk=risk, rng=rng, virtual=virtual)
    lowest = choose_sentinels(plate, 4, risk=risk)
    assert (sentinels == (lowest | line)).all() and not (lowest & line).any()
    for on in (np.arange(2 * n) < n, np.arange(2 * n) >= n):
        assert (sentinels & on).sum() == 9 and (line & on).sum() == 5
        # one line well in each fifth of the plate's other wells, ranked by their virtual value
        others = np.flatnonzero(on & ~lowest)
        fifth = np.argsort(np.argsort(virtual[others])) * 5 // len(others)
        assert sorted(fifth[line[others]]) == [0, 1, 2, 3, 4]
    assert [
        m.sum() for m in sentinel_wells(plate, 1, RANDOM_LINE, risk=risk, rng=rng, virtual=virtual)
    ] == [2, 2]
    fixed = sentinel_wells(plate, 6, LOWEST_TRUST, risk=risk)
    assert (fixed[0] == fixed[1]).all() and (
        fixed[0] == choose_sentinels(plate, 6, risk=risk)
    ).all()
    with pytest.raises(VsgridError, match="'best' is not one of"):
        sentinel_wells(plate, 6, "best", risk=risk)


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


def test_a_faithful_stain_read_with_a_gain_and_offset_per_plate_is_rescued_by_4_sentinels():
    """Four plates, each read by a faithful virtual stain (the real readout up to 0.003 of noise)
    on its own scale: pooled, the plates' DMSO wells give hit thresholds that fit none of them,
    and the stain is not replaceable. Four sentinels per plate (two spread for the line, the two
    least trusted) put every plate back on the real scale: replaceable. Without a risk score the
    rows are the random choice's, which the verdicts then read."""
    rng = np.random.default_rng(7)
    plates = plates_of(4)
    per_plate = len(plates.wells) // 4
    real = np.concatenate([readout(plate_wells(), EC50, rng) for _ in range(4)])
    gain = np.repeat([1.0, 2.5, 0.6, 1.8], per_plate)
    offset = np.repeat([0.0, -1.0, 0.5, 2.0], per_plate)
    virtual = gain * (real + rng.normal(0, 0.003, len(real))) + offset
    rows = sentinel_rows(
        plates, real, virtual, rng.random(len(real)), ks=(0, 4), resamples=100, rng=rng
    )
    found = verdicts_by_k(rows, MARGINS)
    assert found[0][:2] == ("not replaceable", "hit_kappa"), found[0]
    assert found[4][0] == "replaceable", found[4]
    assert smallest_replaceable_k(rows, MARGINS) == 4
    assert {r["choice"] for r in rows} == set(CHOICES)

    unscored = sentinel_rows(plates, real, virtual, None, ks=(0, 4), resamples=20, rng=rng)
    assert {r["choice"] for r in unscored} == {RANDOM}
    assert verdicts_by_k(unscored, MARGINS) == verdicts_by_k(unscored, MARGINS, choice=RANDOM)


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
        plate,
        real,
        virtual,
        rng.random(len(wells)),
        ks=(0,),
        resamples=20,
        rng=np.random.default_rng(5),
    )
    index = plate.resamples(20, np.random.default_rng(5))
    uncorrected = decisions(
        plate, Readout.of(plate, real, index), Readout.of(plate, virtual, index), index
    )
    expected = {metric: interval_columns(values) for metric, values in uncorrected.items()}
    assert {(r["choice"], r["stain_cost_saved"]) for r in rows} == {(c, 1) for c in CHOICES}
    for row in rows:
        assert {c: row[c] for c in expected[row["metric"]]} == expected[row["metric"]]


def test_a_virtual_stain_with_no_well_valued_gets_its_reasons_not_a_crash():
    """A screen run whose virtual readout has no value in any well (a model that paints no
    nucleus) leaves a plate of no wells: every k says why, and no share of staining is saved."""
    plate = Plate(plate_wells().iloc[:0], ScreenSettings())
    empty = np.zeros(0)
    rows = sentinel_rows(
        plate, empty, empty, None, ks=(0, 8), resamples=5, rng=np.random.default_rng(0)
    )
    assert {r["k"] for r in rows} == {0, 8} and all(np.isnan(r["stain_cost_saved"]) for r in rows)
    assert all(np.isnan(r["value"]) and r["reason"] for r in rows)


@pytest.fixture(scope="module")
def corrupted():
    """A virtual stain faithful up to its scale (2 real + 5) but for ten wells of CPD-01, at its
    lowest dose (no hit) and at 0.3 uM (a hit), that the risk points at: there the model paints
    one value, the mean of their real values (the average phenotype, five false hits and a
    curve without its low plateau). Those ten share one virtual value, so no slope joins two of
    them, and their real values straddle the faithful line at it, so the slopes joining them to
    the faithful wells straddle the faithful slope: sixteen lowest-trust sentinels (the ten and
    six others) fit a line close enough to it that every decision is the real readout's. Sixteen
    random ones cover two of the ten on average and leave the rest wrong; sixteen of random line
    and lowest trust cover eight, and their line is faithful. Eight lowest-trust sentinels are
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
    assert value[(16, RANDOM_LINE, "hit_kappa")] > 0.95
    assert value[(16, RANDOM_LINE, "ec50_error")] < 0.05
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
    margins = MARGINS
    for choice in (None, RANDOM_LINE, LOWEST_TRUST):
        assert smallest_replaceable_k(rows, margins, choice=choice) == 16, choice
    assert smallest_replaceable_k(rows, margins, choice=RANDOM) is None
    assert smallest_replaceable_k([r for r in rows if r["k"] < 16], margins) is None
    assert smallest_replaceable_k(rows, {**margins, "hit_kappa": 1.01}) is None


def test_figure11_has_a_panel_per_decision_metric_with_both_choices(corrupted):
    rows, _ = corrupted
    run = {"cell_type": "lung", "train_cell_type": "lung"}
    trained = {"lung-nontoxic": "lung-nontoxic.dapi.s0", "lung-both": "lung-both.dapi.s0"}
    trust = pd.concat(
        [pd.DataFrame(rows).assign(**run, train_set=t, model=m) for t, m in trained.items()]
    )
    figure = figure11(trust, ["lung"])
    # the model a team would deploy on its screen: trained on both phenotypes of its cell type
    (named,) = [t.get_text() for t in figure.axes[0].texts]
    assert named == "lung screen\nlung-both.dapi.s0"
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


def test_a_plate_whose_lowest_trust_wells_are_all_its_wells_draws_no_line_wells():
    """spread_wells on a plate with no well left to draw from (k at least its size) draws none
    instead of failing: the .test grid's one-field screens have plates that small."""
    from vsgrid.screen.sentinels import spread_wells

    wells = pd.DataFrame(
        {
            "compound": ["DMSO"] * 4,
            "concentration": 0.0,
            "plate": "P1",
            "well": ["A01", "A02", "A03", "A04"],
        }
    )
    plate = Plate(wells, ScreenSettings())
    none = np.zeros(4, bool)
    chosen = spread_wells(plate, 3, np.arange(4.0), rng=np.random.default_rng(0), among=none)
    assert not chosen.any()
    every = spread_wells(plate, 8, np.arange(4.0), rng=np.random.default_rng(0), among=~none)
    assert every.all()
