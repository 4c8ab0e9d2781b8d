"""What would change a level-4 verdict: the control wells an undecided assay needs, the EC50 cap."""

import math

import numpy as np
import pandas as pd
import pytest
from shared import DOSES, decide, plate_wells, readout

from vsgrid.screen.assay import scale_to_decide, what_would_decide, z_prime_wells
from vsgrid.screen.calls import assay_z_prime
from vsgrid.screen.metrics import interval_columns
from vsgrid.screen.plate import Plate, ScreenSettings
from vsgrid.stats import interval

EC50 = {"CPD-01": 0.1, "CPD-02": 0.5}


def test_the_scale_to_decide_is_the_squared_ratio_of_the_ci_below_z_to_z_above_the_margin():
    assert scale_to_decide(0.52, 0.31, 0.5) == pytest.approx((0.21 / 0.02) ** 2)
    assert scale_to_decide(0.7, 0.6, 0.5) == pytest.approx(0.25)  # already clear: under 1
    assert scale_to_decide(0.12, -0.3, 0.5) == math.inf
    assert scale_to_decide(0.5, 0.2, 0.5) == math.inf
    assert math.isnan(scale_to_decide(np.nan, 0.2, 0.5))
    assert math.isnan(scale_to_decide(0.6, np.nan, 0.5))


def controls_plate(dmso: np.ndarray, positive: np.ndarray) -> tuple[Plate, np.ndarray]:
    wells = pd.DataFrame(
        {
            "compound": ["DMSO"] * len(dmso) + ["etoposide"] * len(positive),
            "concentration": [0.0] * len(dmso) + [10.0] * len(positive),
        }
    )
    return Plate(wells, ScreenSettings()), np.r_[dmso, positive]


def z_interval(plate: Plate, values: np.ndarray, seed: int) -> tuple[float, float]:
    index = plate.resamples(2000, np.random.default_rng(seed))
    z = assay_z_prime(plate, values, index, {0.0: "etoposide"})
    return float(z[0]), interval(z[1:])[0]


def test_f_times_the_control_wells_narrow_the_z_prime_ci_as_1_over_sqrt_f():
    """The same controls, each well repeated f = 4 times: the same Z' (up to the SDs' n - 1),
    whose bootstrap CI reaches about half as far below it, as :func:`scale_to_decide` assumes;
    a little more than half (0.5 to 0.6 over seeds at six wells a control), the bootstrap of a
    few wells understating their spread: the wells it names are a floor."""
    rng = np.random.default_rng(21)
    dmso, positive = rng.normal(1.0, 0.05, 6), rng.normal(0.1, 0.05, 6)
    z, low = z_interval(*controls_plate(dmso, positive), seed=1)
    z4, low4 = z_interval(*controls_plate(np.repeat(dmso, 4), np.repeat(positive, 4)), seed=2)
    assert z4 == pytest.approx(z, abs=0.03)
    assert 0.45 < (z4 - low4) / (z - low) < 0.65


def test_an_undecided_assay_says_how_many_control_wells_or_plates_would_decide_it():
    wells = plate_wells()
    plate = Plate(
        pd.concat([wells.assign(plate=p) for p in ("P1", "P2")], ignore_index=True),
        ScreenSettings(),
    )
    real = np.concatenate([readout(wells, EC50, np.random.default_rng(s)) for s in (1, 2)])
    counts = z_prime_wells(plate, real)
    assert counts == {"dmso_wells": 16, "positive_wells": 8, "plates": 2}
    said = what_would_decide(0.52, 0.31, 0.5, **counts)
    factor = (0.21 / 0.02) ** 2  # 110.25
    assert said == (
        f"it would be decidable from about {math.ceil(16 * factor)} DMSO and "
        f"{math.ceil(8 * factor)} positive-control wells per plate (now 16 and 8), or "
        f"{math.ceil(2 * factor)} plates (now 2), if its Z' held at 0.52"
    )
    assert what_would_decide(0.12, -0.4, 0.5, **counts) == (
        "its Z' 0.12 is itself below 0.5: no number of control wells or plates would validate it"
    )
    assert what_would_decide(0.8, 0.6, 0.5, **counts) == ""
    assert what_would_decide(np.nan, np.nan, 0.5, **counts) == ""
    without = Plate(
        wells[wells["compound"] != "etoposide"].reset_index(drop=True), ScreenSettings()
    )
    assert all(math.isnan(v) for v in z_prime_wells(without, np.ones(len(without.wells))).values())


def test_an_ec50_error_says_which_share_of_it_is_the_cap_not_a_measurement():
    """A compound whose virtual curve has no EC50 counts as the whole tested range (log10 of
    3 uM / 0.01 uM = 2.48): ``capped_share`` says how many compounds do, 1 when the value is the
    cap itself."""
    rng = np.random.default_rng(22)
    wells = plate_wells()
    plate = Plate(wells, ScreenSettings())
    real = readout(wells, EC50, rng)
    index = plate.resamples(20, rng)
    flat = np.where(wells["compound"].eq("CPD-01").to_numpy(), 1.0, real)
    flat += rng.normal(0, 0.02, len(real))
    none = np.where(wells["concentration"].to_numpy() > 0, 1.0, real) + rng.normal(
        0, 0.02, len(real)
    )
    shares = {}
    for name, virtual in (("faithful", real), ("one flat", flat), ("all flat", none)):
        shares[name] = interval_columns(decide(plate, real, virtual, index)["ec50_error"])
    assert shares["faithful"]["capped_share"] == 0
    assert shares["one flat"]["capped_share"] == 0.5
    capped = shares["all flat"]
    assert capped["capped_share"] == 1
    assert capped["value"] == pytest.approx(np.log10(DOSES.max() / DOSES.min()))
    hits = decide(plate, real, real, index)["hit_kappa"]
    assert "capped_share" not in interval_columns(hits)
