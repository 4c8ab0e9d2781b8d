"""Sentinel wells: a few wells per plate stained for real, the virtual readout recalibrated on them.

A team that replaces a stain by a virtual one can still stain ``k`` wells of each plate for real,
its sentinels, and recalibrate the virtual readout on them (:func:`recalibrate`): per plate, a line
real ~ a + b virtual fitted on some of them (:func:`theil_sen`), applied to all its wells, the
sentinels taking their real values. Three choices of sentinels (:func:`sentinel_wells`):

- ``random``: ``k`` wells at random, the line fitted on all of them;
- ``lowest trust``: the ``k`` wells the model is least trusted on (highest per-well risk, such as
  the out-of-distribution score of ``vsgrid ood``), the line fitted on them;
- ``random line + lowest trust``: the ``k // 2`` least trusted wells, which take their real values
  only, and ``ceil(k / 2)`` of the others at random for the line, spread over the plate's virtual
  readout (:func:`spread_wells`).

:func:`sentinel_rows` gives the level-4 decisions (:func:`vsgrid.screen.decisions.decisions`) of
the recalibrated readout against the real one for each ``k`` and choice, with the share of the
staining saved; a run without a risk score has the random choice only.
:func:`smallest_replaceable_k` the fewest sentinels with which the virtual stain gets the verdict
``replaceable``, under ``random line + lowest trust`` (``random`` without a risk score).

What the line can do. Every level-4 decision is invariant to an affine map of one plate's readout
with any non-zero slope, a negative one included: a hit is ``|x - median DMSO| > k robust SD``,
both sides scaled by ``|b|``; a Hill fit's bottom and top are free, so the mapped readout is
fitted by the mapped curve, with the same EC50, slope and F test; Z' is SDs over a difference of
means. On one plate the line alone therefore changes nothing (``tests/test_sentinels.py`` checks
it, a sign flip included): what sentinels bring there is their real values, which the line puts on
the scale of the plate's other wells. On a screen of several plates the line also corrects a plate
read on another scale than the others (a gain and offset per plate), which moves the Hill fits and
hit thresholds that pool the plates' wells (Z' is per plate, and unmoved): a faithful stain so
distorted is ``not replaceable`` uncorrected, and replaceable from a few sentinels per plate.

What it cannot, and the choices. The line is fitted on a few wells, so a well whose virtual value
is off the line the plate's other wells follow tilts it for all of them. The Theil-Sen line
ignores such wells while they are under 29 % of those it is fitted on, but lowest-trust wells are
chosen for being the least like the rest of their plate: where most of them are off the line
(wells painted at the DMSO level where the real phenotype is strong), a line fitted on them is
wrong whatever the fit, and lowest trust decides worse than random wells, Z' first (the controls
among the sentinels no longer match the others). Hence ``random line + lowest trust``: the line
from wells that stand for the plate, the real values where the model is least trusted.
``lowest trust`` stays in the table beside it to show that failure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vsgrid.errors import VsgridError
from vsgrid.screen.calls import plate_calls
from vsgrid.screen.decisions import Readout, decisions
from vsgrid.screen.metrics import METRIC_COLUMNS, Metric, Missing, interval_columns
from vsgrid.screen.plate import HIT_WELLS, Plate, check_controls, plate_ids
from vsgrid.screen.verdicts import REPLACEABLE, verdict
from vsgrid.stats import auroc

LOWEST_TRUST, RANDOM, RANDOM_LINE = "lowest trust", "random", "random line + lowest trust"
CHOICES = (RANDOM_LINE, LOWEST_TRUST, RANDOM)
KS = (0, 8, 16, 32, 64)
COLUMNS = [
    "k",
    "choice",
    "sentinels",
    "stain_cost_saved",
    *METRIC_COLUMNS,
]


def choose_sentinels(
    plate: Plate,
    k: int,
    *,
    risk: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    among: np.ndarray | None = None,
) -> np.ndarray:
    """The sentinel wells, a boolean mask over ``plate.wells``: on each plate (its ``plate``
    column; without one the table is one plate) the ``k`` wells of highest ``risk`` (a per-well
    score, high where the model is least trusted), or ``k`` wells at random with ``rng``; give
    exactly one of the two. Only wells in ``among`` (a mask; default every well) are chosen. A
    plate with ``k`` such wells or fewer has them all. Ties go to the well that comes first; a NaN
    risk, a well the score cannot judge, counts as the highest.

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
    eligible = np.ones(n, bool) if among is None else np.asarray(among, bool)
    chosen = np.zeros(n, bool)
    plates = plate_ids(plate)
    for one in dict.fromkeys(plates):
        wells = np.flatnonzero((plates == one) & eligible)
        if risk is None:
            chosen[rng.choice(wells, size=min(k, len(wells)), replace=False)] = True
        else:
            chosen[wells[np.argsort(ranked[wells], kind="stable")[:k]]] = True
    return chosen


def sentinel_wells(
    plate: Plate,
    k: int,
    choice: str,
    *,
    risk: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    virtual: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` sentinel wells per plate of a ``choice`` (:data:`CHOICES`; see the module
    docstring) and the wells its line is fitted on, two masks over ``plate.wells``. ``lowest
    trust`` reads ``risk``, ``random`` draws from ``rng``, ``random line + lowest trust`` both,
    and ``virtual`` to spread its line wells: ``k // 2`` lowest-trust wells, and ``ceil(k / 2)``
    of the others for the line (:func:`spread_wells`)."""
    if choice == LOWEST_TRUST:
        chosen = choose_sentinels(plate, k, risk=risk)
        return chosen, chosen
    if choice == RANDOM:
        chosen = choose_sentinels(plate, k, rng=rng)
        return chosen, chosen
    if choice != RANDOM_LINE:
        raise VsgridError(f"sentinels: {choice!r} is not one of {', '.join(CHOICES)}")
    lowest = choose_sentinels(plate, k // 2, risk=risk)
    line = spread_wells(plate, k - k // 2, virtual, rng=rng, among=~lowest)
    return lowest | line, line


def spread_wells(
    plate: Plate, k: int, virtual: np.ndarray, *, rng: np.random.Generator, among: np.ndarray
) -> np.ndarray:
    """``k`` wells per plate at random, spread over its ``virtual`` readout: the plate's wells in
    ``among`` (a mask) ranked by their virtual value and cut into ``k`` runs of (nearly) equal
    size, one well drawn from each. A line fitted on them spans the plate's range, where ``k``
    wells drawn at random may all sit on one plateau (half a plate's wells are often at the DMSO
    level), whose spread is noise and whose slope is anything; and they still stand for the plate,
    one of each ``1 / k`` of it, not its extremes. A plate with ``k`` such wells or fewer has
    them all."""
    virtual = _per_well(virtual, len(plate.wells), "virtual")
    chosen = np.zeros(len(plate.wells), bool)
    plates = plate_ids(plate)
    for one in dict.fromkeys(plates):
        wells = np.flatnonzero((plates == one) & np.asarray(among, bool))
        ranked = wells[np.argsort(virtual[wells], kind="stable")]
        if k == 0 or len(ranked) == 0:  # a small plate's lowest-trust wells may be all it has
            continue
        for run in np.array_split(ranked, min(k, len(ranked))):
            chosen[rng.choice(run)] = True
    return chosen


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The Theil-Sen line y ~ a + b x, as ``(a, b)``: ``b`` the median of the slopes between every
    two points with distinct ``x``, ``a`` the median of ``y - b x``; two distinct ``x`` at least.

    It is :func:`scipy.stats.theilslopes` with ``method="joint"``, without the slope's confidence
    interval, which costs twenty times the line, and sentinels fit thousands (one per plate, k,
    choice and random draw). Theil-Sen rather than least squares: a point off the line moves a
    median of slopes by one rank, not the line by its residual, up to 29 % of the points (its
    breakdown point). Rather than Siegel's repeated medians (50 %): its efficiency on points with
    Gaussian noise is close to least squares' (Siegel's about 40 %), which matters on the four to
    thirty-two wells a line has here, and the sentinels a line is fitted on are chosen so that few
    are off it. Rather than Huber's M-estimator: that one resists outlying ``y`` but not an
    outlying ``x``, and an off-line virtual value is an outlying ``x``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    first, second = np.triu_indices(len(x), 1)
    dx, dy = x[second] - x[first], y[second] - y[first]
    slope = float(np.median(dy[dx != 0] / dx[dx != 0]))
    return float(np.median(y - slope * x)), slope


def recalibrate(
    plate: Plate,
    real: np.ndarray,
    virtual: np.ndarray,
    sentinels: np.ndarray,
    *,
    line: np.ndarray | None = None,
) -> np.ndarray:
    """The virtual readout recalibrated on each plate's ``sentinels`` (a well mask): the
    :func:`theil_sen` line real ~ a + b virtual over the plate's ``line`` wells (a mask, default
    the sentinels) applied to its virtual values, and the sentinels' own real values (they were
    stained for real). A plate with fewer than two distinct virtual values among its line wells
    (``k`` = 0, one sentinel) keeps its virtual values unchanged, its sentinels included: without
    a line their real values cannot be put on the scale of its other wells. Every well has a
    value in both readouts (leave the others out first, as
    :func:`vsgrid.screen.tables.screen_rows` does).
    """
    n = len(plate.wells)
    real, virtual = _per_well(real, n, "real"), _per_well(virtual, n, "virtual")
    sentinels = np.asarray(sentinels, bool)
    line = sentinels if line is None else np.asarray(line, bool)
    for values, name in ((real, "real"), (virtual, "virtual")):
        if not np.isfinite(values).all():
            raise VsgridError(f"recalibrate: {name} has wells without a value; leave them out")
    out = virtual.copy()
    plates = plate_ids(plate)
    for one in dict.fromkeys(plates):
        on = plates == one
        fitted = on & line
        if len(np.unique(virtual[fitted])) < 2:
            continue
        intercept, slope = theil_sen(virtual[fitted], real[fitted])
        out[on] = intercept + slope * virtual[on]
        out[on & sentinels] = real[on & sentinels]
    return out


def sentinel_rows(
    plate: Plate,
    real: np.ndarray,
    virtual: np.ndarray,
    risk: np.ndarray | None,
    *,
    ks: tuple[int, ...] = KS,
    resamples: int,
    rng: np.random.Generator,
) -> list[dict]:
    """The decisions of the virtual readout recalibrated on ``k`` sentinels per plate, against the
    real readout, for each of ``ks`` and each choice (:data:`CHOICES`; ``random`` alone where
    ``risk`` is None, a run without a risk score): a row per (k, choice, metric) with the plate's
    value, its 95 % CI over ``resamples`` resamples of the wells (:meth:`Plate.resamples`, drawn
    first from ``rng``), the number of sentinel wells and ``stain_cost_saved`` (1 - sentinel
    wells / wells). A metric the plate does not define has a NaN value and its reason.

    Lowest-trust sentinels are the same in every resample, and so is the line fitted on them: their
    CI is over the wells. Random ones (``random``, and the line of ``random line + lowest trust``)
    are drawn anew for every resample (row 0: one draw on the plate itself), so their CI holds the
    luck of the draw too; each draw's readout is a copy of the plate decided with the others in
    one call (:func:`vsgrid.screen.decisions.decisions`). ``k`` = 0 is the uncorrected virtual
    readout's decisions, one set of rows for every choice.
    """
    n = len(plate.wells)
    real, virtual = _per_well(real, n, "real"), _per_well(virtual, n, "virtual")
    index = plate.resamples(resamples, rng)
    measured = Readout.of(plate, real, index)
    choices = CHOICES if risk is not None else (RANDOM,)
    uncorrected = _decided_copies(plate, measured, virtual[None, :], index)
    rows = []
    for k in ks:
        for choice in choices:
            draws = 1 if choice == LOWEST_TRUST or k == 0 else len(index)
            chosen = [
                sentinel_wells(plate, k, choice, risk=risk, rng=rng, virtual=virtual)
                for _ in range(draws)
            ]
            decided = uncorrected
            if k > 0:
                copies = [recalibrate(plate, real, virtual, s, line=line) for s, line in chosen]
                decided = _decided_copies(plate, measured, np.array(copies), index)
            stained = int(chosen[0][0].sum())
            common = {
                "k": k,
                "choice": choice,
                "sentinels": stained,
                "stain_cost_saved": 1.0 - stained / n if n else np.nan,
            }
            rows += [
                _row({**common, "metric": metric}, values) for metric, values in decided.items()
            ]
    return rows


def _decided_copies(
    plate: Plate, real: Readout, copies: np.ndarray, index: np.ndarray
) -> dict[str, Metric | Missing]:
    """The decisions of a virtual readout given as ``copies`` of the plate's values (copies,
    wells): one copy read by every row of ``index``, or one per row, row ``r`` reading copy
    ``r``. The real readout's fits are those of ``index``: its values are the same in each copy."""
    n = len(plate.wells)
    rows = np.arange(len(index)) if len(copies) > 1 else np.zeros(len(index), int)
    stacked = index + n * rows[:, None]
    tiled = Readout(np.tile(real.values, len(copies)), real.fits, np.tile(real.raw, len(copies)))
    return decisions(plate, tiled, Readout.of(plate, copies.ravel(), stacked), stacked)


def _row(columns: dict, values: Metric | Missing) -> dict:
    """A sentinel row: ``columns`` with a metric's value and CI, or NaN and the reason it is
    missing."""
    if isinstance(values, Missing):
        return {**dict.fromkeys(COLUMNS, np.nan), **columns, "reason": str(values)}
    return {**columns, **interval_columns(values)}


def verdicts_by_k(
    rows: list[dict] | pd.DataFrame, margins: dict[str, float], *, choice: str | None = None
) -> dict[int, tuple[str, str, str]]:
    """Per ``k``, the verdict (:func:`vsgrid.screen.verdicts.verdict`: verdict, deciding metric,
    why) of one choice's rows of :func:`sentinel_rows`, ``margins`` as
    ``evaluation.screen.margins``: ``choice``, by default ``random line + lowest trust`` where
    the rows hold it (a run with a risk score), else ``random``. Only the margins of metrics the
    rows hold are judged: sentinels recalibrate one readout, not the profile whose
    ``activity_map_gap`` the screen's verdict also reads."""
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    if choice is None:
        choice = RANDOM_LINE if (table["choice"] == RANDOM_LINE).any() else RANDOM
    chosen = table[table["choice"] == choice]
    judged = {metric: bound for metric, bound in margins.items() if metric in set(chosen["metric"])}
    return {
        int(k): verdict(group[["metric", "value", "ci_low", "ci_high", "reason"]], judged)
        for k, group in chosen.groupby("k", sort=True)
    }


def smallest_replaceable_k(
    rows: list[dict] | pd.DataFrame, margins: dict[str, float], *, choice: str | None = None
) -> int | None:
    """The smallest ``k`` whose rows of ``choice`` get the verdict ``replaceable``
    (:func:`verdicts_by_k`, which says which choice None is), None when no ``k`` does."""
    found = verdicts_by_k(rows, margins, choice=choice)
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
    values = np.array(
        [np.nan if bad else auroc(r[~f], r[f]) for r, f, bad in zip(risk, flipped, no_threshold)]
    )
    return Metric.of(
        values,
        (no_threshold, "draw DMSO wells without spread (MAD 0, no threshold) in a stain"),
        (~flipped.any(1) | flipped.all(1), "draw no flipped call, or only flipped ones"),
    )


def flip_row(plate: Plate, real, virtual, risk, index: np.ndarray) -> dict:
    """:func:`flip_auroc` as a row of the sentinel table (no ``k``, no choice)."""
    columns = {
        "k": np.nan,
        "choice": "",
        "sentinels": 0,
        "stain_cost_saved": np.nan,
        "metric": "flip_auroc",
    }
    return _row(columns, flip_auroc(plate, real, virtual, risk, index))


def _per_well(values, n: int, name: str) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if values.shape != (n,):
        raise VsgridError(f"{name}: {values.size} values for a plate of {n} wells")
    return values
