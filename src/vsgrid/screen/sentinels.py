"""Sentinel wells: a few wells per plate stained for real, the virtual readout recalibrated on them.

A team that replaces a stain by a virtual one can still stain ``k`` wells of each plate for real,
its sentinels, chosen where the model is least trusted (a per-well risk such as the
out-of-distribution score of ``vsgrid ood``) or at random (:func:`choose_sentinels`), and
recalibrate the virtual readout on them (:func:`recalibrate`): per plate, the least-squares line
real ~ a + b virtual over its sentinels, applied to all its wells, the sentinels taking their real
values. :func:`sentinel_rows` gives the level-4 decisions
(:func:`vsgrid.screen.decisions.decisions`) of the recalibrated readout against the real one for
each ``k`` and choice, with the share of the staining saved; :func:`smallest_replaceable_k` the
fewest lowest-trust sentinels with which the virtual stain gets the verdict ``replaceable``.

What the line can do. Every level-4 decision is invariant to an affine map of one plate's readout
with any non-zero slope, a negative one included: a hit is ``|x - median DMSO| > k robust SD``,
both sides scaled by ``|b|``; a Hill fit's bottom and top are free, so the mapped readout is
fitted by the mapped curve, with the same EC50, slope and F test; Z' is SDs over a difference of
means. On one plate the line alone therefore changes nothing (``tests/test_sentinels.py`` checks
it, a sign flip included): what sentinels bring there is their real values, which the line puts on
the scale of the plate's other wells. On a screen of several plates the line also corrects a plate
read on another scale than the others, which moves the Hill fits and hit thresholds that pool the
plates' wells (Z' is per plate, and unmoved).

What it cannot. The line is fitted on the sentinels only, so lowest-trust sentinels fit it on the
wells where the virtual stain is least like the rest of its plate: a sentinel whose virtual value is
off the line the other wells follow tilts that line for all of them, and the sentinels' real values
then sit on another scale than the rest. Lowest trust beats random where the line still comes from
wells on it (``tests/test_sentinels.py``: corrupted wells that pull it neither way, among faithful
sentinels); where the sentinels are mostly off the line (wells painted at the DMSO level where the
real phenotype is strong), the line is wrong and lowest trust can decide worse than random wells,
Z' first (the controls among the sentinels no longer match the others).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd

from vsgrid.errors import VsgridError
from vsgrid.evaluation.trust import auroc
from vsgrid.screen.decisions import (
    HIT_WELLS,
    HillFit,
    Metric,
    Missing,
    Plate,
    Readout,
    check_controls,
    decisions,
    interval_columns,
    plate_calls,
    plate_ids,
)
from vsgrid.screen.verdicts import REPLACEABLE, verdict

LOWEST_TRUST, RANDOM = "lowest trust", "random"
KS = (0, 8, 16, 32, 64)
COLUMNS = ["k", "choice", "sentinels", "stain_cost_saved", "metric", "value", "ci_low", "ci_high",
           "undefined_share", "reason"]  # fmt: skip


def choose_sentinels(
    plate: Plate,
    k: int,
    *,
    risk: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The sentinel wells, a boolean mask over ``plate.wells``: on each plate (its ``plate``
    column; without one the table is one plate) the ``k`` wells of highest ``risk`` (a per-well
    score, high where the model is least trusted), or ``k`` wells at random with ``rng``; give
    exactly one of the two. A plate of ``k`` wells or fewer is stained whole. Ties go to the well
    that comes first; a NaN risk, a well the score cannot judge, counts as the highest.

    Every well is eligible, controls included: staining a well for real costs the same whatever
    it holds, and the DMSO and positive-control wells are those every hit threshold and Z' of the
    plate reads, so a distrusted control is the first one a screener would check.
    """
    if (risk is None) == (rng is None):
        raise VsgridError("choose_sentinels: give either risk (lowest trust) or rng (random)")
    if k < 0:
        raise VsgridError(f"sentinels: k = {k}; a plate's sentinel wells number 0 or more")
    n = len(plate.wells)
    if risk is not None:
        risk = _per_well(risk, n, "risk")
        ranked = -np.where(np.isnan(risk), np.inf, risk)
    chosen = np.zeros(n, bool)
    plates = plate_ids(plate)
    for one in dict.fromkeys(plates):
        wells = np.flatnonzero(plates == one)
        if risk is None:
            chosen[rng.choice(wells, size=min(k, len(wells)), replace=False)] = True
        else:
            chosen[wells[np.argsort(ranked[wells], kind="stable")[:k]]] = True
    return chosen


def recalibrate(
    plate: Plate, real: np.ndarray, virtual: np.ndarray, sentinels: np.ndarray
) -> np.ndarray:
    """The virtual readout recalibrated on each plate's ``sentinels`` (a well mask): the
    least-squares line real ~ a + b virtual over the plate's sentinels, applied to its virtual
    values, and the sentinels' own real values (they were stained for real). A plate with fewer
    than two distinct virtual values among its sentinels (``k`` = 0, one sentinel) keeps its
    virtual values unchanged, its sentinels included: without a line their real values cannot be
    put on the scale of its other wells. Every well has a value in both readouts (leave the
    others out first, as :func:`vsgrid.screen.tables.screen_rows` does).
    """
    n = len(plate.wells)
    real, virtual = _per_well(real, n, "real"), _per_well(virtual, n, "virtual")
    sentinels = np.asarray(sentinels, bool)
    for values, name in ((real, "real"), (virtual, "virtual")):
        if not np.isfinite(values).all():
            raise VsgridError(f"recalibrate: {name} has wells without a value; leave them out")
    out = virtual.copy()
    plates = plate_ids(plate)
    for one in dict.fromkeys(plates):
        on = plates == one
        stained = on & sentinels
        if len(np.unique(virtual[stained])) < 2:
            continue
        slope, intercept = np.polyfit(virtual[stained], real[stained], 1)
        out[on] = intercept + slope * virtual[on]
        out[stained] = real[stained]
    return out


def sentinel_rows(
    plate: Plate,
    real: np.ndarray,
    virtual: np.ndarray,
    risk: np.ndarray,
    *,
    ks: tuple[int, ...] = KS,
    resamples: int,
    rng: np.random.Generator,
) -> list[dict]:
    """The decisions of the virtual readout recalibrated on ``k`` sentinels per plate, against the
    real readout, for each of ``ks`` and each choice (``lowest trust``: the highest ``risk``;
    ``random``): a row per (k, choice, metric) with the plate's value, its 95 % CI over
    ``resamples`` resamples of the wells (:meth:`Plate.resamples`, drawn first from ``rng``), the
    number of sentinel wells and ``stain_cost_saved`` (1 - sentinel wells / wells). A metric the
    plate does not define has a NaN value and its reason.

    Lowest-trust sentinels are the same in every resample, and so is the line fitted on them: their
    CI is over the wells. Random sentinels are drawn anew for every resample (row 0: one draw on
    the plate itself), so their CI holds the luck of the draw too. ``k`` = 0 is the uncorrected
    virtual readout's decisions, one set of rows for both choices.
    """
    n = len(plate.wells)
    real, virtual = _per_well(real, n, "real"), _per_well(virtual, n, "virtual")
    index = plate.resamples(resamples, rng)
    measured = Readout.of(plate, real, index)
    rows = []
    for k in ks:
        fixed = choose_sentinels(plate, k, risk=risk)
        lowest = decisions(
            plate,
            measured,
            Readout.of(plate, recalibrate(plate, real, virtual, fixed), index),
            index,
        )
        drawn = lowest if k == 0 else _drawn_decisions(plate, measured, virtual, k, index, rng)
        common = {"k": k, "sentinels": int(fixed.sum()),
                  "stain_cost_saved": 1.0 - fixed.sum() / n}  # fmt: skip
        for choice, decided in ((LOWEST_TRUST, lowest), (RANDOM, drawn)):
            rows += [
                _row({**common, "choice": choice, "metric": metric}, values)
                for metric, values in decided.items()
            ]
    return rows


def _drawn_decisions(
    plate: Plate,
    real: Readout,
    virtual: np.ndarray,
    k: int,
    index: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, Metric | Missing]:
    """The decisions with ``k`` random sentinels drawn anew for each row of ``index``: each draw
    decides on the plate (row 0) and its resample, and keeps the resample's values (row 0's for
    the first draw). A metric the first draw's plate lacks is :class:`Missing`; one a later
    draw's plate lacks is NaN in that resample, with why."""
    per_draw = []
    for row in range(len(index)):
        rows = [0, row]
        drawn = recalibrate(plate, real.values, virtual, choose_sentinels(plate, k, rng=rng))
        per_draw.append(
            decisions(
                plate, _rows_of(real, rows), Readout.of(plate, drawn, index[rows]), index[rows]
            )
        )
    out: dict[str, Metric | Missing] = {}
    for metric, first in per_draw[0].items():
        if isinstance(first, Missing):
            out[metric] = first
            continue
        values, undefined = np.full(len(index), np.nan), np.full(len(index), "", dtype=object)
        for row, decided in enumerate(per_draw):
            found = decided[metric]
            if isinstance(found, Missing):
                undefined[row] = f"draw sentinels that leave the plate without it ({found})"
            else:
                values[row], undefined[row] = (
                    found.values[min(row, 1)],
                    found.undefined[min(row, 1)],
                )
        out[metric] = Metric(values, undefined.astype(str))
    return out


def _rows_of(read: Readout, rows: list[int]) -> Readout:
    """``read`` on some rows of its index (its fits, fitted row by row, sliced: not refitted)."""
    fits = {
        name: fit if isinstance(fit, Missing)
        else HillFit(**{f.name: getattr(fit, f.name)[rows] for f in fields(HillFit)})
        for name, fit in read.fits.items()
    }  # fmt: skip
    return Readout(read.values, fits, read.raw)


def _row(columns: dict, values: Metric | Missing) -> dict:
    """A sentinel row: ``columns`` with a metric's value and CI, or NaN and the reason it is
    missing."""
    if isinstance(values, Missing):
        return {**dict.fromkeys(COLUMNS, np.nan), **columns, "reason": str(values)}
    return {**columns, **interval_columns(values)}


def verdicts_by_k(
    rows: list[dict] | pd.DataFrame, margins: dict[str, float]
) -> dict[int, tuple[str, str, str]]:
    """Per ``k``, the verdict (:func:`vsgrid.screen.verdicts.verdict`: verdict, deciding metric,
    why) of the lowest-trust rows of :func:`sentinel_rows`, ``margins`` as
    ``evaluation.screen.margins``. Only the margins of metrics the rows hold are judged:
    sentinels recalibrate one readout, not the profile whose ``activity_map_gap`` the screen's
    verdict also reads."""
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    lowest = table[table["choice"] == LOWEST_TRUST]
    judged = {metric: bound for metric, bound in margins.items() if metric in set(lowest["metric"])}
    return {
        int(k): verdict(group[["metric", "value", "ci_low", "ci_high", "reason"]], judged)
        for k, group in lowest.groupby("k", sort=True)
    }


def smallest_replaceable_k(
    rows: list[dict] | pd.DataFrame, margins: dict[str, float]
) -> int | None:
    """The smallest ``k`` whose lowest-trust rows get the verdict ``replaceable``
    (:func:`verdicts_by_k`), None when no ``k`` does."""
    found = verdicts_by_k(rows, margins)
    return next((k for k, (said, _, _) in found.items() if said == REPLACEABLE), None)


def flip_auroc(
    plate: Plate, real: np.ndarray, virtual: np.ndarray, risk: np.ndarray, index: np.ndarray
) -> Metric | Missing:
    """Does the risk point at the wells whose hit call the virtual stain gets wrong? Per resample
    (``index``, row 0 the plate), the AUROC of ``risk`` for the called wells whose virtual call
    differs from the real one against those where the two agree (0.5: blind to the flips).
    :class:`Missing` where the plate has no calls, or its calls none flipped or all."""
    n = len(plate.wells)
    real, virtual = _per_well(real, n, "real"), _per_well(virtual, n, "virtual")
    try:
        check_controls(plate)
        if not plate.called.any():
            raise Missing(
                f"{plate.without('called', HIT_WELLS[plate.settings.hit_wells])}: no hit to call"
            )
        calls = [plate_calls(plate, v, index, s) for v, s in ((real, "real"), (virtual, "virtual"))]
    except Missing as reason:
        return reason
    no_threshold = np.isnan(calls[0]).any(1) | np.isnan(calls[1]).any(1)
    flipped = calls[0] != calls[1]
    if not flipped[0].any() or flipped[0].all():
        said = "none" if not flipped[0].any() else "every one"
        return Missing(f"the virtual stain flips {said} of the plate's hit calls: no AUROC")
    risk = _per_well(risk, n, "risk")[index[:, plate.called]]
    values = np.array([np.nan if bad else auroc(r[~f], r[f])
                       for r, f, bad in zip(risk, flipped, no_threshold)])  # fmt: skip
    return Metric.of(
        values,
        (no_threshold, "draw DMSO wells without spread (MAD 0, no threshold) in a stain"),
        (~flipped.any(1) | flipped.all(1), "draw no flipped call, or only flipped ones"),
    )


def flip_row(plate: Plate, real, virtual, risk, index: np.ndarray) -> dict:
    """:func:`flip_auroc` as a row of the sentinel table (no ``k``, no choice)."""
    columns = {"k": np.nan, "choice": "", "sentinels": 0, "stain_cost_saved": np.nan,
               "metric": "flip_auroc"}  # fmt: skip
    return _row(columns, flip_auroc(plate, real, virtual, risk, index))


def _per_well(values, n: int, name: str) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if values.shape != (n,):
        raise VsgridError(f"{name}: {values.size} values for a plate of {n} wells")
    return values
