"""Is what a model says of its own predictions worth trusting? Checked against the real stain.

A prediction carries what the model says without the real stain
(:mod:`vsgrid.model.uncertainty`): each pixel's spread over test-time augmentation and, where
asked for, over MC dropout, and each field's out-of-distribution (OOD) score. Per image, the
evaluation writes them beside the image's scores as :data:`UNCERTAINTIES`: ``tta`` (read with
the image it scores, :func:`vsgrid.evaluation.scoring.score_image`), ``dropout`` and ``ood``
(:func:`image_trust`). A model type trained with several
seeds says one more: where its seeds disagree (:func:`seed_spread`, per image the mean over the
field of each pixel's standard deviation over the seeds' predictions, ddof 1: a few seeds are a
sample of the trainings that could have been).
The grid holds the truth to check them against:

- :func:`spearman`: does an image the model is less sure of have a larger error? Spearman's rank
  correlation of an uncertainty with a per-image error (1 - SSIM, the F1 loss 1 - F1, N-MAE),
  positive when the uncertainty ranks the errors;
- :func:`auroc`: does the OOD score tell a shifted test set's images from the model's
  in-distribution test images? 0.5 = not at all, 1 = every shifted image scores higher.

Both take the images as drawn: a bootstrap resample repeats an image as often as it is drawn,
so a run's value and every resample's are computed by the same function.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vsgrid.data.store import open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.stacks import Prediction, blocks, read_prediction
from vsgrid.files import write_table
from vsgrid.grid import seed_groups
from vsgrid.layout import Layout

# The per-image columns of a run's images table: what the model says of each image.
UNCERTAINTIES = ("tta", "dropout", "ood")


def image_trust(prediction: Prediction, *, block_images: int) -> dict[str, np.ndarray]:
    """Per image of a prediction, what its model says of it besides the TTA spread (which the
    scoring reads with the image), each only where the prediction carries it: ``dropout``, the
    mean over the field of each pixel's MC-dropout spread (counts), and ``ood``, the field's OOD
    score."""
    said = {}
    if prediction.dropout_spread is not None:
        spread = prediction.dropout_spread
        said["dropout"] = np.concatenate(
            [
                np.asarray(spread[start:stop], np.float64).mean((1, 2))
                for start, stop in blocks(spread.shape[0], block_images)
            ]
            or [np.empty(0)]
        )
    if prediction.ood is not None:
        said["ood"] = np.asarray(prediction.ood, np.float64)
    return said


def seed_spread(predictions: list[Prediction], *, block_images: int) -> np.ndarray:
    """Per image, the mean over the field of each pixel's standard deviation (ddof 1) over the
    ``predictions`` of one test set by one model type's seeds (two or more), in counts."""
    if len(predictions) < 2:
        raise VsgridError(
            f"a spread over seeds needs 2 predictions or more, got {len(predictions)}"
        )
    n = predictions[0].image.shape[0]
    per_block = []
    for start, stop in blocks(n, block_images):
        stack = np.stack([np.asarray(p.image[start:stop], np.float64) for p in predictions])
        per_block.append(stack.std(0, ddof=1).mean((1, 2)))
    return np.concatenate(per_block or [np.empty(0)])


def write_seed_spread(config: dict, model_type: str, test_set: str, out) -> np.ndarray:
    """``vsgrid seed-spread``: the spread over seeds of a model type's predictions of a test set,
    one row per test image (``image``, ``seeds``), to ``out``."""
    group = seed_groups(config).get((model_type, test_set))
    if group is None:
        raise VsgridError(
            f"{model_type} on {test_set} is not a run of the grid with two seeds or more"
        )
    layout = Layout.of(config)
    store = open_store(layout.store(group[0].test_set))
    predictions = [
        read_prediction(layout.prediction(run.model, run.test_set), store, run.model.stain,
                        run.model.name)
        for run in group
    ]  # fmt: skip
    spread = seed_spread(predictions, block_images=config["evaluation"]["block_images"])
    write_table(pd.DataFrame({"image": np.arange(len(spread)), "seeds": spread}), out)
    return spread


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
        [statistic(np.ascontiguousarray(weights[a:b].T)) for a, b in blocks(len(weights), rows)]
        or [np.empty(0)]
    )


def _unpack(values: np.ndarray, weights) -> float | np.ndarray:
    return float(values[0]) if weights is None or np.ndim(weights) == 1 else values


def spearman(
    uncertainty: np.ndarray, error: np.ndarray, *, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Spearman's rank correlation of an uncertainty with an error over the images where both
    have a value; NaN with fewer than 3 such images drawn or where either is constant (no ranking).

    ``weights``, (n,) or (R, n): how often each image is drawn in a bootstrap resample (one row
    per resample, an array of R values back); by default each image once. The value of a resample
    is that of its images written out, each as often as drawn (ranks and Pearson's correlation of
    them, as :func:`scipy.stats.spearmanr`), to float rounding.
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
    with a value on either side. Each side's weights, (n,) or (R, n), draw it as in
    :func:`spearman`: give both or neither."""
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
