"""Potency: a 4-parameter Hill curve per compound of a plate, every bootstrap resample at once.

``bottom + (top - bottom) / (1 + 10 ** ((log_ec50 - log10 c) * slope))``, fitted by least squares
over a bounded grid of ``log_ec50`` (one decade either side of the tested range) and ``slope``
(0.5 to 5), ``bottom`` and ``top`` solved exactly for each: no starting values, no divergence, and
every bootstrap resample fitted at once. A fit whose EC50 lands on the grid's edge has not
converged; a curve no better than a constant (F test, p > 0.05) is flat. Neither gives an EC50.

On synthetic plates, whose true EC50s are known, :func:`truth_errors` checks the real stain's fits
against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

from vsgrid.screen.metrics import Missing
from vsgrid.screen.plate import Plate

LOG_EC50_STEP = 0.02  # log10 units: well under the 0.3 that separates a good EC50 from a bad one
SLOPES = np.geomspace(0.5, 5.0, 12)
FLAT_P = 0.05
NO_TRUTH = "no true EC50 is known (only synthetic plates record theirs)"


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
    grid = _grid(log_c.tobytes())
    n = len(log_c)
    y_sum, yy_sum, sy_sum = y.sum(1), (y * y).sum(1), y @ grid.s.T  # (resamples,), (.., grid)
    blocks = [
        _best_on_grid(grid, n, y_sum[rows], yy_sum[rows], sy_sum[rows])
        for rows in _row_blocks(len(y), len(grid.ec50))
    ]
    best, amplitude, bottom, rss = (np.concatenate(parts) for parts in zip(*blocks))
    rss_best, tss = np.maximum(rss, 0.0), yy_sum - y_sum**2 / n
    with np.errstate(divide="ignore", invalid="ignore"):
        f = ((tss - rss_best) / 3.0) / (rss_best / (n - 4))
    p = np.where(
        tss <= 1e-12 * np.maximum(yy_sum, 1e-300),
        1.0,
        np.where(rss_best > 0, stats.f.sf(f, 3, max(n - 4, 1)), 0.0),
    )
    on_edge = np.isin(grid.ec50[best], (grid.log_ec50s[0], grid.log_ec50s[-1]))
    flat, converged = p > FLAT_P, ~on_edge
    log_ec50 = np.where(flat | ~converged, np.nan, grid.ec50[best])
    return HillFit(log_ec50, bottom, bottom + amplitude, grid.slope[best], flat, converged)


@dataclass(frozen=True)
class _Grid:
    """The (log EC50, slope) grid of a set of log10 concentrations, with each grid curve's shape
    at them and what its least squares need: the same for every compound of a plate's layout."""

    log_ec50s: np.ndarray
    ec50: np.ndarray
    slope: np.ndarray
    s: np.ndarray  # (grid, wells)
    s_sum: np.ndarray
    denominator: np.ndarray


@lru_cache(maxsize=32)
def _grid(log_concentration: bytes) -> _Grid:
    log_c = np.frombuffer(log_concentration)
    low, high = log_c.min() - 1.0, log_c.max() + 1.0
    log_ec50s = np.arange(low, high + LOG_EC50_STEP / 2, LOG_EC50_STEP)
    grid_ec50, grid_slope = (g.ravel() for g in np.meshgrid(log_ec50s, SLOPES, indexing="ij"))
    s = 1.0 / (1.0 + 10.0 ** ((grid_ec50[:, None] - log_c[None, :]) * grid_slope[:, None]))
    n, s_sum, ss_sum = len(log_c), s.sum(1), (s * s).sum(1)
    denominator = n * ss_sum - s_sum**2
    return _Grid(
        log_ec50s, grid_ec50, grid_slope, s, s_sum, np.where(denominator > 0, denominator, np.inf)
    )


# Resamples x grid points per block of the least squares: its arrays then stay in the CPU's cache,
# three times faster than one pass over every resample, and the same numbers (elementwise).
_BLOCK = 50_000


def _row_blocks(rows: int, grid: int) -> list[slice]:
    step = max(1, _BLOCK // grid)
    return [slice(start, start + step) for start in range(0, rows, step)]


def _best_on_grid(grid: _Grid, n: int, y_sum, yy_sum, sy_sum) -> tuple[np.ndarray, ...]:
    """Per row: the grid point of least squares, its amplitude, bottom and residual sum."""
    amplitude = (n * sy_sum - grid.s_sum * y_sum[:, None]) / grid.denominator
    bottom = (y_sum[:, None] - amplitude * grid.s_sum) / n
    rss = yy_sum[:, None] - bottom * y_sum[:, None] - amplitude * sy_sum
    best = np.argmin(rss, axis=1)
    rows = np.arange(len(best))
    return best, amplitude[rows, best], bottom[rows, best], rss[rows, best]


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
