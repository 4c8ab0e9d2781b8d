"""Scoring one run at the three levels: pixels, instances, features.

Inputs are what the earlier steps wrote: the real stain (test split of the test set's store),
the prediction, the real and predicted masks, the real and virtual feature tables and the
feature ranking of the (cell type, stain). Outputs, all Parquet:

- ``images.parquet``: one row per test image: ssim, psnr, and for dapi/fitc f1, jaccard,
  precision, recall, n_real, n_pred;
- ``feature_differences.parquet``: per image and selected feature, the sum of |real - virtual|
  over matched instances, the number of pairs and the real feature's SD over the test set (what
  N-MAE and its bootstrap over images are computed from);
- ``scores.parquet``: the run's scores, long: level, metric, feature, value (means over images;
  N-MAE per selected feature and their mean; the instance match rate).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.errors import VsgridError
from vsgrid.metrics import instance_scores, pixel_scores
from vsgrid.segment import MASK_OF_STAIN
from vsgrid.selection import matched_differences, nmae
from vsgrid.store import write_table_atomically

LEVELS = {"ssim": "pixel", "psnr": "pixel", "f1": "instance", "jaccard": "instance", "precision": "instance", "recall": "instance"}


def per_image_scores(real, pred, real_masks, pred_masks, stain: str, iou_threshold: float) -> pd.DataFrame:
    """Levels 1 and 2 for every image of a run (level 2 only for stains that are segmented)."""
    if tuple(real.shape) != tuple(pred.shape):
        raise VsgridError(f"the prediction has shape {tuple(pred.shape)} but its test set has {tuple(real.shape)}")
    rows = []
    for i in range(real.shape[0]):
        row = {"image": i, **pixel_scores(np.asarray(real[i]), np.asarray(pred[i]))}
        if stain in MASK_OF_STAIN:
            row.update(instance_scores(np.asarray(real_masks[i]), np.asarray(pred_masks[i]), iou_threshold))
        rows.append(row)
    return pd.DataFrame(rows)


def run_scores(images: pd.DataFrame, differences: pd.DataFrame, real_std: pd.Series) -> pd.DataFrame:
    """The run's long score table from its per-image tables."""
    rows = [{"level": LEVELS[m], "metric": m, "feature": "", "value": float(images[m].mean())} for m in LEVELS if m in images]
    per_feature = nmae(differences, real_std)
    rows += [{"level": "feature", "metric": "nmae", "feature": f, "value": float(v)} for f, v in per_feature.items()]
    rows.append({"level": "feature", "metric": "nmae", "feature": "", "value": float(per_feature.mean())})
    per_image = differences.drop_duplicates("image")
    rows.append({"level": "feature", "metric": "match_rate", "feature": "", "value": float(per_image["n_matched"].sum() / max(per_image["n_real"].sum(), 1))})
    return pd.DataFrame(rows)


def evaluate(
    real,
    pred,
    stain: str,
    real_masks,
    pred_masks,
    real_features: pd.DataFrame,
    virtual_features: pd.DataFrame,
    ranking: pd.DataFrame,
    settings: dict,
) -> dict[str, pd.DataFrame]:
    """All three levels of one run. ``settings`` is the config's ``evaluation`` section.

    For Cy5, ``real_masks`` and ``pred_masks`` are both the real DAPI nuclei (Cy5 is measured
    inside them); level 2 is not computed.
    """
    images = per_image_scores(real, pred, real_masks, pred_masks, stain, settings["iou_threshold"])
    selected = ranking.loc[ranking["selected"], "feature"].tolist()
    missing = [f for f in selected if f not in real_features.columns or f not in virtual_features.columns]
    if missing:
        raise VsgridError(f"the feature ranking selects {', '.join(missing[:3])}, which the feature tables lack; rerun the feature steps")
    real_std = real_features[selected].std(ddof=0)
    differences = matched_differences(real_features, virtual_features, real_masks, pred_masks, selected, settings["match_iou"])
    differences["real_std"] = differences["feature"].map(real_std)
    return {"images": images, "feature_differences": differences, "scores": run_scores(images, differences, real_std)}


def write(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> None:
    """Each table to ``<out_dir>/<name>.parquet``, atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        write_table_atomically(table, out / f"{name}.parquet")
