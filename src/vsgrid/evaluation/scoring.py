"""Scoring one run at the three levels: pixels, instances, features.

Inputs are what the earlier steps wrote: the real stain (test split of the test set's store),
the prediction, the real masks, the real-stain features and the feature ranking of the (cell
type, stain). :func:`evaluate_run` reads them a block of images at a time, measures the
prediction's selected features in its own masks, and writes, all Parquet:

- ``images.parquet``: one row per test image: its quality flag, the pixel metrics (ssim, psnr,
  pcc, nrmse), for dapi/fitc the instance metrics (f1, jaccard, precision, recall, ap,
  splits, merges) with n_real and n_pred (:data:`vsgrid.evaluation.metrics.LEVEL`), and what
  the model says of the image where its prediction carries it: ``tta``, ``dropout`` and ``ood``
  (:data:`vsgrid.evaluation.trust.UNCERTAINTIES`);
- ``feature_differences.parquet``: per image and selected feature, the sum of |real - predicted|
  over matched instances, the number of pairs and the real feature's SD over the test set;
- ``scores.parquet``: the run's scores, long: level, metric, feature, value;
- ``features.parquet``: the prediction's selected features, per instance;
- ``cells.parquet``: per matched instance pair, the predicted ``label`` and its N-MAE over the
  selected features, and with a TTA spread its mean spread (``tta``).

Every score of a run is computed by :func:`score` from its per-image values, whatever the set of
images: all of them once for the run's value, a bootstrap resample for a confidence interval.
N-MAE of a feature = mean |real - predicted| over matched instance pairs / SD of the real feature
over the test set; the match rate = matched real instances / real instances.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from vsgrid.data.summary import image_flag
from vsgrid.errors import VsgridError
from vsgrid.evaluation.features import FeatureSet, worker_pool, workers_for
from vsgrid.evaluation.metrics import (
    IMAGE_METRICS,
    LEVEL,
    crps,
    instance_scores,
    match_instances,
    overlaps,
    pixel_scores,
    sample_spread,
)
from vsgrid.evaluation.selection import selected_features
from vsgrid.evaluation.stacks import (
    Prediction,
    blocks,
    read_prediction,
    read_stack,
    real_stain,
    test_store,
)
from vsgrid.evaluation.trust import image_trust
from vsgrid.files import read_table, table_appender, table_batches, table_columns, write_table
from vsgrid.grid import SEGMENTED
from vsgrid.layout import table_path

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- per image


@dataclass(frozen=True)
class ImageScoring:
    """What scoring one image of a run needs beside the images: picklable, sent to workers."""

    stain: str
    settings: dict  # the evaluation section
    saturation: int
    features: FeatureSet  # the selected features, measured in the prediction
    # the real features' SDs over the test set, in the features' order: each matched cell's
    # N-MAE is read in them (None: no per-cell rows)
    feature_scale: tuple[float, ...] | None = None


def matched_differences(
    index: int,
    real: pd.DataFrame,
    predicted: pd.DataFrame,
    real_masks,
    pred_masks,
    features: list[str],
    min_iou: float,
    *,
    shared=None,
    scale: tuple[float, ...] | None = None,
    sampled: list[pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For one image and each feature: the sum of |real - predicted| over matched instance pairs,
    their count, and the image's matched and real instance counts (what N-MAE and the match rate
    are computed from). ``real`` and ``predicted`` are the image's feature rows, by ``label``.
    With ``sampled``, the feature rows of each of the prediction's samples (in its masks), also
    the sum over matched pairs of the samples' CRPS against the real value and its count.

    And one row per matched pair (``image``, the predicted ``label``, ``nmae``: the mean over the
    features of |real - predicted| in units of ``scale``, the real features' SDs; with
    ``sampled``, ``crps`` and the samples' ``feature_spread`` in the same units), when ``scale`` is given:
    the per-cell error the trust table ranks uncertainties against."""
    real_ids, pred_ids, _ = match_instances(
        np.asarray(real_masks), np.asarray(pred_masks), min_iou, shared=shared
    )
    # an image without matched pairs gives (0, n_features) arrays: sums of 0 over no pairs
    observed = _values(real, real_ids, features)
    diff = np.abs(observed - _values(predicted, pred_ids, features))
    per_cell = {"nmae": diff}
    sums = {"abs_diff_sum": np.nansum(diff, axis=0), "n_pairs": np.isfinite(diff).sum(axis=0)}
    if sampled is not None:
        samples = np.stack([_values(s, pred_ids, features) for s in sampled])
        per_cell |= {"crps": crps(samples, observed), "feature_spread": sample_spread(samples)}
        scored = per_cell["crps"]
        sums |= {"crps_sum": np.nansum(scored, axis=0), "n_crps": np.isfinite(scored).sum(axis=0)}
    cells = pd.DataFrame({"image": index, "label": np.asarray(pred_ids, np.int64), "nmae": np.nan})
    if scale is not None:
        units = np.where(np.asarray(scale) > 0, np.asarray(scale), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a cell without any feature
            for name, values in per_cell.items():
                cells[name] = np.nanmean(values / units, axis=1)
    differences = pd.DataFrame(
        {
            "image": index,
            "feature": features,
            **sums,
            "n_matched": len(real_ids),
            "n_real": len(real),
        }
    )
    return differences, cells


def _values(table: pd.DataFrame, labels, features: list[str]) -> np.ndarray:
    """``features`` of the instances ``labels`` of an image's feature rows, in that order."""
    return table.set_index("label").loc[labels, features].to_numpy(np.float64)


def score_image(job: tuple) -> tuple[dict, pd.DataFrame, pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Levels 1 and 2 of one image, the real image's quality flag, the prediction's selected
    features and their differences to the real ones: (scores row, differences, predicted
    features, unmeasured, cells), where ``unmeasured`` are the labels of the real instances
    without a row in ``real_rows`` (when there are any, the image is scored no further, see
    :func:`check_measured`) and ``cells`` the matched pairs' N-MAE. When the job holds the
    prediction's TTA spread, the row gets the image's mean spread and each cell its own
    (``tta``): the spread is read once, with the image. When it holds TTA samples, each is
    measured in the prediction's masks and every matched cell's features scored as a
    distribution (:func:`matched_differences`)."""
    index, real, pred, real_masks, pred_masks, spread, samples, real_rows, how = job
    settings = how.settings
    flag = image_flag(
        real,
        how.saturation,
        blank_range=settings["blank_range"],
        saturated_fraction=settings["saturated_fraction"],
    )
    row = {"image": index, "flag": flag, **pixel_scores(real, pred)}
    shared = overlaps(real_masks, pred_masks)
    unmeasured = np.setdiff1d(shared.real_ids, real_rows["label"].to_numpy())
    if len(unmeasured):
        return row, None, None, unmeasured, None
    if how.stain in SEGMENTED:
        row.update(
            instance_scores(real_masks, pred_masks, settings["iou_threshold"], shared=shared)
        )
    predicted = how.features.measure(pred, pred_masks)
    sampled = None
    if samples is not None:  # the first sample is the prediction itself (infer), measured above
        pixels = how.features.reading_pixels()
        sampled = [
            predicted,
            *(_sample_features(pixels, s, pred_masks, predicted) for s in samples[1:]),
        ]
    differences, cells = matched_differences(
        index,
        real_rows,
        predicted,
        real_masks,
        pred_masks,
        list(how.features.names),
        settings["match_iou"],
        shared=shared,
        scale=how.feature_scale,
        sampled=sampled,
    )
    if spread is not None:
        row["tta"] = float(np.mean(spread, dtype=np.float64))
        labels = cells["label"].to_numpy()
        cells["tta"] = ndi.mean(spread, pred_masks, labels) if len(labels) else []
    predicted.insert(0, "image", index)
    return row, differences, predicted, unmeasured, cells


def _sample_features(pixels, sample, masks, predicted: pd.DataFrame) -> pd.DataFrame:
    """A TTA sample's features in the prediction's masks: those reading its pixels (``pixels``,
    a :class:`FeatureSet` or None) measured, the shape ones the prediction's (the same masks)."""
    if pixels is None:
        return predicted
    measured = pixels.measure(sample, masks)
    return predicted.assign(**{c: measured[c].to_numpy() for c in pixels.columns})


def check_measured(results: list[tuple], source: str) -> None:
    """Every real instance of the scored images must have its row in the real feature table
    (``source``): one cut short, or measured in other masks, would be matched against no
    features or the wrong ones."""
    lacking = {row["image"]: unmeasured for row, _, _, unmeasured, _ in results if len(unmeasured)}
    if lacking:
        images = ", ".join(
            f"{image} ({len(labels)} of its instances)"
            for image, labels in list(lacking.items())[:10]
        ) + (f" and {len(lacking) - 10} more" if len(lacking) > 10 else "")
        raise VsgridError(
            f"{source} has no rows for real instances of image(s) {images}: it is incomplete or "
            "was measured in other masks; rerun the step that writes it"
        )


def feature_spread(frames, features: list[str]) -> pd.Series:
    """The population SD of each feature over every row of ``frames`` (an iterable of tables),
    pooled frame by frame (Chan et al.), so a table of any size streams through."""
    n, mean, m2 = np.zeros(len(features)), np.zeros(len(features)), np.zeros(len(features))
    for frame in frames:
        x = frame[features].to_numpy(np.float64)
        valid = np.isfinite(x)
        count = valid.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            chunk_mean = np.where(count > 0, np.where(valid, x, 0).sum(0) / count, 0.0)
        chunk_m2 = np.where(valid, (x - chunk_mean) ** 2, 0).sum(0)
        total = n + count
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = chunk_mean - mean
            mean = np.where(total > 0, mean + delta * count / total, 0.0)
            m2 = m2 + chunk_m2 + np.where(total > 0, delta**2 * n * count / total, 0.0)
        n = total
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.Series(np.where(n > 0, np.sqrt(m2 / n), np.nan), index=features)


# --------------------------------------------------------------------------- scores from per-image values


@dataclass
class RunValues:
    """A run's per-image values: what every one of its scores is computed from.

    ``images`` maps each image metric to its (n_images,) values; the level-3 arrays are
    (n_images, n_features) sums and counts (the CRPS's where the prediction has TTA samples,
    else None), and ``real_std`` is (n_features,). ``valid`` is False for the images whose real
    stain is blank or saturated: every score leaves them out.
    """

    valid: np.ndarray
    images: dict[str, np.ndarray]
    features: list[str]
    abs_diff_sum: np.ndarray
    n_pairs: np.ndarray
    n_matched: np.ndarray
    n_real: np.ndarray
    real_std: np.ndarray
    crps_sum: np.ndarray | None = None
    n_crps: np.ndarray | None = None

    @classmethod
    def from_tables(cls, images: pd.DataFrame, differences: pd.DataFrame) -> RunValues:
        images = images.sort_values("image")
        n = len(images)
        sums = ["abs_diff_sum", "n_pairs"]
        sampled = "crps_sum" in differences
        wide = differences.pivot_table(
            index="image",
            columns="feature",
            values=sums + (["crps_sum", "n_crps"] if sampled else []),
            aggfunc="sum",
        ).reindex(range(n), fill_value=0)
        features = list(wide["abs_diff_sum"].columns)
        per_image = (
            differences.drop_duplicates("image").set_index("image").reindex(range(n), fill_value=0)
        )
        return cls(
            valid=(images["flag"] == "").to_numpy() if "flag" in images else np.ones(n, bool),
            images={m: images[m].to_numpy(np.float64) for m in IMAGE_METRICS if m in images},
            features=features,
            abs_diff_sum=wide["abs_diff_sum"].to_numpy(np.float64),
            n_pairs=wide["n_pairs"].to_numpy(np.float64),
            n_matched=per_image["n_matched"].to_numpy(np.float64),
            n_real=per_image["n_real"].to_numpy(np.float64),
            real_std=differences.drop_duplicates("feature")
            .set_index("feature")["real_std"]
            .reindex(features)
            .to_numpy(np.float64),
            **{
                name: wide[name].to_numpy(np.float64) if sampled else None
                for name in ("crps_sum", "n_crps")
            },
        )

    @classmethod
    def read(cls, run_dir: str | Path) -> RunValues:
        run_dir = Path(run_dir)
        return cls.from_tables(
            read_table(table_path(run_dir, "images")),
            read_table(table_path(run_dir, "feature_differences")),
        )

    @property
    def n_images(self) -> int:
        return len(self.n_real)

    @property
    def metrics(self) -> list[str]:
        return [*self.images, *self.per_feature, "match_rate"]

    @property
    def per_feature(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The level-3 metrics that are means over features: each one's per-image sums and counts."""
        sums = {"nmae": (self.abs_diff_sum, self.n_pairs)}
        if self.crps_sum is not None:
            sums["crps"] = (self.crps_sum, self.n_crps)
        return sums


def per_feature(metric: str, values: RunValues, weights: np.ndarray) -> np.ndarray:
    """N-MAE (or N-CRPS) of each feature over the weighted images, (..., n_features): the mean
    over matched pairs in units of the real feature's SD; NaN where a feature has no matched
    pair or no spread in the real stain."""
    sums, counts = values.per_feature[metric]
    weights = weights * values.valid
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (weights @ sums) / (weights @ counts)
        result = mean / np.where(values.real_std > 0, values.real_std, np.nan)
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
    if metric in values.per_feature:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", RuntimeWarning
            )  # a resample where no feature has a value
            return np.nanmean(per_feature(metric, values, weights), axis=-1)
    raise ValueError(f"unknown metric {metric!r}")


def run_scores(values: RunValues) -> pd.DataFrame:
    """The run's long score table: every metric's value, and N-MAE (and N-CRPS) per selected
    feature."""
    everyone = np.ones(values.n_images)
    rows = [
        {"level": LEVEL[m], "metric": m, "feature": "", "value": float(score(m, values, everyone))}
        for m in values.images
    ]
    rows += [
        {"level": "feature", "metric": m, "feature": f, "value": float(v)}
        for m in values.per_feature
        for f, v in zip(values.features, per_feature(m, values, everyone))
    ]
    rows += [
        {"level": "feature", "metric": m, "feature": "", "value": float(score(m, values, everyone))}
        for m in (*values.per_feature, "match_rate")
    ]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- one run


def run_tables(
    rows: list[dict],
    differences: list[pd.DataFrame],
    real_std: pd.Series,
    said: dict[str, np.ndarray] | None = None,
    cells: list[pd.DataFrame] | None = None,
) -> dict[str, pd.DataFrame]:
    """A run's per-image tables and scores from its images' results, with what the model
    ``said`` of each image (name -> per-image values) beside its scores, and its matched
    ``cells`` (:func:`matched_differences`)."""
    images = pd.DataFrame(rows)
    images = images.assign(**{k: v[images["image"].to_numpy()] for k, v in (said or {}).items()})
    differences = pd.concat(differences, ignore_index=True)
    differences["real_std"] = differences["feature"].map(real_std)
    return {
        "images": images,
        "feature_differences": differences,
        "scores": run_scores(RunValues.from_tables(images, differences)),
        "cells": pd.concat(
            cells or [pd.DataFrame(columns=["image", "label", "nmae"])], ignore_index=True
        ),
    }


def score_blocks(
    how: ImageScoring,
    stacks: tuple,
    real_rows,
    *,
    source: str,
    block_images: int,
    spread=None,
    samples=None,
    pmap=map,
    keep=None,
) -> tuple[list[dict], list[pd.DataFrame], list[pd.DataFrame]]:
    """Score every image of a run, a block at a time.

    Parameters
    ----------
    stacks
        The real stain, the prediction, the real masks and the prediction's masks (arrays or Zarr
        arrays of the same images).
    real_rows
        ``real_rows(start, stop)``: the real feature table's rows of images ``start:stop``.
    source
        What ``real_rows`` reads, for the error when an instance has no row.
    spread, samples
        The prediction's TTA spread (N, H, W) and TTA samples (N, K, H, W), where it has them.
    keep
        Called with each image's predicted features (to stream them into a table).

    Returns the per-image rows, feature differences and matched cells (see :func:`run_tables`).
    """
    rows, differences, cells = [], [], []
    for start, stop in blocks(len(stacks[0]), block_images):
        rows_of = real_rows(start, stop)
        by_image, empty = dict(tuple(rows_of.groupby("image"))), rows_of.iloc[:0]
        optional = (
            repeat(None) if a is None else np.asarray(a[start:stop]) for a in (spread, samples)
        )
        images = zip(
            range(start, stop), *(np.asarray(stack[start:stop]) for stack in stacks), *optional
        )
        jobs = [(i, *arrays, by_image.get(i, empty), how) for i, *arrays in images]
        results = list(pmap(score_image, jobs))
        check_measured(results, source)
        for row, difference, predicted, _, matched in results:
            rows.append(row)
            differences.append(difference)
            cells.append(matched)
            if keep is not None:
                keep(predicted)
    return rows, differences, cells


def _run_stacks(store, stain: str, pred: Prediction, real_masks) -> tuple:
    """A run's real stain, prediction, real masks and the prediction's masks (its own, or the
    real DAPI nuclei for cy5), which must all be of the test set's images."""
    real, real_labels = real_stain(store, stain), read_stack(real_masks)
    pred_labels = pred.labels if stain in SEGMENTED else real_labels
    if pred.image.shape != real.shape or pred_labels is None or real_labels.shape != real.shape:
        raise VsgridError(
            f"the prediction {pred.path} (with its masks) and the real masks {real_masks} do not "
            f"match the test set's {real.shape} images"
        )
    return real, pred.image, real_labels, pred_labels


def evaluate_run(
    config: dict,
    test_set: str,
    stain: str,
    *,
    prediction,
    real_masks,
    real_features,
    ranking,
    out,
    model=None,
    workers=None,
) -> pd.DataFrame:
    """Score one run at the three levels, a block of images at a time, and write its tables under
    ``out``; returns its scores. The prediction's masks are its own (dapi, fitc) or the real DAPI
    nuclei (cy5); its selected features are measured here, the real ones read by row group."""
    store = test_store(config, test_set)
    pred = read_prediction(prediction, store, stain, model)
    stacks, samples = _run_stacks(store, stain, pred, real_masks), pred.tta_samples
    selected = selected_features(read_table(ranking), table_columns(real_features))
    real_std = feature_spread(table_batches(real_features, selected), selected)
    # the job measures each image once, and each TTA sample after the first once more
    measured = pred.image.shape[0] * (1 if samples is None else samples.shape[1])
    how = ImageScoring(
        stain,
        config["evaluation"],
        store.attrs["saturation"],
        FeatureSet.from_config(config["features"], selected, images=measured),
        tuple(real_std[selected].to_numpy(float)),
    )
    out = Path(out)
    with (
        worker_pool(workers_for(config["features"], workers)) as pmap,
        table_appender(table_path(out, "features")) as append,
    ):
        rows, differences, cells = score_blocks(
            how,
            stacks,
            lambda start, stop: read_table(
                real_features,
                columns=["image", "label", *selected],
                filters=[("image", ">=", start), ("image", "<", stop)],
            ),
            source=str(real_features),
            block_images=config["evaluation"]["block_images"],
            spread=pred.tta_spread,
            samples=samples,
            pmap=pmap,
            keep=append,
        )
    said = image_trust(pred, block_images=config["evaluation"]["block_images"])
    tables = run_tables(rows, differences, real_std, said, cells)
    for name, table in tables.items():
        write_table(table, table_path(out, name))
    _log_scores(out, tables["scores"])
    return tables["scores"]


def _log_scores(out: Path, scores: pd.DataFrame) -> None:
    """The run's overall scores, one line in the job's log."""
    overall = scores[scores["feature"] == ""][["metric", "value"]].itertuples(index=False)
    log.info("%s: %s", out, ", ".join(f"{m} {v:.4g}" for m, v in overall))
