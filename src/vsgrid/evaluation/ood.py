"""Out-of-distribution (OOD) scores of a model's test fields, and how well they find each shift.

The score is :mod:`vsgrid.model.uncertainty`'s: the Mahalanobis distance of a field's pooled
bottleneck activations to the model's training fields. Inference writes it into every prediction;
``vsgrid ood`` computes it here without predicting, for any of the model's runs. A well's score
is the mean over its fields.

The model's own train set's test split is always scored too: its fields are the in-distribution
fields every shifted test set's AUROC (how well the score tells a shifted field from an
in-distribution one, 0.5 = not at all) is measured against, with a bootstrap CI over fields.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.data.store import open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.trust import auroc
from vsgrid.files import write_table
from vsgrid.grid import Model, runs
from vsgrid.layout import Layout
from vsgrid.model.infer import Predictor
from vsgrid.model.uncertainty import bf_batches, bottleneck_features
from vsgrid.seeds import rng_for

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


def auroc_interval(
    in_scores: np.ndarray,
    shifted_scores: np.ndarray,
    *,
    resamples: int = 1000,
    rng: np.random.Generator | None = None,
) -> tuple[float, float, float]:
    """How well the OOD score ranks shifted fields above in-distribution ones: the AUROC
    (:func:`vsgrid.evaluation.trust.auroc`), and its 95 % percentile CI over ``resamples``
    bootstrap resamples of the fields.

    Each side is resampled on its own, so every resample holds both and has an AUROC (the CI
    needs no rule for resamples without a value).
    """
    in_scores, shifted_scores = np.asarray(in_scores), np.asarray(shifted_scores)
    if not len(in_scores) or not len(shifted_scores):
        raise VsgridError("an AUROC needs in-distribution and shifted fields, one at least of each")
    rng = rng or np.random.default_rng(0)
    resampled = [
        auroc(
            rng.choice(in_scores, len(in_scores)), rng.choice(shifted_scores, len(shifted_scores))
        )
        for _ in range(resamples)
    ]
    low, high = np.percentile(resampled, [2.5, 97.5])
    return auroc(in_scores, shifted_scores), float(low), float(high)


def shift_aurocs(config: dict, table: pd.DataFrame) -> pd.DataFrame:
    """Per model and shifted test set of ``table`` (:func:`ood_table`), its task, shift and the
    AUROC of its fields against the model's in-distribution test fields, with the CI."""
    settings, rows = config["evaluation"], []
    for name, fields in table.groupby("model", sort=False):
        model = Model.parse(name)
        by_set = dict(tuple(fields.groupby("test_set", sort=False)))
        inside = by_set[model.train_set.name]["ood"].to_numpy()
        for run in runs(config):
            if run.model != model or run.shift == "none" or run.test_set.name not in by_set:
                continue
            rng = rng_for(settings["seed"], "ood", name, run.test_set.name)
            shifted = by_set[run.test_set.name]["ood"].to_numpy()
            value, low, high = auroc_interval(
                inside, shifted, resamples=settings["bootstrap_resamples"], rng=rng
            )
            rows.append(
                {
                    "model": name,
                    "test_set": run.test_set.name,
                    "task": run.task,
                    "shift": run.shift,
                    "auroc": value,
                    "auroc_low": low,
                    "auroc_high": high,
                    "fields": len(shifted),
                }
            )
    return pd.DataFrame(rows)


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
