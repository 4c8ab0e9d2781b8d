"""Hit calls, their agreement and the assay's quality, per bootstrap resample of a plate.

- **hit calls**: a compound's well at a dose is a hit when its readout lies more than ``k``
  robust SDs (1.4826 x MAD of the DMSO wells, :func:`vsgrid.stats.robust_center_scale`) from the
  DMSO median. The positive controls are called too only with ``hit_wells: treated``: every
  faithful stain calls them hits, so they raise the agreement without telling anything about the
  compounds; two stains' calls agree by Cohen's kappa (:func:`cohen_kappa`);
- **assay quality**: Z' = 1 - 3 (SD positive + SD DMSO) / |mean positive - mean DMSO|, per
  plate, with the positive control whose Z' the real stain has highest on that plate (chosen once:
  every resample and every virtual stain read the same window), and the screen's the mean over
  its plates: each positive control opens its own window (a kill control and a DNA-damage control
  move a readout by different amounts), and an assay is validated plate by plate (pooled, the
  controls' and the plates' differences would count as noise).
"""

from __future__ import annotations

import numpy as np

from vsgrid.screen.metrics import Missing
from vsgrid.screen.plate import Plate, plate_ids
from vsgrid.stats import robust_center_scale


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
        z_prime(
            values[index[:, (plates == one) & (names == control)]],
            values[index[:, (plates == one) & plate.negative]],
        )
        for one, control in controls.items()
    ]
    return np.mean(per_plate, axis=0)
