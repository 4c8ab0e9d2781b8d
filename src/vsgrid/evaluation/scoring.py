"""Scoring one run at the three levels: pixels, instances, features.

Inputs are what the earlier steps wrote: the real stain (test split of the test set's store),
the prediction, the real masks, the real-stain features and the feature ranking of the (cell
type, stain). :func:`evaluate_run` segments and measures the prediction and writes, all Parquet:

- ``images.parquet``: one row per test image: ssim, psnr, and for dapi/fitc f1, jaccard,
  precision, recall, n_real, n_pred;
- ``feature_differences.parquet``: per image and selected feature, the sum of |real - predicted|
  over matched instances, the number of pairs and the real feature's SD over the test set;
- ``scores.parquet``: the run's scores, long: level, metric, feature, value;
- ``features.parquet``: the prediction's own features.

Every score of a run is computed by :func:`score` from its per-image values, whatever the set of
images: all of them once for the run's value, a bootstrap resample for a confidence interval.
N-MAE of a feature = mean |real - predicted| over matched instance pairs / SD of the real feature
over the test set; the match rate = matched real instances / real instances.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.data.summary import image_flag
from vsgrid.errors import VsgridError
from vsgrid.evaluation.features import measure_stack, workers_for
from vsgrid.evaluation.metrics import IMAGE_METRICS, LEVEL, instance_scores, match_instances, pixel_scores
from vsgrid.evaluation.segment import segmenter
from vsgrid.evaluation.stacks import read_prediction, read_stack, real_stain, test_store
from vsgrid.files import read_table, write_table
from vsgrid.layout import SEGMENTED

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- per image


def per_image_scores(real, pred, real_masks, pred_masks, stain: str, settings: dict, saturation: int = 65535) -> pd.DataFrame:
    """Levels 1 and 2 for every image of a run (level 2 only for stains that are segmented), and
    each real image's quality flag (``settings``: the ``evaluation`` section)."""
    if tuple(real.shape) != tuple(pred.shape):
        raise VsgridError(f"the prediction has shape {tuple(pred.shape)} but its test set has {tuple(real.shape)}")
    rows = []
    for i in range(real.shape[0]):
        flag = image_flag(np.asarray(real[i]), saturation, blank_range=settings["blank_range"], saturated_fraction=settings["saturated_fraction"])
        row = {"image": i, "flag": flag, **pixel_scores(np.asarray(real[i]), np.asarray(pred[i]))}
        if stain in SEGMENTED:
            row.update(instance_scores(np.asarray(real_masks[i]), np.asarray(pred_masks[i]), settings["iou_threshold"]))
        rows.append(row)
    return pd.DataFrame(rows)


def matched_differences(real: pd.DataFrame, predicted: pd.DataFrame, real_masks, pred_masks, features: list[str], min_iou: float) -> pd.DataFrame:
    """Per image and feature: the sum of |real - predicted| over matched instance pairs and their count.

    ``real`` and ``predicted`` are feature tables with ``image`` and ``label`` columns; the masks
    are the label stacks the features were measured in. Returns a long table
    (image, feature, abs_diff_sum, n_pairs, n_matched, n_real) from which N-MAE follows.
    """
    real_by_image = {i: frame.set_index("label") for i, frame in real.groupby("image")}
    predicted_by_image = {i: frame.set_index("label") for i, frame in predicted.groupby("image")}
    rows = []
    for i in range(len(real_masks)):
        real_ids, pred_ids, _ = match_instances(np.asarray(real_masks[i]), np.asarray(pred_masks[i]), min_iou)
        r, p = real_by_image.get(i), predicted_by_image.get(i)
        n_real = 0 if r is None else len(r)
        if len(real_ids) and r is not None and p is not None:
            diff = np.abs(r.loc[real_ids, features].to_numpy(np.float64) - p.loc[pred_ids, features].to_numpy(np.float64))
            sums, counts = np.nansum(diff, axis=0), np.isfinite(diff).sum(axis=0)
        else:
            sums, counts = np.zeros(len(features)), np.zeros(len(features), int)
        rows.append(pd.DataFrame({"image": i, "feature": features, "abs_diff_sum": sums, "n_pairs": counts, "n_matched": len(real_ids), "n_real": n_real}))
    return pd.concat(rows, ignore_index=True)


# --------------------------------------------------------------------------- scores from per-image values


@dataclass
class RunValues:
    """A run's per-image values: what every one of its scores is computed from.

    ``images`` maps each image metric to its (n_images,) values; the level-3 arrays are
    (n_images, n_features) sums and counts, and ``real_std`` is (n_features,). ``valid`` is False
    for the images whose real stain is blank or saturated: every score leaves them out.
    """

    valid: np.ndarray
    images: dict[str, np.ndarray]
    features: list[str]
    abs_diff_sum: np.ndarray
    n_pairs: np.ndarray
    n_matched: np.ndarray
    n_real: np.ndarray
    real_std: np.ndarray

    @classmethod
    def from_tables(cls, images: pd.DataFrame, differences: pd.DataFrame) -> RunValues:
        images = images.sort_values("image")
        n = len(images)
        wide = differences.pivot_table(index="image", columns="feature", values=["abs_diff_sum", "n_pairs"], aggfunc="sum").reindex(range(n), fill_value=0)
        features = list(wide["abs_diff_sum"].columns)
        per_image = differences.drop_duplicates("image").set_index("image").reindex(range(n), fill_value=0)
        return cls(
            valid=(images["flag"] == "").to_numpy() if "flag" in images else np.ones(n, bool),
            images={m: images[m].to_numpy(np.float64) for m in IMAGE_METRICS if m in images},
            features=features,
            abs_diff_sum=wide["abs_diff_sum"].to_numpy(np.float64),
            n_pairs=wide["n_pairs"].to_numpy(np.float64),
            n_matched=per_image["n_matched"].to_numpy(np.float64),
            n_real=per_image["n_real"].to_numpy(np.float64),
            real_std=differences.drop_duplicates("feature").set_index("feature")["real_std"].reindex(features).to_numpy(np.float64),
        )

    @classmethod
    def read(cls, run_dir: str | Path) -> RunValues:
        run_dir = Path(run_dir)
        return cls.from_tables(read_table(run_dir / "images.parquet"), read_table(run_dir / "feature_differences.parquet"))

    @property
    def n_images(self) -> int:
        return len(self.n_real)

    @property
    def metrics(self) -> list[str]:
        return [*self.images, "nmae", "match_rate"]


def nmae_per_feature(values: RunValues, weights: np.ndarray) -> np.ndarray:
    """N-MAE of each feature over the weighted images, (..., n_features); NaN where a feature has
    no matched pair or no spread in the real stain."""
    weights = weights * values.valid
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = (weights @ values.abs_diff_sum) / (weights @ values.n_pairs)
        result = mae / np.where(values.real_std > 0, values.real_std, np.nan)
    return np.where(np.isfinite(result), result, np.nan)


def score(metric: str, values: RunValues, weights: np.ndarray) -> np.ndarray:
    """A run's ``metric`` over its images counted ``weights`` times, shape (..., n_images).

    ``np.ones(n_images)`` gives the run's value; the counts of a bootstrap resample give that
    resample's replicate. Image metrics are means over images; N-MAE is the mean over features of
    the per-feature N-MAE; the match rate pools instances over images. Flagged images (blank or
    saturated real stain) weigh nothing.
    """
    weights = weights * values.valid
    if metric in values.images:
        with np.errstate(invalid="ignore", divide="ignore"):  # every image flagged: no value
            return (weights @ values.images[metric]) / weights.sum(-1)
    if metric == "match_rate":
        return (weights @ values.n_matched) / np.maximum(weights @ values.n_real, 1)
    if metric == "nmae":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no feature has a value
            return np.nanmean(nmae_per_feature(values, weights), axis=-1)
    raise ValueError(f"unknown metric {metric!r}")


def run_scores(values: RunValues) -> pd.DataFrame:
    """The run's long score table: every metric's value, and N-MAE per selected feature."""
    everyone = np.ones(values.n_images)
    rows = [{"level": LEVEL[m], "metric": m, "feature": "", "value": float(score(m, values, everyone))} for m in values.images]
    per_feature = nmae_per_feature(values, everyone)
    rows += [{"level": "feature", "metric": "nmae", "feature": f, "value": float(v)} for f, v in zip(values.features, per_feature)]
    rows += [{"level": "feature", "metric": m, "feature": "", "value": float(score(m, values, everyone))} for m in ("nmae", "match_rate")]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- one run


def evaluate(real, pred, stain: str, real_masks, pred_masks, real_features: pd.DataFrame, pred_features: pd.DataFrame, ranking: pd.DataFrame, settings: dict, saturation: int = 65535) -> dict[str, pd.DataFrame]:
    """All three levels of one run. ``settings`` is the config's ``evaluation`` section.

    For Cy5, ``real_masks`` and ``pred_masks`` are both the real DAPI nuclei (Cy5 is measured
    inside them); level 2 is not computed.
    """
    images = per_image_scores(real, pred, real_masks, pred_masks, stain, settings, saturation)
    selected = ranking.loc[ranking["selected"], "feature"].tolist()
    missing = [f for f in selected if f not in real_features.columns or f not in pred_features.columns]
    if missing:
        raise VsgridError(f"the feature ranking selects {', '.join(missing[:3])}, which the feature tables lack; rerun the feature steps")
    real_std = real_features[selected].std(ddof=0)
    differences = matched_differences(real_features, pred_features, real_masks, pred_masks, selected, settings["match_iou"])
    differences["real_std"] = differences["feature"].map(real_std)
    return {"images": images, "feature_differences": differences, "scores": run_scores(RunValues.from_tables(images, differences))}


def evaluate_run(config: dict, test_set: str, stain: str, *, prediction, real_masks, real_features, ranking, out, model=None, workers=None) -> pd.DataFrame:
    """Segment and measure one run's prediction (of ``model``, when given), score it at the three
    levels and write the run's tables under ``out``; returns its scores."""
    store = test_store(config, test_set)
    real, pred, real_labels = real_stain(store, stain), read_prediction(prediction, store, stain, model)[:], read_stack(real_masks)[:]
    out = Path(out)
    if stain in SEGMENTED:
        if pred.shape != real.shape:
            raise VsgridError(f"the prediction {prediction} has shape {pred.shape} but its test set has {real.shape}")
        pred_labels = segmenter(config["segmentation"], stain, float(store.attrs["pixel_size_um"]))(pred)
    else:
        pred_labels = real_labels
    settings = config["features"]
    pred_features = measure_stack(pred, pred_labels, settings["groups"], settings["names"], workers_for(settings, workers))
    write_table(pred_features, out / "features.parquet")
    tables = evaluate(real, pred, stain, real_labels, pred_labels, read_table(real_features), pred_features, read_table(ranking), config["evaluation"], store.attrs["saturation"])
    for name, table in tables.items():
        write_table(table, out / f"{name}.parquet")
    scores = tables["scores"]
    log.info("%s: %s", out, ", ".join(f"{m} {v:.4g}" for m, v in scores[scores["feature"] == ""][["metric", "value"]].itertuples(index=False)))
    return scores
