"""Choosing the informative features (level 3) and scoring virtual ones against real ones.

Per (cell type, stain), a random forest learns the target (phenotype by default) from the
real-stain features of that cell type's test sets; permutation importance on held-out instances
ranks the features and the top ones (20 in the paper) are kept. The ranking is computed once and
reused by every run on those test sets.

N-MAE of a feature for one run: real and virtual instances are matched one-to-one by IoU
(:func:`vsgrid.metrics.match_instances`); N-MAE = mean |real - virtual| over matched pairs /
standard deviation of the real feature over all real instances of the test set.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from vsgrid.errors import VsgridError
from vsgrid.metrics import match_instances


def rank_features(features: pd.DataFrame, target: pd.Series, top: int, n_estimators: int, repeats: int, seed: int) -> pd.DataFrame:
    """Rank feature columns by permutation importance for predicting ``target``.

    ``features``: one row per instance, feature columns only. Returns one row per feature with
    ``importance``, ``importance_std``, ``rank`` (1 = most informative) and ``selected``.
    """
    # Imported here: every evaluate job imports this module, and only the ranking needs sklearn.
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import train_test_split

    classes = target.value_counts()
    if len(classes) < 2:
        raise VsgridError(f"the feature-ranking target has a single class ({classes.index[0]!r}); rank on a target with two or more")
    if classes.min() < 2:
        raise VsgridError(f"the feature-ranking target class {classes.idxmin()!r} has only {classes.min()} instance(s)")
    x = features.to_numpy(np.float64)
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column has no median: it becomes 0
        medians = np.nan_to_num(np.nanmedian(x, axis=0))
    x = np.where(np.isnan(x), medians, x)
    x_fit, x_held, y_fit, y_held = train_test_split(x, target.to_numpy(), test_size=0.3, stratify=target.to_numpy(), random_state=seed)
    forest = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(x_fit, y_fit)
    importance = permutation_importance(forest, x_held, y_held, n_repeats=repeats, random_state=seed, n_jobs=1)
    ranking = pd.DataFrame({"feature": features.columns, "importance": importance.importances_mean, "importance_std": importance.importances_std})
    ranking = ranking.sort_values(["importance", "feature"], ascending=[False, True], kind="stable").reset_index(drop=True)
    ranking["rank"] = np.arange(1, len(ranking) + 1)
    ranking["selected"] = ranking["rank"] <= top
    return ranking


def matched_differences(real: pd.DataFrame, virtual: pd.DataFrame, real_masks, pred_masks, features: list[str], min_iou: float) -> pd.DataFrame:
    """Per image and feature: the sum of |real - virtual| over matched instance pairs and their count.

    ``real`` and ``virtual`` are feature tables with ``image`` and ``label`` columns; the masks
    are the label stacks the features were measured in. Returns a long table
    (image, feature, abs_diff_sum, n_pairs, n_real) from which N-MAE and its bootstrap follow.
    """
    real_by_image = {i: frame.set_index("label") for i, frame in real.groupby("image")}
    virtual_by_image = {i: frame.set_index("label") for i, frame in virtual.groupby("image")}
    rows = []
    for i in range(len(real_masks)):
        real_ids, pred_ids, _ = match_instances(np.asarray(real_masks[i]), np.asarray(pred_masks[i]), min_iou)
        r = real_by_image.get(i)
        v = virtual_by_image.get(i)
        n_real = 0 if r is None else len(r)
        if len(real_ids) and r is not None and v is not None:
            diff = np.abs(r.loc[real_ids, features].to_numpy(np.float64) - v.loc[pred_ids, features].to_numpy(np.float64))
            sums, counts = np.nansum(diff, axis=0), np.isfinite(diff).sum(axis=0)
        else:
            sums, counts = np.zeros(len(features)), np.zeros(len(features), int)
        rows.append(pd.DataFrame({"image": i, "feature": features, "abs_diff_sum": sums, "n_pairs": counts, "n_matched": len(real_ids), "n_real": n_real}))
    return pd.concat(rows, ignore_index=True)


def nmae(differences: pd.DataFrame, real_std: pd.Series) -> pd.Series:
    """N-MAE per feature from :func:`matched_differences` rows (any subset of images)."""
    totals = differences.groupby("feature")[["abs_diff_sum", "n_pairs"]].sum()
    mae = totals["abs_diff_sum"] / totals["n_pairs"].where(totals["n_pairs"] > 0)
    return mae / real_std.reindex(mae.index).where(real_std.reindex(mae.index) > 0)
