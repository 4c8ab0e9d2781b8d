"""Choosing the informative features of level 3.

Per (cell type, stain), a random forest learns the target (phenotype by default) from the
real-stain features of that cell type's test sets, and the features are ranked by how much the
forest's decisions lean on them; the top ones (20 in the paper) are kept. The ranking is computed
once and reused by every run on those test sets.

Two importances (``evaluation.selection``):

- ``saabas`` (the paper's, "similar to Saabas 2014"): the contribution of a feature to one
  instance's predicted class probabilities is the sum of the changes in probability at the splits
  on that feature along the instance's path through each tree, averaged over trees; a feature's
  importance is the mean absolute contribution over held-out instances and classes;
- ``permutation``: the drop in held-out accuracy when the feature's values are shuffled.

At paper scale a forest on every instance takes hours: the forest learns from a subsample of
``evaluation.ranking_instances`` instances, stratified by target, drawn ``ranking_subsamples``
times (with replacement, a bootstrap); importances are averaged over the draws, and each
feature's ``stability`` is the share of draws that put it in the top. Each test set's table is
read a row group at a time, keeping a uniform sample of at most ``instances x subsamples`` rows,
so memory does not grow with the test set either.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.errors import VsgridError
from vsgrid.evaluation.stacks import test_store
from vsgrid.files import table_batches, table_columns, write_table
from vsgrid.grid import DataSet
from vsgrid.seeds import rng_for

log = logging.getLogger(__name__)

HELD_OUT = 5000  # held-out instances the importances are averaged over


@dataclass(frozen=True)
class RankingSettings:
    top: int
    trees: int
    method: str
    repeats: int
    seed: int
    instances: int
    subsamples: int
    n_jobs: int = 1

    @classmethod
    def from_config(cls, evaluation: dict, n_jobs: int = 1) -> RankingSettings:
        keys = ("top_features", "forest_trees", "selection", "permutation_repeats", "seed")
        keys += ("ranking_instances", "ranking_subsamples")
        return cls(*(evaluation[key] for key in keys), n_jobs)


def imputed(features: pd.DataFrame) -> np.ndarray:
    """The features as floats, a non-finite value replaced by its column's median (0 for a column
    without any)."""
    x = features.to_numpy(np.float64)
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column has no median
        medians = np.nan_to_num(np.nanmedian(x, axis=0))
    return np.where(np.isnan(x), medians, x)


def saabas_contributions(forest, x: np.ndarray) -> np.ndarray:
    """Each feature's contribution to each instance's class probabilities, (n, features, classes):
    along an instance's path through a tree, the change in class fractions at each split belongs to
    the split's feature (Saabas 2014); trees are averaged as the forest's prediction averages them,
    so the root's fractions plus the contributions give ``forest.predict_proba(x)``."""
    from scipy.sparse import csr_matrix

    paths, offsets = forest.decision_path(x)
    n_features, n_classes = x.shape[1], forest.n_classes_
    rows, columns, deltas = [], [], []
    for tree, offset in zip(forest.estimators_, offsets[:-1]):
        t = tree.tree_
        value = t.value[:, 0, :]
        for child_of in (t.children_left, t.children_right):
            parents = np.flatnonzero(child_of >= 0)
            rows.append(
                offset + child_of[parents]
            )  # the change at an edge belongs to its parent's split feature
            columns.append(t.feature[parents])
            deltas.append(value[child_of[parents]] - value[parents])
    rows, columns, deltas = np.concatenate(rows), np.concatenate(columns), np.concatenate(deltas)
    contributions = np.zeros((len(x), n_features, n_classes))
    for k in range(n_classes):
        edges = csr_matrix((deltas[:, k], (rows, columns)), shape=(paths.shape[1], n_features))
        contributions[:, :, k] = (paths @ edges).toarray() / len(forest.estimators_)
    return contributions


def saabas_importance(forest, x: np.ndarray) -> np.ndarray:
    """Mean absolute contribution of each feature over the instances ``x`` and the classes."""
    return np.abs(saabas_contributions(forest, x)).mean(axis=(0, 2))


def _importance(x: np.ndarray, y: np.ndarray, settings: RankingSettings, seed: int) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import train_test_split

    x_fit, x_held, y_fit, y_held = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=seed
    )
    forest = RandomForestClassifier(
        n_estimators=settings.trees, random_state=seed, n_jobs=settings.n_jobs
    ).fit(x_fit, y_fit)
    # Importances are averages over held-out instances: a few thousand pin them down, and
    # permutation importance predicts them once per feature and repeat.
    x_held, y_held = x_held[:HELD_OUT], y_held[:HELD_OUT]
    if settings.method == "saabas":
        return saabas_importance(forest, x_held)
    return permutation_importance(
        forest,
        x_held,
        y_held,
        n_repeats=settings.repeats,
        random_state=seed,
        n_jobs=settings.n_jobs,
    ).importances_mean


def rank_features(
    features: pd.DataFrame, target: pd.Series, settings: RankingSettings
) -> pd.DataFrame:
    """Rank feature columns by how much a random forest predicting ``target`` relies on them.

    ``features``: one row per instance, feature columns only. Returns one row per feature with
    ``importance`` and ``importance_std`` (over the subsamples), ``stability`` (the share of
    subsamples that rank it in the top), ``rank`` (1 = most informative), ``selected`` and
    ``method``.
    """
    from sklearn.utils import resample

    classes = target.value_counts()
    if len(classes) < 2:
        raise VsgridError(
            f"the feature-ranking target has a single class ({classes.index[0]!r}); rank on a target with two or more"
        )
    if classes.min() < 4:
        raise VsgridError(
            f"the feature-ranking target class {classes.idxmin()!r} has only {classes.min()} "
            "instance(s); it needs 4 or more"
        )
    x, y = imputed(features), target.to_numpy()
    size = min(settings.instances, len(y))
    draws = []
    for k in range(settings.subsamples):
        chosen = resample(
            np.arange(len(y)), n_samples=size, stratify=y, random_state=settings.seed + k
        )
        draws.append(_importance(x[chosen], y[chosen], settings, settings.seed + k))
    draws = np.array(draws)
    top_of_draw = np.argsort(np.argsort(-draws, axis=1, kind="stable"), axis=1) < settings.top
    ranking = pd.DataFrame(
        {
            "feature": features.columns,
            "importance": draws.mean(0),
            "importance_std": draws.std(0),
            "stability": top_of_draw.mean(0),
        }
    )
    ranking = ranking.sort_values(
        ["importance", "feature"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
    ranking["rank"] = np.arange(1, len(ranking) + 1)
    ranking["selected"] = ranking["rank"] <= settings.top
    ranking["method"] = settings.method
    return ranking


def selected_features(ranking: pd.DataFrame, real_features: list[str]) -> list[str]:
    """The ranking's selected features, each checked against the real feature table's columns."""
    selected = ranking.loc[ranking["selected"], "feature"].tolist()
    missing = [f for f in selected if f not in real_features]
    if missing:
        raise VsgridError(
            f"the feature ranking selects {', '.join(missing[:3])}, which the real feature table "
            "lacks; rerun the feature steps"
        )
    return selected


def ranking_target(config: dict, test_set: str, features: pd.DataFrame) -> np.ndarray:
    """The ranking forest's target for each instance of a test set's feature table:
    ``evaluation.target`` is the phenotype, or a column of the store's per-image metadata."""
    target = config["evaluation"]["target"]
    if target == "phenotype":
        return np.full(len(features), DataSet.parse(test_set).phenotype, dtype=object)
    meta = test_store(config, test_set).split_metadata("test")
    if target not in meta.columns:
        raise VsgridError(
            f"evaluation.target {target!r} is not a column of the metadata ({', '.join(meta.columns)})"
        )
    return meta[target].astype(str).to_numpy()[features["image"]]


def sampled_rows(path: str | Path, keep: int, rng: np.random.Generator) -> pd.DataFrame:
    """At most ``keep`` rows of a feature table, uniformly at random (every row when it has no
    more), read a row group at a time: memory is bounded by ``keep``, not by the test set."""
    kept, keys = None, np.empty(0)
    for batch in table_batches(path, table_columns(path)):
        kept = batch if kept is None else pd.concat([kept, batch], ignore_index=True)
        keys = np.concatenate([keys, rng.random(len(batch))])
        if len(kept) > keep:  # the rows with the smallest keys: a uniform sample of all read so far
            smallest = np.sort(np.argpartition(keys, keep)[:keep])
            kept, keys = kept.iloc[smallest].reset_index(drop=True), keys[smallest]
    return kept if kept is not None else pd.DataFrame(columns=table_columns(path))


def rank_test_sets(
    config: dict, inputs: dict[str, str | Path], out: str | Path, n_jobs: int = 1
) -> pd.DataFrame:
    """Rank the features of the real-stain feature tables of a cell type's test sets (test set ->
    path), with ``n_jobs`` cores, and write the ranking table to ``out``."""
    settings = RankingSettings.from_config(config["evaluation"], n_jobs)
    frames = []
    for test_set, path in inputs.items():
        table = sampled_rows(
            path,
            settings.instances * settings.subsamples,
            rng_for(settings.seed, "ranking rows", test_set),
        )
        frames.append(table.assign(target=ranking_target(config, test_set, table)))
    features = pd.concat(frames, ignore_index=True)
    ranking = rank_features(
        features.drop(columns=["image", "label", "target"]), features["target"], settings
    )
    write_table(ranking, Path(out))
    chosen = ranking[ranking["selected"]]
    log.info(
        "top %d by %s importance (stability %.2f on average): %s",
        len(chosen),
        settings.method,
        chosen["stability"].mean(),
        ", ".join(chosen["feature"]),
    )
    return ranking
