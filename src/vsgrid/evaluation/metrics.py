"""Scores of a predicted stain against the real one: pixels (level 1) and instances (level 2).

One small pure function per score, NumPy and scikit-image only. This module is a leaf: it imports
nothing of the pipeline, so training's validation uses the same :func:`psnr` as the evaluation.
:data:`LEVEL` and :data:`LOWER_IS_BETTER` describe every metric a run reports, levels 1 to 3.

Instance definitions (the paper's level 2, stated here once):

- Two instances *match* when their IoU (intersection over union of their pixels) is strictly
  greater than ``iou_threshold`` (0.7 in the paper). Above 0.5 an instance can overlap that much
  with at most one other, so the matching is one-to-one without any assignment step.
- ``precision`` = matches / predicted instances, ``recall`` = matches / real instances,
  ``f1`` = 2 matches / (real + predicted instances).
- ``jaccard`` (Jaccard index) = the mean, over every real and every predicted instance, of its
  best IoU with any instance of the other image (0 when it overlaps none): missed and invented
  instances both lower it.
- ``ap``: the average, over IoU thresholds 0.50, 0.55, ..., 0.95, of TP / (TP + FP + FN) with
  instances matched one-to-one at IoU >= the threshold (Cellpose's and StarDist's "average
  precision", and their ">=").
- ``splits``: real instances of which two or more predicted instances each lie mostly (more than
  half of their pixels) inside; ``merges``: predicted instances that hold most of two or more real
  instances. Counts per image.
- Empty images: both empty score 1 (nothing to find, nothing invented); one empty scores 0.

Pixel scores beside SSIM and PSNR: ``pcc``, the Pearson correlation of the pixel values, and
``nrmse``, the root mean square error over the real image's data range (scikit-image's
``normalized_root_mse`` with ``normalization="min-max"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from skimage.metrics import structural_similarity

from vsgrid.errors import VsgridError

# Every metric of a run, by level (N-MAE, CRPS and the match rate are level 3,
# vsgrid.evaluation.scoring).
LEVEL = {
    "ssim": "pixel",
    "psnr": "pixel",
    "pcc": "pixel",
    "nrmse": "pixel",
    "f1": "instance",
    "jaccard": "instance",
    "precision": "instance",
    "recall": "instance",
    "ap": "instance",
    "splits": "instance",
    "merges": "instance",
    "nmae": "feature",
    "crps": "feature",
    "match_rate": "feature",
}
LOWER_IS_BETTER = frozenset({"nrmse", "splits", "merges", "nmae", "crps"})
AP_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
IMAGE_METRICS = tuple(
    m for m, level in LEVEL.items() if level != "feature"
)  # one value per test image


def check_pair(real: np.ndarray, pred: np.ndarray, what: str = "prediction") -> None:
    """Same shape, and finite values in the prediction."""
    if real.shape != pred.shape:
        raise VsgridError(f"{what} has shape {pred.shape} but the real image has {real.shape}")
    if np.issubdtype(pred.dtype, np.floating) and not np.isfinite(pred).all():
        raise VsgridError(
            f"{what} contains {int((~np.isfinite(pred)).sum())} NaN or infinite values"
        )


def pixel_scores(real: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """SSIM and PSNR of one 2-D image pair, with the data range of the real image.

    Identical images give SSIM 1 and PSNR +inf (defined, not an error). A constant real image
    has no data range; 1 count is used instead so the scores stay defined.
    """
    check_pair(real, pred)
    real, pred = real.astype(np.float64), pred.astype(np.float64)
    ssim = float(structural_similarity(real, pred, data_range=data_range(real)))
    return {
        "ssim": ssim,
        "psnr": psnr(real, pred),
        "pcc": pcc(real, pred),
        "nrmse": nrmse(real, pred),
    }


def data_range(real: np.ndarray) -> float:
    """The real image's range of values, at least 1 count (a constant image has none)."""
    return max(float(real.max()) - float(real.min()), 1.0)


def pcc(real: np.ndarray, pred: np.ndarray) -> float:
    """Pearson correlation of the pixel values; NaN when either image is constant."""
    x, y = np.asarray(real, np.float64).ravel(), np.asarray(pred, np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else math.nan


def nrmse(real: np.ndarray, pred: np.ndarray) -> float:
    """Root mean square error over the real image's data range (at least 1 count)."""
    return math.sqrt(_mse(real, pred)) / data_range(real)


def _mse(real: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error in float64, without copying inputs that are float64 already."""
    return float(np.mean((np.asarray(real, np.float64) - np.asarray(pred, np.float64)) ** 2))


def psnr(real: np.ndarray, pred: np.ndarray) -> float:
    """PSNR in dB with the data range of the real image; identical images give +inf."""
    mse = _mse(real, pred)
    return math.inf if mse == 0 else 10 * math.log10(data_range(real) ** 2 / mse)


def check_labels(masks: np.ndarray, what: str) -> None:
    if masks.dtype == bool or not np.issubdtype(masks.dtype, np.integer):
        raise VsgridError(f"{what} must be an integer label image, not {masks.dtype}")
    if masks.size and masks.min() < 0:
        raise VsgridError(f"{what} has negative labels")


@dataclass(frozen=True)
class Overlaps:
    """The pixels every (real, predicted) instance pair shares, and each instance's area."""

    overlap: np.ndarray  # (n_real, n_pred)
    area_real: np.ndarray
    area_pred: np.ndarray
    real_ids: np.ndarray
    pred_ids: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        return self.overlap / (self.area_real[:, None] + self.area_pred[None, :] - self.overlap)


def overlaps(real: np.ndarray, pred: np.ndarray) -> Overlaps:
    """Overlaps of every (real, predicted) instance pair, from one pass over the pixels."""
    check_labels(real, "real masks")
    check_labels(pred, "predicted masks")
    if real.shape != pred.shape:
        raise VsgridError(
            f"predicted masks have shape {pred.shape} but the real masks have {real.shape}"
        )
    real, pred = real.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    n_real, n_pred = (int(real.max()) + 1, int(pred.max()) + 1) if real.size else (1, 1)
    if n_real * n_pred <= 1 << 24:  # labels numbered compactly: count every pair of labels at once
        overlap = (
            np.bincount(real * n_pred + pred, minlength=n_real * n_pred)
            .reshape(n_real, n_pred)
            .astype(np.float64)
        )
        real_ids, pred_ids = np.flatnonzero(overlap.sum(1)), np.flatnonzero(overlap.sum(0))
        overlap = overlap[np.ix_(real_ids, pred_ids)]
    else:
        real_ids, real_index = np.unique(real, return_inverse=True)
        pred_ids, pred_index = np.unique(pred, return_inverse=True)
        overlap = coo_matrix(
            (np.ones(real.size), (real_index, pred_index)), shape=(len(real_ids), len(pred_ids))
        ).toarray()
    area_real, area_pred = overlap.sum(1), overlap.sum(0)
    keep_rows, keep_cols = real_ids > 0, pred_ids > 0  # drop the background
    return Overlaps(
        overlap[np.ix_(keep_rows, keep_cols)],
        area_real[keep_rows],
        area_pred[keep_cols],
        real_ids[keep_rows],
        pred_ids[keep_cols],
    )


def instance_scores(
    real_masks: np.ndarray,
    pred_masks: np.ndarray,
    iou_threshold: float = 0.7,
    *,
    shared: Overlaps | None = None,
) -> dict[str, float]:
    """F1, Jaccard index, precision, recall, average precision, splits and merges of predicted
    against real instances (module docstring); ``shared``, when given, is their :func:`overlaps`,
    computed once for every score."""
    shared = shared or overlaps(real_masks, pred_masks)
    iou, n_real, n_pred = shared.iou, len(shared.real_ids), len(shared.pred_ids)
    if n_real == 0 and n_pred == 0:
        return {
            "f1": 1.0,
            "jaccard": 1.0,
            "precision": 1.0,
            "recall": 1.0,
            "ap": 1.0,
            "splits": 0,
            "merges": 0,
            "n_real": 0,
            "n_pred": 0,
        }
    matches = int((iou > iou_threshold).sum()) if iou.size else 0
    best = np.concatenate(
        [iou.max(1) if n_pred else np.zeros(n_real), iou.max(0) if n_real else np.zeros(n_pred)]
    )
    return {
        "f1": 2 * matches / (n_real + n_pred),
        "jaccard": float(best.mean()),
        "precision": matches / n_pred if n_pred else 0.0,
        "recall": matches / n_real if n_real else 0.0,
        "ap": average_precision(iou, n_real, n_pred),
        **splits_and_merges(shared),
        "n_real": n_real,
        "n_pred": n_pred,
    }


def average_precision(iou: np.ndarray, n_real: int, n_pred: int) -> float:
    """The mean over :data:`AP_THRESHOLDS` of TP / (TP + FP + FN), TP the instances matched
    one-to-one at IoU >= the threshold (one-to-one without an assignment: above 0.5 an instance
    overlaps that much with at most one other)."""
    true_positives = np.array([(iou >= t).sum() if iou.size else 0 for t in AP_THRESHOLDS])
    return float(np.mean(true_positives / (n_real + n_pred - true_positives)))


def splits_and_merges(shared: Overlaps) -> dict[str, int]:
    """Real instances split into two or more predicted ones that each lie mostly (more than half
    their area) inside it, and predicted instances that hold most of two or more real ones."""
    pred_inside = shared.overlap > 0.5 * shared.area_pred[None, :]
    real_inside = shared.overlap > 0.5 * shared.area_real[:, None]
    return {
        "splits": int((pred_inside.sum(1) >= 2).sum()),
        "merges": int((real_inside.sum(0) >= 2).sum()),
    }


def match_instances(
    real_masks: np.ndarray,
    pred_masks: np.ndarray,
    min_iou: float = 0.5,
    *,
    shared: Overlaps | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one pairs of real and predicted instances, maximising total IoU, each pair above ``min_iou``.

    Returns the real labels, predicted labels and IoUs of the pairs (for level 3); ``shared`` as
    in :func:`instance_scores`.
    """
    shared = shared or overlaps(real_masks, pred_masks)
    iou, real_ids, pred_ids = shared.iou, shared.real_ids, shared.pred_ids
    if iou.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = iou[rows, cols] > min_iou
    return real_ids[rows[keep]], pred_ids[cols[keep]], iou[rows[keep], cols[keep]]


def sample_spread(samples: np.ndarray) -> np.ndarray:
    """Half the mean absolute difference between two of the m ``samples`` (m, ...), drawn with
    replacement (E|X - X'| / 2 of their empirical distribution), elementwise: (...)."""
    m = samples.shape[0]
    return np.abs(samples[:, None] - samples[None]).sum((0, 1)) / (2 * m * m)


def crps(samples: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """The continuous ranked probability score of the empirical distribution of ``samples``
    (m, ...) at ``observed`` (...), elementwise: E|X - y| - E|X - X'| / 2 (Gneiting and Raftery
    2007), a proper score, lower is better. For one sample it is |x - y|, a point forecast's
    absolute error; a spread earns its keep only where it lowers that. NaN where any value is."""
    return np.abs(samples - observed).mean(0) - sample_spread(samples)
