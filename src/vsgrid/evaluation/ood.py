"""An out-of-distribution (OOD) score of bright-field fields, from the generator's own activations.

Where no real stain is acquired, nothing measures how wrong a virtual stain is; what can be
measured is how unlike the model's training fields a field looks to the model itself. A field's
*bottleneck features* are the mean and standard deviation over space of each channel at the end of
the generator's residual trunk (before upsampling). Its OOD score is the Mahalanobis distance of
those features to the features of (up to ``train_fields``, evenly spaced) fields of the training
split of the model's train set, with a Ledoit-Wolf shrinkage covariance: a few hundred fields
estimate a covariance of thousands of features only with shrinkage. A well's score is the mean
over its fields.

The model's own train set's test split is always scored too: its fields are the in-distribution
fields every shifted test set's AUROC (how well the score tells a shifted field from an
in-distribution one, 0.5 = not at all) is measured against, with a bootstrap CI over fields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from torch import nn

from vsgrid.data.pairs import normalize
from vsgrid.data.store import Store, open_store
from vsgrid.errors import VsgridError
from vsgrid.files import write_table
from vsgrid.grid import Model, runs
from vsgrid.layout import Layout
from vsgrid.model.device import Device
from vsgrid.model.infer import Predictor
from vsgrid.model.network import ResnetBlock, pad_to_multiple
from vsgrid.seeds import rng_for

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("model", "test_set", "plate", "well", "field", "index", "ood")
# A feature that does not vary over the training fields (a dead channel) is not scaled up from 0.
_FLOOR = 1e-6


def trunk(generator: nn.Module) -> tuple[nn.Sequential, int]:
    """The generator's layers up to its last residual block, and the factor they downsample by."""
    layers = generator.model
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, ResnetBlock))
    strided = [m for m in layers[:last] if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    return layers[: last + 1], 2 ** len(strided)


def bottleneck_features(
    generator: nn.Module, device: Device, bf_batches: Iterable[np.ndarray]
) -> np.ndarray:
    """Bottleneck features of normalised BF fields, batch by batch, the generator in eval mode.

    Parameters
    ----------
    bf_batches
        (B, H, W) float32 arrays, normalised as in training (:func:`vsgrid.data.pairs.normalize`).

    Returns
    -------
    numpy.ndarray
        (fields, 2 x channels) float64: each channel's mean over space, then its standard
        deviation, over the bottleneck pixels that cover the field (not its padding).
    """
    layers, multiple = trunk(generator.eval())
    pooled = []
    with torch.no_grad(), device.autocast():
        for batch in bf_batches:
            padded, (height, width) = pad_to_multiple(
                device.to(torch.from_numpy(np.asarray(batch, np.float32))[:, None]), multiple
            )
            x = layers(padded)[..., : -(-height // multiple), : -(-width // multiple)].float()
            pooled.append(torch.cat([x.mean((2, 3)), x.std((2, 3))], 1).cpu().numpy())
    if not pooled:
        return np.empty((0, 0))
    return np.concatenate(pooled).astype(np.float64)


@dataclass(frozen=True)
class OodReference:
    """The training fields' features: their mean, scale and shrunk precision matrix."""

    mean: np.ndarray
    scale: np.ndarray
    precision: np.ndarray

    @classmethod
    def fit(cls, train_features: np.ndarray) -> OodReference:
        """Ledoit-Wolf on the features standardised over the training fields: its shrinkage
        target, a multiple of the identity, then treats every feature alike whatever its units."""
        features = np.asarray(train_features, np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise VsgridError(
                f"an OOD reference needs the features of 2 or more training fields, got {features.shape}"
            )
        mean, scale = features.mean(0), np.maximum(features.std(0), _FLOOR)
        estimator = LedoitWolf(assume_centered=True).fit((features - mean) / scale)
        return cls(mean, scale, estimator.precision_)

    def score(self, features: np.ndarray) -> np.ndarray:
        """The Mahalanobis distance of each row of ``features`` to the training fields."""
        centred = (np.asarray(features, np.float64) - self.mean) / self.scale
        squared = np.einsum("ij,jk,ik->i", centred, self.precision, centred)
        return np.sqrt(np.maximum(squared, 0.0))


def evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    """All of ``n`` fields, or ``limit`` of them evenly spaced (a split is ordered by plate)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).astype(int))


def _bf_batches(
    store: Store, split: str, picks: np.ndarray, stats: dict, batch_size: int
) -> Iterator[np.ndarray]:
    """The normalised BF of the picked fields of a split, ``batch_size`` at a time (memory stays
    one batch, whatever the split)."""
    images, bf = store.images(split), store.channel_index("bf")
    for start in range(0, len(picks), batch_size):
        chosen = picks[start : start + batch_size]
        yield normalize(np.stack([images[int(i), bf] for i in chosen]), stats)


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
    if train_fields is not None and train_fields < 2:
        raise VsgridError(f"train_fields is {train_fields}: a reference needs 2 fields or more")
    model, tested = _check_names(config, model, test_sets)
    layout = Layout.of(config)
    predictor = Predictor(layout.model_dir(model), config["device"], config["network"])
    stats, batch_size = predictor.saved["stats"]["bf"], batch_size or config["infer"]["batch_size"]

    def features(store: Store, split: str, picks: np.ndarray) -> np.ndarray:
        batches = _bf_batches(store, split, picks, stats, batch_size)
        return bottleneck_features(predictor.generator, predictor.device, batches)

    train = open_store(layout.store(model.train_set))
    n_train = train.images("train").shape[0]
    reference = OodReference.fit(features(train, "train", evenly_spaced(n_train, train_fields)))
    tables = []
    for run in tested:
        store = open_store(layout.store(run.test_set))
        fields = store.split_metadata("test")[["plate", "well", "field", "index"]]
        scores = reference.score(features(store, "test", np.arange(len(fields))))
        tables.append(fields.assign(model=model.name, test_set=run.test_set.name, ood=scores))
        log.info("%s on %s: median OOD %.2f", model.name, run.test_set.name, np.median(scores))
    return pd.concat(tables, ignore_index=True)[list(TABLE_COLUMNS)]


def per_well(table: pd.DataFrame) -> pd.DataFrame:
    """A well's OOD score: the mean over its fields (and how many there were)."""
    keys = ["model", "test_set", "plate", "well"]
    return table.groupby(keys, sort=False)["ood"].agg(ood="mean", fields="size").reset_index()


def auroc(
    in_scores: np.ndarray,
    shifted_scores: np.ndarray,
    *,
    resamples: int = 1000,
    rng: np.random.Generator | None = None,
) -> tuple[float, float, float]:
    """How well the OOD score ranks shifted fields above in-distribution ones: the AUROC, and
    its 95 % percentile CI over ``resamples`` bootstrap resamples of the fields.

    Each side is resampled on its own, so every resample holds both and has an AUROC (the CI
    needs no rule for resamples without a value).
    """
    in_scores, shifted_scores = np.asarray(in_scores), np.asarray(shifted_scores)
    if not len(in_scores) or not len(shifted_scores):
        raise VsgridError("an AUROC needs in-distribution and shifted fields, one at least of each")
    rng = rng or np.random.default_rng(0)
    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(shifted_scores))]
    value = roc_auc_score(labels, np.r_[in_scores, shifted_scores])
    resampled = [
        roc_auc_score(
            labels,
            np.r_[
                rng.choice(in_scores, len(in_scores)),
                rng.choice(shifted_scores, len(shifted_scores)),
            ],
        )
        for _ in range(resamples)
    ]
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(value), float(low), float(high)


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
            value, low, high = auroc(
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
