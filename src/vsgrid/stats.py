"""The statistics every stage draws on: robust spreads, bootstrap resamples and their CIs, and
the rank statistics of the trust table; numpy only, nothing of the package.

- :func:`robust_center_scale`: a median and a median absolute deviation (MAD) on the scale of a
  standard deviation (:data:`MAD_TO_SD`), which outliers (spots, hits, edges) barely move;
- :func:`bootstrap_weights`: how often each image is drawn in each resample, wells (or plates)
  then their fields, or images alone; :func:`interval`, the 95 % percentile CI over resamples;
- :func:`spearman` and :func:`auroc`: does an uncertainty rank the errors, does a score tell
  shifted images from in-distribution ones. Both take the images as drawn: a resample repeats an
  image as often as it is drawn, so a value and every resample's are computed by the same
  function, every resample in one call (:func:`drawn` writes one out).
"""

from __future__ import annotations

import numpy as np

# A normal distribution's SD is 1.4826 times its median absolute deviation.
MAD_TO_SD = 1.4826


def robust_center_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and 1.4826 x MAD along the last axis."""
    center = np.median(values, axis=-1)
    return center, MAD_TO_SD * np.median(np.abs(values - center[..., None]), axis=-1)


def bootstrap_weights(
    units: np.ndarray, n_resamples: int, rng: np.random.Generator, nested: bool
) -> np.ndarray:
    """How often each test image is drawn in each resample.

    Parameters
    ----------
    units
        Each image's well (or plate), (n_images,).
    n_resamples
        The resamples drawn, each one row of the result.
    rng
        The stream drawn from: the same stream gives the same resamples, and the first ``r``
        rows of ``n_resamples`` are those of ``r`` resamples.
    nested
        Draw units with replacement, then the images of each drawn unit with replacement; else
        draw images with replacement.

    Returns
    -------
    np.ndarray
        (n_resamples, n_images) float counts: the weights :func:`spearman` and :func:`auroc` take.
    """
    n = len(units)
    if not nested:
        draws = rng.integers(0, n, size=(n_resamples, n))
        counts = np.zeros((n_resamples, n))
        np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1)
        return counts
    _, unit_of, sizes = np.unique(units, return_inverse=True, return_counts=True)
    order = np.argsort(unit_of, kind="stable")  # images grouped by unit
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    counts = np.zeros((n_resamples, n))
    for k in range(n_resamples):
        picked = rng.integers(0, len(sizes), len(sizes))
        size, start = (
            np.repeat(sizes[picked], sizes[picked]),
            np.repeat(starts[picked], sizes[picked]),
        )
        counts[k] = np.bincount(
            order[start + (rng.random(len(size)) * size).astype(int)], minlength=n
        )
    return counts


def interval(resampled: np.ndarray) -> tuple[float, float, float]:
    """The 95 % percentile CI over the resamples with a value (NaN, NaN without any) and the
    share of resamples without one: every CI of the grid's and the screen's tables and of
    ``vsgrid ood``."""
    finite = resampled[np.isfinite(resampled)]
    share = 1.0 - len(finite) / len(resampled)
    if not len(finite):
        return np.nan, np.nan, share
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high), share


def _weights(weights, n: int) -> np.ndarray:
    """Counts per image as (R, n) floats: one row per resample (None: each image once)."""
    if weights is None:
        return np.ones((1, n))
    weights = np.asarray(weights, np.float64)
    if weights.shape[-1] != n or weights.ndim not in (1, 2):
        raise ValueError(f"weights of shape {weights.shape} for {n} images")
    return np.atleast_2d(weights)


def _average_ranks(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's average rank (ties counting their mean) among the values as drawn in each
    resample, as :func:`scipy.stats.rankdata` gives it on the resample written out, and each
    resample's number of distinct values drawn: one sort for every resample.

    ``weights`` (n, R): how often each value is drawn, one column per resample (columns, so that
    the sorted values' cumulative counts run over contiguous rows); the ranks come back (n, R).
    """
    if not len(values):
        return np.zeros_like(weights), np.zeros(weights.shape[1])
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    new = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    per_value = weights[order]
    tied = not new.all()
    if tied:
        per_value = np.add.reduceat(per_value, np.flatnonzero(new), axis=0)
    # a value drawn c times after b others holds ranks b + 1 .. b + c: on average b + (c + 1) / 2
    ranks_sorted = np.cumsum(per_value, axis=0)
    ranks_sorted -= 0.5 * per_value
    ranks_sorted += 0.5
    ranks = np.empty_like(weights)
    ranks[order] = ranks_sorted[np.cumsum(new) - 1] if tied else ranks_sorted
    return ranks, np.count_nonzero(per_value, axis=0)


def _per_resample(weights: np.ndarray, statistic, *, cells: int = 2**22) -> np.ndarray:
    """``statistic`` of each row of ``weights`` (R, n), given a block of rows as columns (n, r),
    so that the arrays stay under ``cells`` elements (about 32 MB each) however many are drawn."""
    rows = max(1, cells // max(1, weights.shape[1]))
    return np.concatenate(
        [
            statistic(np.ascontiguousarray(weights[start : start + rows].T))
            for start in range(0, len(weights), rows)
        ]
        or [np.empty(0)]
    )


def _unpack(values: np.ndarray, weights) -> float | np.ndarray:
    return float(values[0]) if weights is None or np.ndim(weights) == 1 else values


def spearman(
    uncertainty: np.ndarray, error: np.ndarray, *, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Spearman's rank correlation of an uncertainty with an error over the images where both
    have a value; NaN with fewer than 3 such images drawn or where either is constant (no ranking).

    Parameters
    ----------
    uncertainty, error
        Per image, (n,); NaN where an image has no value.
    weights
        (n,) or (R, n): how often each image is drawn in a bootstrap resample, one row per
        resample (:func:`bootstrap_weights`); by default each image once.

    Returns
    -------
    float or np.ndarray
        A float for ``weights`` None or (n,), else one value per resample, (R,). The value of a
        resample is that of its images written out, each as often as drawn (ranks and Pearson's
        correlation of them, as :func:`scipy.stats.spearmanr`), to float rounding.
    """
    uncertainty, error = np.asarray(uncertainty, np.float64), np.asarray(error, np.float64)
    if uncertainty.shape != error.shape:
        raise ValueError(f"{uncertainty.shape} uncertainties against {error.shape} errors")
    keep = np.isfinite(uncertainty) & np.isfinite(error)
    x, y = uncertainty[keep], error[keep]

    def statistic(w: np.ndarray) -> np.ndarray:
        (rx, distinct_x), (ry, distinct_y) = _average_ranks(x, w), _average_ranks(y, w)
        n = w.sum(0)
        # Both rank sets are 1..n as drawn, mean (n + 1) / 2: Pearson's terms from raw sums
        mean_square = n * ((n + 1) / 2) ** 2
        wrx = w * rx
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (np.einsum("ij,ij->j", wrx, ry) - mean_square) / np.sqrt(
                (np.einsum("ij,ij->j", wrx, rx) - mean_square)
                * (np.einsum("ij,ij->j", w * ry, ry) - mean_square)
            )
        undefined = (n < 3) | (distinct_x < 2) | (distinct_y < 2)
        return np.where(undefined, np.nan, np.clip(r, -1.0, 1.0))

    return _unpack(_per_resample(_weights(weights, len(keep))[:, keep], statistic), weights)


def auroc(
    inside: np.ndarray,
    shifted: np.ndarray,
    *,
    inside_weights: np.ndarray | None = None,
    shifted_weights: np.ndarray | None = None,
) -> float | np.ndarray:
    """How well a score ranks ``shifted`` images above ``inside`` ones: the area under the ROC
    curve (Mann-Whitney, ties counting a half: sklearn's ``roc_auc_score``); NaN without an image
    with a value on either side.

    Parameters
    ----------
    inside, shifted
        Each side's scores, NaN where an image has none.
    inside_weights, shifted_weights
        Each side's draws, (n,) or (R, n) for its own n images, as :func:`spearman`'s; give both
        (the same R) or neither.

    Returns
    -------
    float or np.ndarray
        As :func:`spearman`: a float, or one value per resample.
    """
    inside, shifted = (np.asarray(a, np.float64) for a in (inside, shifted))
    if (inside_weights is None) != (shifted_weights is None):
        raise ValueError("auroc: give the weights of both sides or of neither")
    w_in = _weights(inside_weights, len(inside))[:, np.isfinite(inside)]
    w_shifted = _weights(shifted_weights, len(shifted))[:, np.isfinite(shifted)]
    if len(w_in) != len(w_shifted):
        raise ValueError(f"auroc: {len(w_in)} resamples of one side, {len(w_shifted)} of the other")
    inside, shifted = inside[np.isfinite(inside)], shifted[np.isfinite(shifted)]
    values, n_inside = np.r_[inside, shifted], len(inside)

    def statistic(w: np.ndarray) -> np.ndarray:
        ranks, _ = _average_ranks(values, w)
        w_s = w[n_inside:]
        n_in, n_s = w[:n_inside].sum(0), w_s.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            found = (np.einsum("ij,ij->j", w_s, ranks[n_inside:]) - n_s * (n_s + 1) / 2) / (
                n_in * n_s
            )
        return np.where((n_in == 0) | (n_s == 0), np.nan, found)

    return _unpack(_per_resample(np.hstack([w_in, w_shifted]), statistic), inside_weights)


def drawn(weights: np.ndarray) -> np.ndarray:
    """The image indices of one bootstrap resample, each repeated as often as it is drawn
    (``weights``: its counts per image)."""
    return np.repeat(np.arange(len(weights)), np.asarray(weights, np.int64))
