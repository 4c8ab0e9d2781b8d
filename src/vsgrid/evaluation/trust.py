"""Is what a model says of its own predictions worth trusting? Checked against the real stain.

A prediction carries two things the model says without the real stain
(:mod:`vsgrid.model.uncertainty`): each pixel's spread over test-time augmentation and each
field's out-of-distribution (OOD) score. Per image, :func:`image_trust` reads them as
``spread`` (the mean over the field) and ``ood``; the evaluation writes both beside the image's
scores. The grid holds the truth to check them against:

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
from scipy import stats
from sklearn.metrics import roc_auc_score

from vsgrid.evaluation.stacks import Prediction, blocks

UNCERTAINTIES = ("spread", "ood")  # the per-image columns of a run's images table


def image_trust(prediction: Prediction, *, block_images: int) -> dict[str, np.ndarray]:
    """Per image of a prediction, what its model says of it: ``spread``, the mean TTA spread
    over the field (counts), and ``ood``, the field's OOD score; each only where the prediction
    carries it."""
    said = {}
    if prediction.spread is not None:
        n = prediction.spread.shape[0]
        said["spread"] = np.concatenate(
            [
                np.asarray(prediction.spread[start:stop], np.float64).mean((1, 2))
                for start, stop in blocks(n, block_images)
            ]
            or [np.empty(0)]
        )
    if prediction.ood is not None:
        said["ood"] = np.asarray(prediction.ood, np.float64)
    return said


def _paired(uncertainty: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uncertainty, error = np.asarray(uncertainty, np.float64), np.asarray(error, np.float64)
    if uncertainty.shape != error.shape:
        raise ValueError(f"{uncertainty.shape} uncertainties against {error.shape} errors")
    keep = np.isfinite(uncertainty) & np.isfinite(error)
    return uncertainty[keep], error[keep]


def spearman(uncertainty: np.ndarray, error: np.ndarray) -> float:
    """Spearman's rank correlation of an uncertainty with an error over the images where both
    have a value; NaN with fewer than 3 such images or where either is constant (no ranking)."""
    uncertainty, error = _paired(uncertainty, error)
    if len(uncertainty) < 3 or np.ptp(uncertainty) == 0 or np.ptp(error) == 0:
        return np.nan
    return float(stats.spearmanr(uncertainty, error).statistic)


def auroc(inside: np.ndarray, shifted: np.ndarray) -> float:
    """How well a score ranks ``shifted`` images above ``inside`` ones: the area under the ROC
    curve; NaN without an image with a value on either side."""
    inside, shifted = (np.asarray(a, np.float64) for a in (inside, shifted))
    inside, shifted = inside[np.isfinite(inside)], shifted[np.isfinite(shifted)]
    if not len(inside) or not len(shifted):
        return np.nan
    labels = np.r_[np.zeros(len(inside)), np.ones(len(shifted))]
    return float(roc_auc_score(labels, np.r_[inside, shifted]))


def drawn(weights: np.ndarray) -> np.ndarray:
    """The image indices of one bootstrap resample, each repeated as often as it is drawn
    (``weights``: its counts per image)."""
    return np.repeat(np.arange(len(weights)), np.asarray(weights, np.int64))
