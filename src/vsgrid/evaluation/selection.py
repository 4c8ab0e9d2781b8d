"""Choosing the informative features of level 3.

Per (cell type, stain), a random forest learns the target (phenotype by default) from the
real-stain features of that cell type's test sets; permutation importance on held-out instances
ranks the features and the top ones (20 in the paper) are kept. The ranking is computed once and
reused by every run on those test sets.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.errors import VsgridError
from vsgrid.evaluation.stacks import test_store
from vsgrid.files import read_table, write_table
from vsgrid.grid import DataSet

log = logging.getLogger(__name__)


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


def ranking_target(config: dict, test_set: str, features: pd.DataFrame) -> np.ndarray:
    """The ranking forest's target for each instance of a test set's feature table:
    ``evaluation.target`` is the phenotype, or a column of the store's per-image metadata."""
    target = config["evaluation"]["target"]
    if target == "phenotype":
        return np.full(len(features), DataSet.parse(test_set).phenotype, dtype=object)
    meta = test_store(config, test_set).split_metadata("test")
    if target not in meta.columns:
        raise VsgridError(f"evaluation.target {target!r} is not a column of the metadata ({', '.join(meta.columns)})")
    return meta[target].astype(str).to_numpy()[features["image"]]


def rank_test_sets(config: dict, inputs: dict[str, str | Path], out: str | Path) -> pd.DataFrame:
    """Rank the features of the real-stain feature tables of a cell type's test sets (test set ->
    path) and write the ranking table to ``out``."""
    settings = config["evaluation"]
    frames = []
    for test_set, path in inputs.items():
        table = read_table(path)
        frames.append(table.assign(target=ranking_target(config, test_set, table)))
    features = pd.concat(frames, ignore_index=True)
    ranking = rank_features(
        features.drop(columns=["image", "label", "target"]),
        features["target"],
        settings["top_features"],
        settings["forest_trees"],
        settings["permutation_repeats"],
        settings["seed"],
    )
    write_table(ranking, Path(out))
    log.info("top features: %s", ", ".join(ranking.loc[ranking["selected"], "feature"]))
    return ranking
