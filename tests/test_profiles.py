"""Level 4's profile-level agreement: per-plate normalization, activity and retrieval mAP, on
hand-made well tables whose answer is known."""

import numpy as np
import pandas as pd
import pytest

from vsgrid.screen.metrics import Missing
from vsgrid.screen.plate import Plate, ScreenSettings
from vsgrid.screen.profiles import (
    NULL_SEED,
    NULL_SIZE,
    PROFILE,
    activity,
    build_profiles,
    normalized_tables,
    profile_decisions,
    treatment_map,
)
from vsgrid.stats import robust_center_scale

COLUMNS = [f"feature_{i}" for i in range(5)]
SHIFT = 8.0  # an active treatment's distance from DMSO, in DMSO SDs: never confused with it


def plate_table(
    rng, *, plate="P1", dmso=16, replicates=4, active=("CPD-A", "CPD-B"), inert=("CPD-I",)
):
    """A plate of DMSO wells (each readout 100 + N(0, 1) x 10), positive controls and compounds
    at one dose: an ``active`` one moves the profile ``SHIFT`` SDs in its own direction, an
    ``inert`` one is drawn as DMSO is."""
    rows = [("DMSO", 0.0)] * dmso + [("etoposide", 10.0)] * replicates
    rows += [(c, 1.0) for c in (*active, *inert) for _ in range(replicates)]
    wells = pd.DataFrame(rows, columns=["compound", "concentration"])
    values = rng.normal(0, 1, (len(wells), len(COLUMNS)))
    for k, name in enumerate(("etoposide", *active)):
        direction = np.zeros(len(COLUMNS))
        direction[k % len(COLUMNS)] = SHIFT
        values[wells["compound"].eq(name).to_numpy()] += direction
    wells = wells.assign(plate=plate, well=[f"W{i:03d}" for i in range(len(wells))], fields=1)
    return pd.concat([wells, pd.DataFrame(100 + 10 * values, columns=COLUMNS)], axis=1)


def profiles_of(real, virtual):
    design = Plate(real[["compound", "concentration"]].reset_index(drop=True), ScreenSettings())
    tables = normalized_tables(real, virtual, design, COLUMNS)
    return tables, build_profiles(tables, design, COLUMNS)


def per_treatment(found, plate):
    index = np.arange(len(plate.wells))[None, :]
    return dict(zip(found.labels, treatment_map(found.ap, found.wells, index)[0]))


def test_an_active_treatment_retrieves_its_replicates_and_an_inert_one_does_not():
    from copairs.map import mean_average_precision

    real = plate_table(np.random.default_rng(0))
    _, profiles = profiles_of(real, {})
    found = activity(profiles.plate, profiles.real)
    maps = per_treatment(found, profiles.plate)
    assert maps["CPD-A @ 1.0"] > 0.95 and maps["etoposide @ 10.0"] > 0.95
    assert maps["CPD-I @ 1.0"] < 0.7
    index = profiles.plate.resamples(20, np.random.default_rng(1))
    decided, note = profile_decisions(profiles, [], index)
    assert decided == {} and note == ""
    from vsgrid.screen.profiles import activity_metrics

    mean_map, active = activity_metrics(found, index)
    assert active[0] == pytest.approx(3 / 4)  # etoposide, CPD-A, CPD-B active; CPD-I not
    # the plate's row is copairs' own mean_average_precision, q-values and all
    scores = pd.DataFrame(
        {
            "treatment": np.array(list(found.labels)).repeat([len(w) for w in found.wells]),
            "average_precision": np.concatenate([found.ap[w] for w in found.wells]),
            "normalized_average_precision": 0.0,  # copairs averages it too; unused here
            "n_pos_pairs": np.concatenate([[len(w) - 1] * len(w) for w in found.wells]),
            "n_total_pairs": np.concatenate(
                [[len(w) - 1 + profiles.plate.negative.sum()] * len(w) for w in found.wells]
            ),
        }
    )
    theirs = mean_average_precision(
        scores, ["treatment"], NULL_SIZE, 0.05, NULL_SEED, progress_bar=False
    )
    # the same APs averaged in another order: equal to float rounding
    assert mean_map[0] == pytest.approx(theirs["mean_average_precision"].mean(), abs=1e-12)
    assert active[0] == theirs["below_corrected_p"].mean()
    assert np.all((mean_map[1:] >= 0) & (mean_map[1:] <= 1))


def test_a_faithful_virtual_copy_agrees_and_a_shuffled_one_retrieves_nothing():
    rng = np.random.default_rng(2)
    real = plate_table(rng, active=("CPD-A", "CPD-B", "CPD-C", "CPD-D"), inert=())
    faithful = real.assign(**{c: real[c] + rng.normal(0, 1.0, len(real)) for c in COLUMNS})
    order = rng.permutation(len(real))
    shuffled = real.assign(**{c: real[c].to_numpy()[order] for c in COLUMNS})
    _, profiles = profiles_of(real, {"faithful": faithful, "shuffled": shuffled})
    index = profiles.plate.resamples(50, np.random.default_rng(3))
    decided, _ = profile_decisions(profiles, ["faithful", "shuffled"], index)
    good, bad = decided["faithful"], decided["shuffled"]
    assert good["retrieval_map"].values[0] > 0.9
    assert abs(good["activity_map_gap"].values[0]) < 0.05
    low, high = np.percentile(good["activity_map_gap"].values[1:], [2.5, 97.5])
    assert -0.1 < low <= high < 0.1
    assert bad["retrieval_map"].values[0] < 0.5
    assert bad["activity_map"].values[0] < good["activity_map"].values[0] - 0.3
    # the real stain's metrics are the same whichever model they sit beside
    assert np.array_equal(good["activity_map_real"].values, bad["activity_map_real"].values)


def test_normalization_is_pycytominers_robust_z_per_plate_and_a_scaled_plate_reads_the_same():
    rng = np.random.default_rng(4)
    one = plate_table(rng)
    two = one.assign(plate="P2", **{c: 2 * one[c] for c in COLUMNS})  # twice the signal
    both = pd.concat([one, two], ignore_index=True)
    tables, profiles = profiles_of(both, {})
    frame = tables.frames["real"]
    dmso = frame["compound"].eq("DMSO").to_numpy() & frame["plate"].eq("P1").to_numpy()
    center, scale = robust_center_scale(frame.loc[dmso, COLUMNS].to_numpy().T)
    # median 0 and 1.4826 x MAD 1 over a plate's DMSO: pycytominer's constant is ours
    assert np.allclose(center, 0, atol=1e-12) and np.allclose(scale, 1, atol=1e-12)
    first, second = (frame.loc[frame["plate"].eq(p), COLUMNS].to_numpy() for p in ("P1", "P2"))
    assert np.allclose(first, second, rtol=0, atol=1e-9)  # the same, to float rounding
    assert len(profiles.plate.wells) == len(both)


def test_a_readout_without_dmso_spread_leaves_the_profile_with_its_reason():
    rng = np.random.default_rng(5)
    real = plate_table(rng)
    dmso = real["compound"].eq("DMSO").to_numpy()
    real.loc[dmso, "feature_4"] = 7.0  # MAD 0 over the DMSO wells
    virtual = real.assign(feature_3=np.where(dmso, 3.0, real["feature_3"]))  # MAD 0, virtual only
    tables, profiles = profiles_of(real, {"model": virtual})
    assert "MAD 0" in tables.dropped["feature_4"] and "real" in tables.dropped["feature_4"]
    assert "model virtual" in tables.dropped["feature_3"]
    assert {"feature_3", "feature_4"}.isdisjoint(profiles.columns)
    for frame in tables.frames.values():  # read as measured, never inf or NaN
        assert np.isfinite(frame[COLUMNS].to_numpy()).all()
        assert (frame["feature_4"] == real["feature_4"]).all()


def test_readouts_without_values_in_most_wells_leave_no_profile_and_say_why():
    """As on tiny screens where most wells hold no cell: feature selection drops every readout,
    and the profile is missing with each one's reason, not a crash inside pycytominer."""
    real = plate_table(np.random.default_rng(6))
    real.loc[real.index[4:], COLUMNS] = np.nan
    _, profiles = profiles_of(real, {"model": real.copy()})
    assert isinstance(profiles, Missing) and "no readout is left in the profile" in str(profiles)
    assert "feature_0: more than 5 % of the real stain's wells without a value" in str(profiles)


def test_a_single_replicate_or_a_plate_without_dmso_is_missing_with_its_reason():
    rng = np.random.default_rng(6)
    lone = plate_table(rng, replicates=1)
    _, profiles = profiles_of(lone, {"model": lone})
    index = profiles.plate.resamples(5, np.random.default_rng(0))
    decided, _ = profile_decisions(profiles, ["model"], index)
    assert isinstance(decided["model"]["activity_map"], Missing)
    assert "one replicate well" in str(decided["model"]["activity_map"])
    assert np.isfinite(decided["model"]["retrieval_map"].values[0])

    some = pd.concat(
        [plate_table(rng), plate_table(rng, dmso=0, replicates=1, active=("CPD-Z",), inert=())],
        ignore_index=True,
    )
    some["well"] = [f"W{i:03d}" for i in range(len(some))]
    _, profiles = profiles_of(some, {"model": some})
    decided, note = profile_decisions(
        profiles, ["model"], profiles.plate.resamples(5, np.random.default_rng(0))
    )
    assert np.isfinite(decided["model"]["activity_map"].values[0])
    assert note.startswith("mean over 4 of 5 treatments; 1 with one replicate well")

    no_dmso = plate_table(rng, dmso=0)
    tables, profiles = profiles_of(no_dmso, {"model": no_dmso})
    assert isinstance(tables, Missing) and isinstance(profiles, Missing)
    assert str(profiles) == "plate P1 has no DMSO wells: no readout can be normalized"


def screen_table(real, virtual_of_lung, virtual_of_breast, resamples=30):
    from vsgrid.grid import DataSet, Model, ScreenRun
    from vsgrid.screen.tables import COLUMNS as TABLE_COLUMNS
    from vsgrid.screen.tables import screen_rows

    own, theirs = (Model(DataSet(c, "nontoxic"), "dapi", 0) for c in ("lung", "breast"))
    virtual = {own.name: virtual_of_lung, theirs.name: virtual_of_breast}
    runs = [ScreenRun(own, "lung"), ScreenRun(theirs, "lung")]
    rows = screen_rows(runs, real, virtual, ScreenSettings(), resamples, 0)
    return pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS), theirs.name


def test_screen_rows_carry_the_profile_metrics_and_the_verdict_reads_the_gap():
    from vsgrid.config import validate
    from vsgrid.screen.profiles import METRICS
    from vsgrid.screen.verdicts import verdict

    rng = np.random.default_rng(7)
    real = plate_table(rng).assign(cell_count=lambda t: t["feature_0"])
    faithful = real.assign(**{c: real[c] + rng.normal(0, 0.5, len(real)) for c in COLUMNS})
    flat = real.assign(**{c: 100 + 10 * rng.normal(0, 1, len(real)) for c in COLUMNS})
    table, other = screen_table(real, faithful, flat)
    profile = table[table["readout"] == PROFILE].set_index(["model", "metric"])
    assert sorted(profile.loc[other].index) == sorted(METRICS)
    gap = profile.loc[(other, "activity_map_gap")]
    assert gap["value"] < -0.3 and gap["ci_high"] < 0 and gap["reason"] == ""
    assert np.isfinite(gap["delta"]) and gap["delta"] < -0.3  # against the faithful baseline
    assert (profile["wells"] == len(real)).all()

    margins = validate({})["evaluation"]["screen"]["margins"]
    assert margins["activity_map_gap"] == 0.1

    def judged(low, high):
        rows = pd.DataFrame(
            [
                {"metric": m, "value": 0.0, "ci_low": -1e-3, "ci_high": 1e-3, "reason": ""}
                for m in ("ec50_error", "z_prime_gap", "activity_map_gap")
            ]
            + [
                {"metric": m, "value": 0.95, "ci_low": 0.9, "ci_high": 1.0, "reason": ""}
                for m in ("hit_kappa", "z_prime", "z_prime_real")
            ]
        )
        rows.loc[rows["metric"] == "activity_map_gap", ["ci_low", "ci_high"]] = low, high
        return verdict(rows, margins)

    assert judged(-0.05, 0.08)[0] == "replaceable"
    assert judged(-0.3, -0.15)[:2] == ("not replaceable", "activity_map_gap")
    assert judged(0.15, 0.3)[:2] == ("not replaceable", "activity_map_gap")
    assert judged(-0.2, 0.05)[:2] == ("undecided", "activity_map_gap")


def test_the_deciding_metric_does_not_hang_on_the_order_of_the_configs_margins():
    """A user's config that sets hit_kappa alone lists it first; the workflow's merged config
    lists the defaults' order. Both must name the same deciding metric (the first of SIDES)."""
    from vsgrid.config import validate
    from vsgrid.screen.verdicts import verdict

    margins = validate({})["evaluation"]["screen"]["margins"]
    rows = pd.DataFrame(
        [
            {"metric": "ec50_error", "value": 2.0, "ci_low": 1.5, "ci_high": 2.5, "reason": ""},
            {"metric": "hit_kappa", "value": 0.1, "ci_low": 0.0, "ci_high": 0.2, "reason": ""},
            {"metric": "z_prime_real", "value": 0.8, "ci_low": 0.7, "ci_high": 0.9, "reason": ""},
        ]
    )
    backwards = dict(reversed(margins.items()))
    assert list(backwards)[0] != "ec50_error"
    assert verdict(rows, backwards)[:2] == verdict(rows, margins)[:2]
    assert verdict(rows, backwards)[:2] == ("not replaceable", "ec50_error")


def test_a_plate_without_dmso_gives_missing_profile_rows_not_a_crash():
    real = plate_table(np.random.default_rng(8), dmso=0)
    table, other = screen_table(real, real, real)
    profile = table[table["readout"] == PROFILE]
    assert profile["value"].isna().all() and len(profile) == 2 * 6
    assert set(profile["reason"]) == {"plate P1 has no DMSO wells: no readout can be normalized"}


def test_figure9_shows_real_and_virtual_activity_and_retrieval_with_cis():
    from vsgrid.screen.figures import figure9

    rng = np.random.default_rng(9)
    real = plate_table(rng)
    faithful = real.assign(**{c: real[c] + rng.normal(0, 0.5, len(real)) for c in COLUMNS})
    table, _ = screen_table(real, faithful, faithful)
    figure = figure9(table, ["lung", "breast"], ["dapi"])
    activity_ax, retrieval_ax = figure.axes
    labels = activity_ax.get_legend_handles_labels()[1]
    assert labels == [
        "real stain",
        "virtual, trained on lung-nontoxic",
        "virtual, trained on breast-nontoxic",
    ]
    assert (
        activity_ax.get_ylabel().endswith("mAP (0-1)") and "retrieval" in retrieval_ax.get_title()
    )
    real_map = table.query("readout == @PROFILE and metric == 'activity_map_real'")["value"].iloc[0]
    (points, *_), *_ = activity_ax.containers
    assert points.get_ydata()[0] == pytest.approx(real_map)  # lung screen, the real stain
