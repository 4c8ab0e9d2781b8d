"""The feature ranking: Saabas contributions add up to the forest's prediction, the informative
feature comes first, subsamples bound the instances and measure stability."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from vsgrid.errors import VsgridError
from vsgrid.evaluation.selection import (
    RankingSettings,
    rank_features,
    saabas_contributions,
    sampled_rows,
)
from vsgrid.files import table_appender


def toy(n=600, seed=0):
    """Feature 'signal' decides the class (with some noise); 'weak' a little; the rest are noise."""
    rng = np.random.default_rng(seed)
    signal, weak = rng.normal(size=n), rng.normal(size=n)
    target = np.where(signal + 0.3 * weak + 0.3 * rng.normal(size=n) > 0, "toxic", "nontoxic")
    noise = {f"noise_{k}": rng.normal(size=n) for k in range(6)}
    return pd.DataFrame(
        {"noise_a": rng.normal(size=n), "signal": signal, "weak": weak, **noise}
    ), pd.Series(target)


def settings(**changes):
    return RankingSettings(
        **{
            "top": 2,
            "trees": 30,
            "method": "saabas",
            "repeats": 2,
            "seed": 0,
            "instances": 10_000,
            "subsamples": 3,
            **changes,
        }
    )


def test_saabas_contributions_add_up_to_the_forests_prediction():
    features, target = toy()
    x = features.to_numpy()
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, target)
    contributions = saabas_contributions(forest, x[:50])
    bias = np.mean([tree.tree_.value[0, 0, :] for tree in forest.estimators_], axis=0)
    np.testing.assert_allclose(
        bias + contributions.sum(axis=1), forest.predict_proba(x[:50]), atol=1e-12
    )


@pytest.mark.parametrize("method", ["saabas", "permutation"])
def test_the_informative_feature_ranks_first_and_stably(method):
    features, target = toy()
    ranking = rank_features(features, target, settings(method=method))
    assert ranking.iloc[0]["feature"] == "signal" and ranking.iloc[0]["stability"] == 1.0
    assert ranking["selected"].sum() == 2 and (ranking["method"] == method).all()
    assert set(ranking.columns) == {
        "feature",
        "importance",
        "importance_std",
        "stability",
        "rank",
        "selected",
        "method",
    }
    assert (
        ranking["stability"].between(0, 1).all()
        and ranking.loc[ranking["rank"] > 4, "stability"].max() < 1
    )


def test_a_subsample_bounds_the_instances_the_forest_sees(monkeypatch):
    from vsgrid.evaluation import selection

    seen = []
    real = selection._importance
    monkeypatch.setattr(
        selection, "_importance", lambda x, y, s, seed: seen.append(len(y)) or real(x, y, s, seed)
    )
    features, target = toy(n=600)
    rank_features(features, target, settings(instances=200, subsamples=2))
    assert seen == [200, 200]


def test_a_target_with_one_class_is_refused():
    features, _ = toy()
    with pytest.raises(VsgridError, match="single class"):
        rank_features(features, pd.Series(["toxic"] * len(features)), settings())


def test_a_feature_table_is_sampled_a_row_group_at_a_time(tmp_path):
    table = pd.DataFrame(
        {"image": np.arange(10_000) // 100, "label": np.arange(10_000), "f": np.arange(10_000.0)}
    )
    path = tmp_path / "features.parquet"
    with table_appender(path) as append:
        for start in range(0, len(table), 1000):
            append(table.iloc[start : start + 1000])
    everything = sampled_rows(path, 20_000, np.random.default_rng(0))
    pd.testing.assert_frame_equal(everything, table)  # no more rows than kept: every row, in order
    sample = sampled_rows(path, 2000, np.random.default_rng(0))
    assert (
        len(sample) == 2000
        and sample["label"].is_unique
        and sample["label"].is_monotonic_increasing
    )
    # uniform over the whole table, not the first row groups: each tenth holds about 200 of 2000
    assert np.bincount(sample["label"] // 1000).min() > 140
