"""Level 4: do virtual stains lead to the same screening decisions as real ones?

From per-well readouts of a screen plate (:mod:`vsgrid.screen.wells`), real and virtual, each
decided alike on the plate's wells and their resamples (:mod:`vsgrid.screen.plate`): potency from
Hill curves (:mod:`vsgrid.screen.curves`), hit calls and the assay's Z'
(:mod:`vsgrid.screen.calls`).

Virtual is compared with real: ``ec50_error`` (mean |log10 EC50 virtual - real| over the compounds
whose real curve has an EC50; a compound whose virtual curve has none counts as the whole tested
range, the EC50 being anywhere in it), ``hit_kappa`` (Cohen's kappa), ``hit_precision``,
``hit_recall`` (real calls as truth), ``z_prime`` with ``z_prime_real``, and ``z_prime_gap``
(|Z' virtual - Z' real|, per resample: its CI is paired). Each is a
:class:`~vsgrid.screen.metrics.Metric`, on the plate and per resample, or a
:class:`~vsgrid.screen.metrics.Missing` with the plate's reason (:mod:`vsgrid.screen.metrics`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from vsgrid.screen.calls import assay_controls, assay_z_prime, cohen_kappa, plate_calls
from vsgrid.screen.curves import HillFit, curves, fit_reason
from vsgrid.screen.metrics import Metric, Missing
from vsgrid.screen.plate import HIT_WELLS, Plate, check_controls, control_wells


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


def _agreement(real: np.ndarray, virtual: np.ndarray, wells: str) -> dict[str, Metric | Missing]:
    """Kappa, precision and recall of the virtual stain's hit calls against the real one's (as
    :func:`~vsgrid.screen.calls.hit_calls` gives them, per resample), each with what a resample
    without it draws."""
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
