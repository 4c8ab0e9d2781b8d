"""Level 4: do virtual stains lead to the same screening decisions as real ones?

From per-well readouts of a screen plate (:mod:`vsgrid.screen.wells`), real and virtual:

- **potency**: a 4-parameter Hill curve per compound, ``bottom + (top - bottom) / (1 + 10 **
  ((log_ec50 - log10 c) * slope))``, fitted by least squares over a bounded grid of ``log_ec50``
  (one decade either side of the tested range) and ``slope`` (0.5 to 5), ``bottom`` and ``top``
  solved exactly for each: no starting values, no divergence, and every bootstrap resample fitted
  at once. A fit whose EC50 lands on the grid's edge has not converged; a curve no better than a
  constant (F test, p > 0.05) is flat. Neither gives an EC50;
- **hit calls**: a compound's well at a dose is a hit when its readout lies more than ``k``
  robust SDs (1.4826 x MAD of the DMSO wells) from the DMSO median. The positive controls are
  called too only with ``hit_wells: treated``: every faithful stain calls them hits, so they raise
  the agreement without telling anything about the compounds;
- **assay quality**: Z' = 1 - 3 (SD positive + SD DMSO) / |mean positive - mean DMSO|, per
  plate, with the positive control whose Z' the real stain has highest on that plate (chosen once:
  every resample and every virtual stain read the same window), and the screen's the mean over
  its plates: each positive control opens its own window (a kill control and a DNA-damage control
  move a readout by different amounts), and an assay is validated plate by plate (pooled, the
  controls' and the plates' differences would count as noise).

Virtual is compared with real: ``ec50_error`` (mean |log10 EC50 virtual - real| over the compounds
whose real curve has an EC50; a compound whose virtual curve has none counts as the whole tested
range, the EC50 being anywhere in it), ``hit_kappa`` (Cohen's kappa), ``hit_precision``,
``hit_recall`` (real calls as truth), ``z_prime`` with ``z_prime_real``, and ``z_prime_gap``
(|Z' virtual - Z' real|, per resample: its CI is paired). A metric that cannot be
computed (a compound with too few concentrations, a plate without DMSO or positive controls, no
spread anywhere) is NaN *with its reason*, a reason true of the plate, never a crash. A metric the
plate has but a resample does not (a resample that draws one of two DMSO wells twice has no MAD,
one that draws no hit in either stain has no kappa) is NaN in that resample only, with what that
resample draws (:class:`Metric`): the plate's value comes from the plate; how the resamples that
define it make a CI is :mod:`vsgrid.screen.tables`'s.

A compound's well at concentration 0 holds its vehicle alone: it is neither in the compound's Hill
fit (log10 0 has no place on the curve) nor a treated well (it received no compound, so it is
never a hit), and it does not join the DMSO controls either (the plate's vehicle controls are the
named ones; a dose recorded as 0 by mistake must not move the hit threshold).

Confidence intervals resample wells within each (plate, compound, concentration), the same wells
for real and virtual stains (and for a baseline model), so the design of the plate is kept.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import stats

from vsgrid.data.plates import NEGATIVE_CONTROLS, POSITIVE_CONTROLS, named, shared_edge
from vsgrid.errors import VsgridError
from vsgrid.report.tables import interval
from vsgrid.robust import robust_center_scale

UNDEFINED_NOTE = 0.10  # a CI over fewer than 90 % of the resamples says so in its reason
LOG_EC50_STEP = 0.02  # log10 units: well under the 0.3 that separates a good EC50 from a bad one
SLOPES = np.geomspace(0.5, 5.0, 12)
FLAT_P = 0.05
# evaluation.screen.hit_wells: the wells hits are called in, as a reason names them
HIT_WELLS = {"compounds": "compound wells", "treated": "treated wells"}
NO_TRUTH = "no true EC50 is known (only synthetic plates record theirs)"
EDGE_BIAS = "they measure the edge effect with the untreated baseline, and every call against them is biased"


@dataclass(frozen=True)
class ScreenSettings:
    """``evaluation.screen``'s decision settings and the plate's control names."""

    hit_sd: float = 3.0
    min_concentrations: int = 4
    negative: tuple[str, ...] = NEGATIVE_CONTROLS
    positive: tuple[str, ...] = POSITIVE_CONTROLS
    hit_wells: str = "compounds"

    def __post_init__(self) -> None:
        if self.hit_wells not in HIT_WELLS:
            raise VsgridError(
                f"evaluation.screen.hit_wells: {self.hit_wells!r} is not one of {', '.join(HIT_WELLS)}"
            )

    @classmethod
    def from_config(cls, config: dict) -> ScreenSettings:
        screen, rule = config["evaluation"]["screen"], config["data"]["phenotype_rule"]
        return cls(
            screen["hit_sd"],
            screen["min_concentrations"],
            tuple(rule["negative_controls"]),
            tuple(rule["positive_controls"]),
            screen["hit_wells"],
        )

    def is_negative(self, compound: pd.Series) -> np.ndarray:
        return named(compound, self.negative)

    def is_positive(self, compound: pd.Series) -> np.ndarray:
        return named(compound, self.positive)


class Missing(ValueError):
    """A metric that cannot be computed; the message is its reason."""


@dataclass(frozen=True)
class Metric:
    """A metric on the plate (``values[0]``) and on each bootstrap resample (``values[1:]``), NaN
    in a resample that does not define it; ``undefined`` says what such a resample draws (a verb
    phrase, '' in a row with a value)."""

    values: np.ndarray
    undefined: np.ndarray
    # ec50_error's: per row, the share of the compounds with a real EC50 whose virtual curve has
    # none, their error counted as the whole tested range (the cap); None for other metrics.
    capped: np.ndarray | None = None

    @classmethod
    def of(cls, values: np.ndarray, *causes: tuple[np.ndarray, str]) -> Metric:
        """``values`` with, in each row without a value, the first of ``causes`` (a row mask and
        what the rows it holds for draw) that holds there."""
        values = np.asarray(values, np.float64)
        why = np.select([mask for mask, _ in causes], [phrase for _, phrase in causes], "")
        return cls(values, np.where(np.isnan(values), why, ""))


def interval_columns(metric: Metric) -> dict:
    """A metric's value on the plate, its CI over the resamples that define it, the share that do
    not and, when that share is above ``UNDEFINED_NOTE``, a reason saying so and why. An EC50
    error also gives ``capped_share``, its :attr:`Metric.capped` on the plate: at 1 the value is
    the cap itself (no virtual EC50 where the real stain has one), not a measured error."""
    undefined = metric.undefined[1:]
    low, high, share = interval(metric.values[1:])
    reason = ""
    if share > UNDEFINED_NOTE:
        causes = pd.Series(undefined[undefined != ""]).value_counts(sort=True)
        why = ", ".join(f"{_percent(n / len(undefined))} {cause}" for cause, n in causes.items())
        reason = (
            f"no CI: every resample is without a value ({why})"
            if share == 1
            else f"CI over {_percent(1 - share)} of resamples; {why}"
        )
    columns = {
        "value": float(metric.values[0]),
        "ci_low": low,
        "ci_high": high,
        "undefined_share": share,
        "reason": reason,
    }
    if metric.capped is not None:
        columns["capped_share"] = float(metric.capped[0])
    return columns


def _percent(share: float) -> str:
    """A share in whole percent, never rounded to none or all when it is neither."""
    text = f"{100 * share:.0f}"
    if text == "0" and share > 0:
        return "<1 %"
    if text == "100" and share < 1:
        return ">99 %"
    return f"{text} %"


# --------------------------------------------------------------------------- Hill fits


def hill(log_concentration, bottom, top, log_ec50, slope):
    """The 4-parameter Hill curve at ``log10`` concentrations."""
    return bottom + (top - bottom) / (
        1.0 + 10.0 ** ((log_ec50 - np.asarray(log_concentration)) * slope)
    )


@dataclass(frozen=True)
class HillFit:
    """A fitted curve per resample: arrays of shape (resamples,). ``log_ec50`` is NaN where the
    fit is flat or did not converge."""

    log_ec50: np.ndarray
    bottom: np.ndarray
    top: np.ndarray
    slope: np.ndarray
    flat: np.ndarray
    converged: np.ndarray


def fit_hill(
    concentration: np.ndarray, responses: np.ndarray, min_concentrations: int = 4
) -> HillFit:
    """Fit Hill curves to ``responses`` (resamples, wells) at ``concentration`` (wells, > 0).

    Least squares over the (log EC50, slope) grid with ``bottom`` and ``top`` exact for each, so
    every row is fitted at once. A well whose response is NaN in every row has no value (a well
    without cells) and is left out. Raises :class:`Missing` with fewer than
    ``min_concentrations`` with a value (at least 4: a 4-parameter curve through fewer fits
    anything), for a concentration that is not a dose (0, below 0, NaN), and for a response that
    is NaN in some rows only (leave the wells without a value out before resampling).
    """
    log_c, y = _fit_input(concentration, responses, min_concentrations)
    low, high = log_c.min() - 1.0, log_c.max() + 1.0
    log_ec50s = np.arange(low, high + LOG_EC50_STEP / 2, LOG_EC50_STEP)
    grid_ec50, grid_slope = (g.ravel() for g in np.meshgrid(log_ec50s, SLOPES, indexing="ij"))
    s = 1.0 / (
        1.0 + 10.0 ** ((grid_ec50[:, None] - log_c[None, :]) * grid_slope[:, None])
    )  # (grid, wells)
    n = len(log_c)
    s_sum, ss_sum = s.sum(1), (s * s).sum(1)
    y_sum, yy_sum, sy_sum = y.sum(1), (y * y).sum(1), y @ s.T  # (resamples,), (resamples, grid)
    denominator = n * ss_sum - s_sum**2
    amplitude = (n * sy_sum - s_sum * y_sum[:, None]) / np.where(
        denominator > 0, denominator, np.inf
    )
    bottom = (y_sum[:, None] - amplitude * s_sum) / n
    rss = yy_sum[:, None] - bottom * y_sum[:, None] - amplitude * sy_sum
    best = np.argmin(rss, axis=1)
    rows = np.arange(len(y))
    rss_best, tss = np.maximum(rss[rows, best], 0.0), yy_sum - y_sum**2 / n
    with np.errstate(divide="ignore", invalid="ignore"):
        f = ((tss - rss_best) / 3.0) / (rss_best / (n - 4))
    p = np.where(
        tss <= 1e-12 * np.maximum(yy_sum, 1e-300),
        1.0,
        np.where(rss_best > 0, stats.f.sf(f, 3, max(n - 4, 1)), 0.0),
    )
    on_edge = np.isin(grid_ec50[best], (log_ec50s[0], log_ec50s[-1]))
    flat, converged = p > FLAT_P, ~on_edge
    log_ec50 = np.where(flat | ~converged, np.nan, grid_ec50[best])
    return HillFit(
        log_ec50,
        bottom[rows, best],
        bottom[rows, best] + amplitude[rows, best],
        grid_slope[best],
        flat,
        converged,
    )


def _fit_input(
    concentration: np.ndarray, responses: np.ndarray, min_concentrations: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_hill`'s log10 concentrations and responses of the wells with a value, or
    :class:`Missing` with the reason there is no fit."""
    concentration = np.asarray(concentration, np.float64)
    y = np.atleast_2d(np.asarray(responses, np.float64))
    not_doses = concentration[~(concentration > 0) | ~np.isfinite(concentration)]
    if len(not_doses):
        raise Missing(
            f"concentration {not_doses[0]:g} is not a dose: a Hill fit over log10 concentration "
            "needs concentrations > 0 (leave vehicle wells out)"
        )
    valued = np.isfinite(y).any(axis=0)
    if not np.isfinite(y[:, valued]).all():
        raise Missing(
            "a response is NaN in some resamples only: leave the wells without a value out "
            "before resampling"
        )
    log_c = np.log10(concentration[valued])
    needed, found = max(4, min_concentrations), len(np.unique(log_c))
    if found < needed:
        with_value = "" if valued.all() else " with a value"
        raise Missing(f"{found} concentration(s){with_value}; a Hill fit needs {needed}")
    return log_c, y[:, valued]


def fit_reason(fit: HillFit, row: int = 0) -> str:
    """Why row ``row`` of a fit has no EC50 ('' when it has one)."""
    if fit.flat[row]:
        return "flat curve (no better than a constant, p > 0.05)"
    if not fit.converged[row]:
        return "EC50 outside the fitted range (a decade beyond the tested concentrations)"
    return ""


# --------------------------------------------------------------------------- hits and Z'


def hit_calls(readout: np.ndarray, dmso: np.ndarray, k: float) -> np.ndarray:
    """Treated wells (resamples, wells) more than ``k`` robust SDs of the DMSO wells from their
    median: 1.0 a hit, 0.0 not, NaN throughout a resample (row) whose DMSO wells have no spread
    (MAD 0). Raises :class:`Missing` when the plate's own DMSO wells (row 0) have none."""
    dmso = np.atleast_2d(dmso)
    center, scale = robust_center_scale(dmso)
    if scale[0] <= 0:
        wells = (
            "one DMSO well has no spread (MAD 0)"
            if dmso.shape[1] == 1
            else "the DMSO wells have no spread (MAD 0: half of them or more share one value)"
        )
        raise Missing(f"{wells}: a hit threshold is undefined")
    calls = (np.abs(np.atleast_2d(readout) - center[:, None]) > k * scale[:, None]).astype(float)
    calls[scale <= 0] = np.nan
    return calls


def z_prime(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Z' of positive and negative control wells, per resample (rows); NaN in a resample whose
    controls have the same mean. Raises :class:`Missing` when the plate (row 0) has no Z'."""
    positive, negative = np.atleast_2d(positive), np.atleast_2d(negative)
    for wells, name in ((positive, "positive-control"), (negative, "negative-control")):
        if wells.shape[1] < 2:
            raise Missing(
                f"one {name} well: no spread (Z' needs the SD of two or more of each control)"
            )
    separation = np.abs(positive.mean(1) - negative.mean(1))
    if separation[0] <= 0:
        raise Missing("the positive controls and DMSO have the same mean: Z' is undefined")
    spread = positive.std(1, ddof=1) + negative.std(1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(separation > 0, 1.0 - 3.0 * spread / separation, np.nan)


def plate_ids(plate: Plate) -> np.ndarray:
    """Each well's plate (its ``plate`` column; one plate without it)."""
    return plate.wells["plate"].to_numpy() if "plate" in plate.wells else np.zeros(len(plate.wells))


def assay_controls(plate: Plate, values: np.ndarray) -> dict:
    """Per plate (``plate`` column; one if none), the positive control whose Z' against the
    plate's DMSO is highest in ``values`` (the real stain, as measured on the plate): the window
    the assay is validated with, chosen once so that every resample and every virtual stain reads
    the same one. Raises :class:`Missing` when no plate has a Z', with the first reason."""
    names = plate.names
    plates, chosen, reasons = plate_ids(plate), {}, []
    for one in dict.fromkeys(plates):
        on = plates == one
        found = {}
        for control in dict.fromkeys(names[plate.positive & on]):
            try:
                found[control] = z_prime(
                    values[on & (names == control)], values[on & plate.negative]
                )[0]
            except Missing as reason:
                reasons.append(reason)
        if found:
            chosen[one] = max(found, key=found.get)
    if not chosen:
        raise reasons[0] if reasons else Missing("no plate has positive-control wells")
    return chosen


def assay_z_prime(
    plate: Plate, values: np.ndarray, index: np.ndarray, controls: dict
) -> np.ndarray:
    """The assay's Z' per resample: each plate's Z' of its ``controls`` (:func:`assay_controls`)
    against its DMSO, as an assay is validated plate by plate, and the mean over the plates (NaN
    in a resample where one has none). Resamples stay within a plate (:meth:`Plate.strata`)."""
    names = plate.names
    plates = plate_ids(plate)
    per_plate = [
        z_prime(values[index[:, (plates == one) & (names == control)]],
                values[index[:, (plates == one) & plate.negative]])
        for one, control in controls.items()
    ]  # fmt: skip
    return np.mean(per_plate, axis=0)


def cohen_kappa(real: np.ndarray, virtual: np.ndarray, *, wells: str = "wells") -> np.ndarray:
    """Cohen's kappa of two call sets per resample (rows): boolean, or 1.0/0.0 with NaN rows as
    :func:`hit_calls` gives them. NaN in a resample where kappa is undefined (both stains call
    every well alike); raises :class:`Missing` when the plate (row 0) has none, its reason naming
    the plate's ``wells``."""
    real, virtual = np.atleast_2d(real), np.atleast_2d(virtual)
    observed = (real == virtual).mean(1)
    p_real, p_virtual = real.mean(1), virtual.mean(1)
    expected = p_real * p_virtual + (1 - p_real) * (1 - p_virtual)
    if expected[0] >= 1:
        n = real.shape[1]
        said = f"all {n} {wells} hits" if real[0, 0] else f"none of the {n} {wells} a hit"
        raise Missing(f"both stains call {said}: kappa is undefined (perfect agreement by chance)")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)


# --------------------------------------------------------------------------- a plate's decisions


def _frozen(mask: np.ndarray) -> np.ndarray:
    """A cached mask, read-only so that no caller changes it for every other."""
    mask = np.asarray(mask)
    mask.flags.writeable = False
    return mask


def _stain(name: str) -> str:
    """A stain in words, from the name of its readout: 'real', or a model's name (its virtual stain)."""
    return name if name == "real" else f"{name} virtual"


@dataclass(frozen=True)
class Plate:
    """The wells of a screen plate (one row per well, in the same order for every stain):
    ``compound`` and ``concentration``, and which wells are DMSO, positive controls, treated."""

    wells: pd.DataFrame
    settings: ScreenSettings
    # The wells :meth:`valued` left out for want of a value, with the stains that lack one
    # (column ``lacking``): what explains a plate left without controls or compounds.
    left_out: pd.DataFrame | None = None

    def valued(self, values: dict[str, np.ndarray]) -> tuple[Plate, np.ndarray]:
        """The plate of the wells with a value in every stain of ``values`` ('real' or a model's
        name -> its readout per well of this plate, or its profile: wells x columns), and which
        wells those are."""
        finite = {
            name: np.isfinite(np.asarray(v, np.float64)).reshape(len(self.wells), -1).all(1)
            for name, v in values.items()
        }
        usable = np.logical_and.reduce(list(finite.values()))
        lacking = [
            [_stain(n) for n, f in finite.items() if not f[i]] for i in np.flatnonzero(~usable)
        ]
        left_out = self.wells.loc[~usable].assign(lacking=lacking).reset_index(drop=True)
        return Plate(self.wells.loc[usable].reset_index(drop=True), self.settings, left_out), usable

    def without(self, kind: str, wells: str) -> str:
        """Why the plate has no ``kind`` wells (a mask of the plate: negative, positive, called,
        dosed), ``wells`` in words: it has none, or :meth:`valued` left them all out."""
        left_out = self.left_out if self.left_out is not None else self.wells.iloc[:0]
        if self.wells.empty and len(left_out):
            lost, wells = left_out, "wells"  # no well has a value: say so, not only of these
        else:
            lost = left_out[getattr(Plate(left_out, self.settings), kind)]
        if lost.empty:
            return f"the plate has no {wells}"
        stains = sorted({stain for lacking in lost["lacking"] for stain in lacking})
        return (
            f"the readout is missing (NaN) in all {len(lost)} {wells} in the "
            f"{' and '.join(stains)} stain{'s' if len(stains) > 1 else ''}"
        )

    # The well masks are cached: every decision reads them, and each is a pandas match over the
    # wells' names, which costs more than the decision on a plate of a few hundred wells. A Plate
    # is frozen and its wells are never changed in place.
    @cached_property
    def negative(self) -> np.ndarray:
        return _frozen(self.settings.is_negative(self.wells["compound"].astype(str)))

    @cached_property
    def positive(self) -> np.ndarray:
        return _frozen(self.settings.is_positive(self.wells["compound"].astype(str)))

    @cached_property
    def names(self) -> np.ndarray:
        """Each well's compound, lower case: what a control's name is matched with."""
        return _frozen(self.wells["compound"].astype(str).str.lower().to_numpy())

    @cached_property
    def vehicle(self) -> np.ndarray:
        """A compound's wells at concentration 0: its vehicle alone (see the module docstring)."""
        at_zero = self.wells["concentration"].to_numpy(np.float64) == 0
        return _frozen(~self.negative & ~self.positive & at_zero)

    @cached_property
    def treated(self) -> np.ndarray:
        """Positive controls and compounds at a dose."""
        return _frozen(~self.negative & ~self.vehicle)

    @cached_property
    def called(self) -> np.ndarray:
        """The wells hits are called in: the compounds' dosed wells, with the positive controls
        when ``hit_wells`` is ``treated``."""
        return self.treated if self.settings.hit_wells == "treated" else self.dosed

    @cached_property
    def dosed(self) -> np.ndarray:
        """The wells of the compounds' Hill fits: neither controls nor vehicle."""
        return _frozen(~self.negative & ~self.positive & ~self.vehicle)

    def compounds(self) -> list[str]:
        """The compounds with a dose range: neither DMSO nor a positive control."""
        frame = self.wells[~self.negative & ~self.positive]
        return sorted(frame["compound"].astype(str).unique())

    def dmso_edge(self) -> str | None:
        """Where the DMSO wells of a plate (two or more, ``well`` and ``plate`` columns given)
        all lie on one edge of it, that edge: they then measure the edge effect (evaporation,
        temperature) with the untreated baseline, and every call against them is biased."""
        if "well" not in self.wells:
            return None
        dmso = self.wells[self.negative]
        plates = dmso["plate"] if "plate" in dmso else np.zeros(len(dmso))
        for plate, wells in dmso.groupby(plates, sort=True):
            if len(wells) > 1 and (edge := shared_edge(wells["well"])):
                return f"{edge} of plate {plate}" if "plate" in dmso else edge
        return None

    def strata(self) -> list[np.ndarray]:
        """Well indices per (plate, compound, concentration): what a bootstrap resamples within
        (a well stays on its plate, whose own controls its plate's Z' and calls read)."""
        keys = ["plate", "compound", "concentration"]
        groups = self.wells.groupby(keys if "plate" in self.wells else keys[1:], sort=True).indices
        return [np.asarray(v) for v in groups.values()]

    def resamples(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Row 0 the plate as it is, then ``n`` resamples of its wells within their strata: (n + 1, wells)."""
        index = np.tile(np.arange(len(self.wells)), (n + 1, 1))
        for stratum in self.strata():
            index[1:, stratum] = rng.choice(stratum, size=(n, len(stratum)), replace=True)
        return index


def curves(plate: Plate, values: np.ndarray, index: np.ndarray) -> dict[str, HillFit | Missing]:
    """The Hill fit of every compound of the plate, per resample (``index`` from :meth:`Plate.resamples`)."""
    fits: dict[str, HillFit | Missing] = {}
    compound = plate.wells["compound"].astype(str).to_numpy()
    for name in plate.compounds():
        columns = np.flatnonzero((compound == name) & plate.dosed)
        try:
            fits[name] = fit_hill(
                plate.wells["concentration"].to_numpy()[columns],
                values[index[:, columns]],
                plate.settings.min_concentrations,
            )
        except Missing as reason:
            fits[name] = Missing(f"{name}: {reason}")
    return fits


@dataclass(frozen=True)
class Readout:
    """A readout's values per well of a plate and its Hill fits per compound, per resample:
    fitted once, compared with as many other readouts as needed. ``values`` (normalized per plate
    against its DMSO wells where the screen is, :mod:`vsgrid.screen.profiles`) are what the fits
    and hit calls read; ``raw`` (the readout as measured) is what Z' reads, as an assay reports it."""

    values: np.ndarray
    fits: dict[str, HillFit | Missing]
    raw: np.ndarray

    @classmethod
    def of(
        cls, plate: Plate, values: np.ndarray, index: np.ndarray, *, raw: np.ndarray | None = None
    ) -> Readout:
        values = np.asarray(values, np.float64)
        raw = values if raw is None else np.asarray(raw, np.float64)
        return cls(values, curves(plate, values, index), raw)


def control_wells(settings: ScreenSettings, kind: str) -> str:
    """The ``kind`` (negative, positive) control wells in words, with their compounds."""
    return f"{kind}-control wells ({', '.join(getattr(settings, kind))})"


def check_controls(plate: Plate) -> None:
    """Raises :class:`Missing` where the plate has no DMSO wells, or has them all on one edge."""
    if not plate.negative.any():
        raise Missing(plate.without("negative", control_wells(plate.settings, "negative")))
    if edge := plate.dmso_edge():
        raise Missing(f"every DMSO well lies on one edge ({edge}): {EDGE_BIAS}")


def decisions(
    plate: Plate, real: Readout, virtual: Readout, index: np.ndarray
) -> dict[str, Metric | Missing]:
    """Every level-4 metric of one readout, virtual against real, per resample.

    ``real`` and ``virtual`` hold the readout per well of ``plate`` with their fits over the same
    ``index`` (resamples, wells), which picks the wells of each resample (row 0: the plate
    itself). A metric the plate does not define is a :class:`Missing` with its reason.

    The readouts are read only through ``index``, so they may hold one copy of the plate's values
    per row (``index`` then points row ``r`` at copy ``r``): a readout that changes from resample
    to resample, as one recalibrated on sentinel wells drawn anew for each
    (:mod:`vsgrid.screen.sentinels`), is decided in one call.
    """
    out: dict[str, Metric | Missing] = {"ec50_error": _ec50_error(plate, real, virtual)}
    raw_real, raw_virtual = real.raw, virtual.raw
    real, virtual = real.values, virtual.values
    try:
        check_controls(plate)
        if not plate.called.any():
            raise Missing(
                f"{plate.without('called', HIT_WELLS[plate.settings.hit_wells])}: no hit to call"
            )
        calls_real = plate_calls(plate, real, index, "real")
        calls_virtual = plate_calls(plate, virtual, index, "virtual")
    except Missing as reason:
        out.update(dict.fromkeys(("hit_kappa", "hit_precision", "hit_recall"), reason))
    else:
        out.update(_agreement(calls_real, calls_virtual, HIT_WELLS[plate.settings.hit_wells]))
    return {**out, **_assay_quality(plate, raw_real, raw_virtual, index)}


def _assay_quality(
    plate: Plate, real: np.ndarray, virtual: np.ndarray, index: np.ndarray
) -> dict[str, Metric | Missing]:
    """``z_prime`` (virtual), ``z_prime_real`` and ``z_prime_gap`` on the readout as measured."""
    try:
        check_controls(plate)
        if not plate.positive.any():
            raise Missing(plate.without("positive", control_wells(plate.settings, "positive")))
        controls = assay_controls(plate, real[index[0]])  # the real stain on the plate itself
    except Missing as reason:
        return dict.fromkeys(("z_prime", "z_prime_real", "z_prime_gap"), reason)
    out: dict[str, Metric | Missing] = {}
    for metric, values in (("z_prime", virtual), ("z_prime_real", real)):
        try:
            z = assay_z_prime(plate, values, index, controls)
            out[metric] = Metric.of(z, (np.isnan(z), "draw controls with equal means"))
        except Missing as reason:
            out[metric] = reason
    missing = [m for m in out.values() if isinstance(m, Missing)]
    if missing:
        return {**out, "z_prime_gap": missing[0]}
    gap = np.abs(out["z_prime"].values - out["z_prime_real"].values)
    return {**out, "z_prime_gap": Metric.of(gap, (np.isnan(gap), "draw controls with equal means"))}


def plate_calls(plate: Plate, values: np.ndarray, index: np.ndarray, stain: str) -> np.ndarray:
    """:func:`hit_calls` in the plate's called wells, per resample; a plate without a threshold
    is :class:`Missing`, naming the stain."""
    try:
        return hit_calls(
            values[index[:, plate.called]],
            values[index[:, plate.negative]],
            plate.settings.hit_sd,
        )
    except Missing as reason:
        raise Missing(f"{stain} stain: {reason}") from None


def _agreement(real: np.ndarray, virtual: np.ndarray, wells: str) -> dict[str, Metric | Missing]:
    """Kappa, precision and recall of the virtual stain's hit calls against the real one's (as
    :func:`hit_calls` gives them, per resample), each with what a resample without it draws."""
    n = real.shape[1]
    no_threshold = (
        np.isnan(real).any(1) | np.isnan(virtual).any(1),
        "draw DMSO wells without spread (MAD 0, no threshold) in a stain",
    )
    hits_real, hits_virtual = real.sum(1), virtual.sum(1)
    out: dict[str, Metric | Missing] = {}
    try:
        out["hit_kappa"] = Metric.of(
            cohen_kappa(real, virtual, wells=wells),
            no_threshold,
            (hits_real + hits_virtual == 0, "draw no hit in either stain"),
            (hits_real + hits_virtual == 2 * n, "draw only hits in both stains"),
        )
    except Missing as reason:
        out["hit_kappa"] = reason
    with np.errstate(invalid="ignore", divide="ignore"):
        hits_both = (real * virtual).sum(1)
        precision, recall = hits_both / hits_virtual, hits_both / hits_real
    for metric, values, stain, hits in (
        ("hit_precision", precision, "virtual", hits_virtual),
        ("hit_recall", recall, "real", hits_real),
    ):
        out[metric] = (
            Metric.of(values, no_threshold, (hits == 0, f"draw no hit by the {stain} stain"))
            if np.isfinite(values[0])
            else Missing(
                f"the {stain} stain calls none of the {n} {wells} a hit: "
                f"{metric.removeprefix('hit_')} is undefined"
            )
        )
    return out


def _ec50_error(plate: Plate, real: Readout, virtual: Readout) -> Metric | Missing:
    real_fits, virtual_fits = real.fits, virtual.fits
    doses = plate.wells.loc[plate.dosed, "concentration"].to_numpy(np.float64)
    doses = doses[np.isfinite(doses) & (doses > 0)]
    tested_range = float(np.log10(doses.max() / doses.min())) if len(doses) else 0.0
    errors, capped, reasons = [], [], []
    for name, fit in real_fits.items():
        if isinstance(fit, Missing):
            reasons.append(str(fit))
            continue
        if np.isnan(fit.log_ec50[0]):
            reasons.append(f"{name}: real {fit_reason(fit)}")
            continue
        other = virtual_fits[name]
        difference = np.abs(other.log_ec50 - fit.log_ec50)
        # A resample whose real curve has no EC50 says nothing; one whose virtual curve has none
        # missed the compound: the EC50 could be anywhere in the tested range.
        errors.append(
            np.where(
                np.isnan(fit.log_ec50),
                np.nan,
                np.where(np.isnan(other.log_ec50), tested_range, difference),
            )
        )
        capped.append(np.where(np.isnan(fit.log_ec50), np.nan, np.isnan(other.log_ec50)))
    if not errors:
        return Missing(
            "no compound has a real-stain EC50"
            + f" ({'; '.join(reasons) or plate.without('dosed', 'compound wells')})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no real curve has one
        error, share = np.nanmean(np.array(errors), axis=0), np.nanmean(np.array(capped), axis=0)
    found = Metric.of(error, (np.isnan(error), "draw no compound with a real EC50"))
    return replace(found, capped=share)


def truth_errors(plate: Plate, real: np.ndarray, true_ec50_um: dict[str, float]) -> pd.DataFrame:
    """Per compound: the real-stain EC50 against the synthetic truth (log10 uM), with the reason
    when either is missing (no EC50 fitted, or no truth: a user's plates record none)."""
    index = np.arange(len(plate.wells))[None, :]
    rows = []
    for name, fit in curves(plate, real, index).items():
        truth = np.log10(true_ec50_um[name]) if name in true_ec50_um else np.nan
        estimate = np.nan if isinstance(fit, Missing) else float(fit.log_ec50[0])
        reason = str(fit) if isinstance(fit, Missing) else fit_reason(fit)
        if name not in true_ec50_um:
            reason = "; ".join(filter(None, (reason, NO_TRUTH)))
        rows.append(
            {
                "compound": name,
                "true_log_ec50": truth,
                "log_ec50": estimate,
                "error": estimate - truth,
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=["compound", "true_log_ec50", "log_ec50", "error", "reason"])
