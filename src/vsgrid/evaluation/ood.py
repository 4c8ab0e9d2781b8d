"""Out-of-distribution (OOD) scores of a model's test fields, and how well they find each shift.

The score is :mod:`vsgrid.model.uncertainty`'s: the Mahalanobis distance of a field's pooled
bottleneck activations to the model's training fields. Inference writes it into every prediction;
``vsgrid ood`` computes it here without predicting, for any of the model's runs. A well's score
is the mean over its fields.

The model's own train set's test split is always scored too: its fields are the in-distribution
fields every shifted test set's AUROC (how well the score tells a shifted field from an
in-distribution one, 0.5 = not at all) is measured against. Its CI is the trust table's
(:mod:`vsgrid.report.trust`): the same resamples of wells, then fields, of each side, so that the
command and ``trust.csv`` give one CI for one run's scores.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.data.store import open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.resampling import trust_weights
from vsgrid.files import write_table
from vsgrid.grid import DataSet, Model, runs
from vsgrid.layout import Layout
from vsgrid.model.infer import Predictor
from vsgrid.model.uncertainty import bf_batches, bottleneck_features
from vsgrid.stats import auroc, interval

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("model", "test_set", "plate", "well", "field", "index", "ood")


def _check_names(config: dict, model: str | Model, test_sets: list[str]) -> tuple[Model, list]:
    """The model and its runs on ``test_sets``, the in-distribution one first (added if absent)."""
    name = model if isinstance(model, str) else model.name
    own = {run.test_set.name: run for run in runs(config) if run.model.name == name}
    if not own:
        raise VsgridError(f"model {name!r} is not a model of the grid (e.g. lung-nontoxic.dapi.s0)")
    if unknown := [t for t in test_sets if t not in own]:
        raise VsgridError(
            f"test set {unknown[0]!r} is not one of {name}'s runs' ({', '.join(own)})"
        )
    inside = next(run for run in own.values() if run.shift == "none")
    shifted = [own[t] for t in dict.fromkeys(test_sets) if t != inside.test_set.name]
    return inside.model, [inside, *shifted]


def ood_table(
    config: dict,
    model: str | Model,
    test_sets: list[str],
    *,
    train_fields: int | None = 256,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """One row per test field of each test set (and of the model's own train set's test split,
    first): its OOD score against (up to ``train_fields`` of) the model's training fields.

    Columns :data:`TABLE_COLUMNS`; ``index`` is the field's index in its test split.
    """
    model, tested = _check_names(config, model, test_sets)
    layout = Layout.of(config)
    predictor = Predictor(layout.model_dir(model), config["device"], config["network"])
    stats, batch_size = predictor.saved["stats"]["bf"], batch_size or config["infer"]["batch_size"]
    reference = predictor.ood_reference(
        open_store(layout.store(model.train_set)), train_fields=train_fields, batch_size=batch_size
    )
    tables = []
    for run in tested:
        store = open_store(layout.store(run.test_set))
        fields = store.split_metadata("test")[["plate", "well", "field", "index"]]
        batches = bf_batches(store, "test", np.arange(len(fields)), stats, batch_size)
        scores = reference.score(
            bottleneck_features(predictor.generator, predictor.device, batches)
        )
        tables.append(fields.assign(model=model.name, test_set=run.test_set.name, ood=scores))
        log.info("%s on %s: median OOD %.2f", model.name, run.test_set.name, np.median(scores))
    return pd.concat(tables, ignore_index=True)[list(TABLE_COLUMNS)]


def per_well(table: pd.DataFrame) -> pd.DataFrame:
    """A well's OOD score: the mean over its fields (and how many there were)."""
    keys = ["model", "test_set", "plate", "well"]
    return table.groupby(keys, sort=False)["ood"].agg(ood="mean", fields="size").reset_index()


def shift_aurocs(config: dict, table: pd.DataFrame) -> pd.DataFrame:
    """Per model and shifted test set of ``table`` (:func:`ood_table`), its task, shift and the
    AUROC of its fields against the model's in-distribution test fields, with the trust table's
    CI for that run: each side resampled by its own test set's draws
    (:func:`vsgrid.evaluation.resampling.trust_weights`: wells, then fields), the 95 %
    percentile interval over the resamples with a value (:func:`vsgrid.stats.interval`)."""
    rows = []
    # a test set's draws serve every model scored on it
    draws = cache(lambda twin: trust_weights(config, twin))
    for name, fields in table.groupby("model", sort=False):
        model = Model.parse(name)
        by_set = dict(tuple(fields.groupby("test_set", sort=False)))
        inside, inside_draws = _scores_and_draws(model.train_set, by_set, draws)
        for run in runs(config):
            if run.model != model or run.shift == "none" or run.test_set.name not in by_set:
                continue
            shifted, shifted_draws = _scores_and_draws(run.test_set, by_set, draws)
            resampled = auroc(
                inside, shifted, inside_weights=inside_draws, shifted_weights=shifted_draws
            )
            low, high, _ = interval(resampled)
            rows.append(
                {
                    "model": name,
                    "test_set": run.test_set.name,
                    "task": run.task,
                    "shift": run.shift,
                    "auroc": auroc(inside, shifted),
                    "auroc_low": low,
                    "auroc_high": high,
                    "fields": len(shifted),
                }
            )
    return pd.DataFrame(rows)


def _scores_and_draws(
    test_set: DataSet, by_set: dict[str, pd.DataFrame], draws_of
) -> tuple[np.ndarray, np.ndarray]:
    """A test set's OOD scores per field and the trust table's resamples of them (``draws_of``
    its twin), which index the fields by their place in the store's test split: the rows must
    be in that order."""
    fields = by_set[test_set.name]
    draws = draws_of(test_set.twin)
    if not np.array_equal(fields["index"].to_numpy(), np.arange(draws.shape[1])):
        raise VsgridError(
            f"the OOD table's {test_set.name} rows are not its {draws.shape[1]} test fields in "
            "their order (index 0, 1, ...): the table was not written by `vsgrid ood`"
        )
    return fields["ood"].to_numpy(np.float64), draws


def write_ood(
    config: dict,
    model: str,
    test_sets: list[str],
    out: str | Path,
    *,
    train_fields: int | None = 256,
) -> str:
    """``vsgrid ood``: write the per-field table to ``out``; returns the AUROC lines to print."""
    table = ood_table(config, model, test_sets, train_fields=train_fields)
    write_table(table, out)
    lines = [
        f"{row.model} on {row.test_set} (task {row.task}, shift {row.shift}): AUROC "
        f"{row.auroc:.3f} [{row.auroc_low:.3f}, {row.auroc_high:.3f}] over {row.fields} fields"
        for row in shift_aurocs(config, table).itertuples()
    ]
    return "\n".join(lines or [f"{model}: no shifted test set was scored; nothing to compare"])
