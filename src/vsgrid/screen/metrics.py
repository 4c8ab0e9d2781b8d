"""A level-4 metric on a plate and on each of its bootstrap resamples, and the CI columns it gives.

A metric that cannot be computed (a compound with too few concentrations, a plate without DMSO or
positive controls, no spread anywhere) is :class:`Missing`: NaN *with its reason*, a reason true of
the plate, never a crash. A metric the plate has but a resample does not (a resample that draws
one of two DMSO wells twice has no MAD, one that draws no hit in either stain has no kappa) is NaN
in that resample only, with what that resample draws (:class:`Metric`): the plate's value comes
from the plate, its CI from the resamples that define it (:func:`interval_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vsgrid.stats import interval

UNDEFINED_NOTE = 0.10  # a CI over fewer than 90 % of the resamples says so in its reason


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


# The columns :func:`interval_columns` fills, after the metric's name: every level-4 table's.
METRIC_COLUMNS = [
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "undefined_share",
    "capped_share",
    "reason",
]


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
