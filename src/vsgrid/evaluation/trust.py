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


def _average_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each value's average rank (ties counting their mean) among the values as drawn in each
    resample (``weights`` (R, n): how often each is drawn), as :func:`scipy.stats.rankdata` gives
    it on the resample written out: one sort for every resample."""
    if not len(values):
        return np.zeros_like(weights)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    new = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    drawn_per_value = np.add.reduceat(weights[:, order], np.flatnonzero(new), axis=1)
    below = np.cumsum(drawn_per_value, axis=1) - drawn_per_value
    ranks = np.empty_like(weights)
    ranks[:, order] = (below + (drawn_per_value + 1) / 2)[:, np.cumsum(new) - 1]
    return ranks


def _per_resample(weights: np.ndarray, statistic, *, cells: int = 2**22) -> np.ndarray:
    """``statistic`` of each row of ``weights``, a block of rows at a time so that the (rows, n)
    arrays stay under ``cells`` elements (about 32 MB each) however many images are drawn."""
    rows = max(1, cells // max(1, weights.shape[1]))
    return np.concatenate(
        [statistic(weights[a:b]) for a, b in blocks(len(weights), rows)] or [np.empty(0)]
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
    w_all = _weights(weights, len(keep))[:, keep]

    def statistic(w: np.ndarray) -> np.ndarray:
        rx, ry = _average_ranks(x, w), _average_ranks(y, w)
        n = w.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dx = rx - ((w * rx).sum(1) / n)[:, None]
            dy = ry - ((w * ry).sum(1) / n)[:, None]
            r = (w * dx * dy).sum(1) / np.sqrt((w * dx * dx).sum(1) * (w * dy * dy).sum(1))
        constant = (_spread(rx, w) == 0) | (_spread(ry, w) == 0)
        return np.where((n < 3) | constant, np.nan, np.clip(r, -1.0, 1.0))

    return _unpack(_per_resample(w_all, statistic), weights)


def _spread(ranks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The range of the drawn ranks per resample (0: every drawn value ties)."""
    drawn_ = weights > 0
    return np.where(drawn_, ranks, -np.inf).max(1) - np.where(drawn_, ranks, np.inf).min(1)


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
    values = np.r_[inside, shifted]

    def statistic(w: np.ndarray) -> np.ndarray:
        ranks = _average_ranks(values, w)[:, len(inside) :]
        w_s = w[:, len(inside) :]
        n_in, n_s = w[:, : len(inside)].sum(1), w_s.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            found = ((w_s * ranks).sum(1) - n_s * (n_s + 1) / 2) / (n_in * n_s)
        return np.where((n_in == 0) | (n_s == 0), np.nan, found)

    return _unpack(_per_resample(np.hstack([w_in, w_shifted]), statistic), inside_weights)


def drawn(weights: np.ndarray) -> np.ndarray:
    """The image indices of one bootstrap resample, each repeated as often as it is drawn
    (``weights``: its counts per image)."""
    return np.repeat(np.arange(len(weights)), np.asarray(weights, np.int64))
