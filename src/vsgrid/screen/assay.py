"""What would decide an assay left undecided: the control wells, or plates, that would validate it.

A screen whose real stain's Z' CI reaches below the Z' margin is no validated assay
(:mod:`vsgrid.screen.verdicts`): there is no decision to reproduce. Whether more controls would
make it one is read from the CI itself. Its lower half-width ``h`` (Z' on the plates minus the CI's
lower bound) is the spread of the well-resampling bootstrap at the current number of control
wells; Z' is a ratio of the controls' means and SDs, whose sampling spread shrinks as
``1 / sqrt(n)`` in the wells, and the screen's Z' is the mean of its plates' (each resampled within
itself), whose spread shrinks as ``1 / sqrt(plates)``. With ``f`` times the control wells on every
plate, or ``f`` times the plates, the half-width is ``h / sqrt(f)``: if the Z' measured held, the
CI's lower bound clears the margin from ``f = (h / (Z' - margin)) ** 2``
(:func:`scale_to_decide`). Where the Z' measured is itself at or below the margin, no number of
wells does: they would narrow the CI around a value that fails. The numbers are a floor: at a
handful of wells per control the bootstrap understates their spread (``tests/test_assay.py``: six
wells repeated four times narrow the CI to 0.5-0.6 of its width, not 0.5), and the plates' own
differences are not in it (it resamples wells within plates), so ``f`` times the plates holds for
new plates like the present ones.
"""

from __future__ import annotations

import math

import numpy as np

from vsgrid.screen.calls import assay_controls
from vsgrid.screen.metrics import Missing
from vsgrid.screen.plate import Plate, plate_ids


def scale_to_decide(value: float, ci_low: float, margin: float) -> float:
    """The factor on the control wells per plate, or on the plates, from which the lower bound of
    a Z' CI (``ci_low``, at the current wells) clears ``margin`` if the Z' ``value`` held: at most
    1 where it already does, infinite where ``value`` is not above ``margin``, NaN without a
    value or a CI (see the module docstring)."""
    if not (np.isfinite(value) and np.isfinite(ci_low)):
        return math.nan
    if value <= margin:
        return math.inf
    return ((value - ci_low) / (value - margin)) ** 2


def z_prime_wells(plate: Plate, real: np.ndarray) -> dict[str, float]:
    """The wells a screen's Z' reads (:func:`vsgrid.screen.calls.assay_z_prime`), from the
    real readout on ``plate``: ``dmso_wells`` and ``positive_wells`` (those of the positive
    control its window uses) per plate, on average over the ``plates`` that have a Z'; NaN where
    none has."""
    try:
        controls = assay_controls(plate, np.asarray(real, np.float64))
    except Missing:
        return dict.fromkeys(("dmso_wells", "positive_wells", "plates"), math.nan)
    plates = plate_ids(plate)
    on = [plates == one for one in controls]
    return {
        "dmso_wells": float(np.mean([(wells & plate.negative).sum() for wells in on])),
        "positive_wells": float(
            np.mean([(wells & (plate.names == c)).sum() for wells, c in zip(on, controls.values())])
        ),
        "plates": float(len(controls)),
    }


def what_would_decide(
    value: float,
    ci_low: float,
    margin: float,
    *,
    dmso_wells: float,
    positive_wells: float,
    plates: float,
) -> str:
    """What would make an undecided assay decidable, as the end of a verdict's why: the control
    wells per plate, or the plates, at which its real-stain Z' CI would clear ``margin`` if its
    Z' ``value`` held (:func:`scale_to_decide`, the wells as :func:`z_prime_wells` counts them),
    that no number would where the Z' is itself below it, and '' where the CI already clears it
    or has no bound."""
    factor = scale_to_decide(value, ci_low, margin)
    if not factor > 1:
        return ""
    if math.isinf(factor):
        return (
            f"its Z' {value:.2f} is itself below {margin}: no number of control wells or plates "
            "would validate it"
        )
    more = {
        name: math.ceil(round(count * factor, 9))
        for name, count in (("dmso", dmso_wells), ("positive", positive_wells), ("plates", plates))
    }
    return (
        f"it would be decidable from about {more['dmso']} DMSO and {more['positive']} "
        f"positive-control wells per plate (now {dmso_wells:g} and {positive_wells:g}), or "
        f"{more['plates']} plates (now {plates:g}), if its Z' held at {value:.2f}"
    )
