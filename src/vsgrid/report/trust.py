"""The trust table: what the models say of their predictions, checked against the real stain.

From each run's per-image table (its ``tta``, ``dropout`` and ``ood`` columns,
:mod:`vsgrid.evaluation.trust`) with, for a model type of two seeds or more, the spread over its seeds (``seeds``,
:func:`vsgrid.evaluation.trust.seed_spread`), and its per-image errors (1 - SSIM, 1 - F1 for dapi
and fitc, N-MAE: each image's value of the run's own score,
:func:`vsgrid.evaluation.scoring.score` with the image alone weighted), one row per

- run, uncertainty and error: ``spearman``, their rank correlation over the run's images; and
  over its matched cells, each cell's mean TTA spread, and with TTA samples the spread of its
  features over them (``feature spread``), against its N-MAE (``cell nmae``, the mean over the
  selected features of |real - predicted| in real SDs; its ``images`` column then counts cells);
- model, uncertainty and error, test set ``all``: the same over every image of every run of the
  model, the question a team asks of a model whose plates hold shifts it does not know of;
- shifted run: ``auroc`` of its images' OOD scores against the model's in-distribution test
  images', and the same of the no-model baseline (``bf texture``,
  :mod:`vsgrid.evaluation.input_ood`), which the OOD score must beat to earn its place;
- model and kind of shift (test set ``all``, ``shift`` the kind), where it has two runs or more
  of it: the same AUROCs over those runs' images together, e.g. how well a model's OOD score finds
  the new cell types it may meet.

Every CI is the 95 % percentile interval over the grid's bootstrap resamples of the test images
(the wells, then their fields, :func:`vsgrid.evaluation.resampling.trust_weights`): the first
``evaluation.trust_resamples`` of the deltas' draws; an AUROC draws each side from its own test
set, as ``vsgrid ood`` does (:func:`vsgrid.evaluation.ood.shift_aurocs`). The per-cell
Spearman reads at most ``evaluation.trust_cells`` cells of a run, a seeded random subset, so that
a paper run's million cells cost what 20,000 do.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.evaluation.input_ood import InputOod
from vsgrid.evaluation.resampling import trust_weights
from vsgrid.evaluation.scoring import RunValues, score
from vsgrid.evaluation.stacks import blocks
from vsgrid.evaluation.trust import UNCERTAINTIES
from vsgrid.files import read_table, write_table
from vsgrid.grid import Run, runs, seed_groups
from vsgrid.layout import TABLE_FORMATS, TRUST_TABLE, Layout, table_path
from vsgrid.seeds import rng_for
from vsgrid.stats import auroc, interval, spearman

log = logging.getLogger(__name__)

CELL_ERROR = "cell nmae"  # each matched cell's N-MAE over the selected features
# What a run's cells table says of each matched cell (column: uncertainty): its mean TTA spread,
# and with TTA samples the spread of its selected features over them (in real SDs).
CELL_UNCERTAINTIES = {"tta": "tta", "feature_spread": "feature spread"}
# Per-image errors: the score each is read from, and whether it is 1 - the score (a loss).
ERRORS = {"1 - ssim": ("ssim", True), "1 - f1": ("f1", True), "nmae": ("nmae", False)}
COLUMNS = [
    "model",
    "model_type",
    "stain",
    "seed",
    "train_set",
    "test_set",
    "task",
    "shift",
    "statistic",
    "uncertainty",
    "error",
    "value",
    "ci_low",
    "ci_high",
    "undefined_share",
    "images",
]
ALL = "all"  # the test set of a model's rows over all its runs (or all of a kind of shift)
SEEDS = "seeds"  # the spread over a model type's seeds, where it has two or more
BASELINE = "bf texture"  # the OOD score's no-model baseline


def image_errors(values: RunValues, *, block: int = 256) -> dict[str, np.ndarray]:
    """Each image's errors (:data:`ERRORS` the run has), NaN for a flagged image: the run's own
    scores with one image weighted at a time, ``block`` images per call."""
    errors = {}
    for name, (metric, loss) in ERRORS.items():
        if metric not in values.metrics:
            continue
        n = values.n_images
        # images a to b, each alone: rows a..b-1 of the identity, never the whole n x n of it
        value = np.concatenate(
            [score(metric, values, np.eye(b - a, n, k=a)) for a, b in blocks(n, block)]
            or [np.empty(0)]
        )
        errors[name] = 1.0 - value if loss else value
    return errors


class _RunImages:
    """A run's per-image uncertainties and errors, and its test images' resample draws."""

    def __init__(self, config: dict, run: Run, draws: np.ndarray, *, seeded: bool):
        layout = Layout.of(config)
        images = read_table(layout.run_table(run.model, run.test_set, "images"))
        images = images.sort_values("image")
        self.run, self.draws = run, draws
        self.said = {u: images[u].to_numpy(np.float64) for u in UNCERTAINTIES if u in images}
        if seeded:
            spread = read_table(layout.seed_spread(run.model.model_type, run.test_set))
            self.said[SEEDS] = spread.sort_values("image")["seeds"].to_numpy(np.float64)
        differences = read_table(layout.run_table(run.model, run.test_set, "feature_differences"))
        self.errors = image_errors(RunValues.from_tables(images, differences))
        self.cells = read_table(layout.run_table(run.model, run.test_set, "cells"))


def _row(
    run: Run,
    test_set: str,
    statistic: str,
    uncertainty: str,
    error: str,
    value: float,
    resampled: np.ndarray,
    images: int,
    *,
    shift: str | None = None,
) -> dict:
    """A row of the table; ``shift``: the kind of shift a row over all of a model's runs of that
    kind pools."""
    low, high, share = interval(np.asarray(resampled, np.float64))
    model = run.model
    return dict(
        zip(
            COLUMNS,
            (
                model.name,
                model.model_type,
                model.stain,
                model.seed,
                model.train_set.name,
                test_set,
                run.task if test_set != ALL else -1,
                shift or (run.shift if test_set != ALL else ALL),
                statistic,
                uncertainty,
                error,
                value,
                low,
                high,
                share,
                images,
            ),
        )
    )


def _spearman_rows(run: Run, test_set: str, parts: list[_RunImages]) -> list[dict]:
    """Spearman of each uncertainty with each error over ``parts`` (runs of one model) together,
    each part resampled by its own test images' draws."""
    rows = []
    weights = np.hstack([p.draws for p in parts])
    for u in [u for u in parts[0].said if all(u in p.said for p in parts)]:
        for e in parts[0].errors:
            x = np.concatenate([p.said[u] for p in parts])
            y = np.concatenate([p.errors[e] for p in parts])
            rows.append(
                _row(
                    run,
                    test_set,
                    "spearman",
                    u,
                    e,
                    spearman(x, y),
                    spearman(x, y, weights=weights),
                    len(x),
                )
            )
    return rows


def _cell_rows(part: _RunImages, most: int, seed: int) -> list[dict]:
    """Spearman of what the model says of each matched cell (:data:`CELL_UNCERTAINTIES`) with its
    N-MAE over a run's matched cells (``most`` of them at random where it has more), each
    resample drawing the cells of the images it draws, as often."""
    cells = part.cells.dropna(subset=["nmae"])
    if len(cells) > most:
        kept = rng_for(seed, "trust cells", part.run.name).choice(len(cells), most, replace=False)
        cells = cells.iloc[np.sort(kept)]
    rows, run = [], part.run
    for column, uncertainty in CELL_UNCERTAINTIES.items():
        said = cells.dropna(subset=[column]) if column in cells else cells.iloc[:0]
        if len(said) < 3:
            continue
        spread, error = said[column].to_numpy(float), said["nmae"].to_numpy(float)
        resampled = spearman(spread, error, weights=part.draws[:, said["image"].to_numpy(int)])
        rows.append(
            _row(
                run,
                run.test_set.name,
                "spearman",
                uncertainty,
                CELL_ERROR,
                spearman(spread, error),
                resampled,
                len(said),
            )
        )
    return rows


def _auroc_rows(inside: _RunImages, parts: list[_RunImages], baseline: InputOod) -> list[dict]:
    """AUROC of the OOD score and of the no-model baseline against the model's in-distribution
    images (``inside``), for each shifted run and for each kind of shift the model meets in two
    runs or more, those runs' images together, each run resampled by its own test images' draws."""
    train_set = inside.run.model.train_set
    scores = {
        "ood": lambda part: part.said.get("ood"),
        BASELINE: lambda part: baseline.scores(train_set, part.run.test_set),
    }
    shifted = [p for p in parts if p.run.shift != "none"]
    kinds = {p.run.shift: [q for q in shifted if q.run.shift == p.run.shift] for p in shifted}
    groups = [(p.run.test_set.name, None, [p]) for p in shifted] + [
        (ALL, kind, group) for kind, group in kinds.items() if len(group) > 1
    ]
    rows = []
    for name, of in scores.items():
        theirs = of(inside)
        for test_set, kind, group in groups:
            found = [of(p) for p in group]
            if theirs is None or any(f is None for f in found):
                continue
            ours = np.concatenate(found)
            resampled = auroc(
                theirs,
                ours,
                inside_weights=inside.draws,
                shifted_weights=np.hstack([p.draws for p in group]),
            )
            value = auroc(theirs, ours)
            rows.append(
                _row(
                    group[0].run,
                    test_set,
                    "auroc",
                    name,
                    "",
                    value,
                    resampled,
                    len(ours),
                    shift=kind,
                )
            )
    return rows


def trust_table(config: dict) -> pd.DataFrame:
    """The trust table of the grid (see the module docstring); empty where no prediction says
    anything of itself (predictions of an older vsgrid)."""
    settings = config["evaluation"]
    draws = cache(lambda twin: trust_weights(config, twin))
    seeded = seed_groups(config)
    by_model: dict[str, list[_RunImages]] = {}
    for run in runs(config):
        key = (run.model.model_type, run.test_set.name)
        found = _RunImages(config, run, draws(run.test_set.twin), seeded=key in seeded)
        if found.said:
            by_model.setdefault(run.model.name, []).append(found)
    rows, baseline = [], InputOod(config)
    for parts in by_model.values():
        for part in parts:
            rows += _spearman_rows(part.run, part.run.test_set.name, [part])
            rows += _cell_rows(part, settings["trust_cells"], settings["seed"])
        inside = next((p for p in parts if p.run.shift == "none"), None)
        if inside is not None:
            rows += _auroc_rows(inside, parts, baseline)
        rows += _spearman_rows(parts[0].run, ALL, parts)
    return pd.DataFrame(rows, columns=COLUMNS)


def write_trust(config: dict, out_dir: str | Path) -> dict[str, Path]:
    """The trust table, Parquet and CSV, into ``out_dir``."""
    table = trust_table(config)
    written = {}
    for fmt in TABLE_FORMATS:
        written[f"{TRUST_TABLE}.{fmt}"] = table_path(out_dir, TRUST_TABLE, fmt)
        write_table(table, written[f"{TRUST_TABLE}.{fmt}"])
    for row in table[table["test_set"] == ALL].itertuples():
        what = (
            f"Spearman of {row.uncertainty} with {row.error}"
            if row.statistic == "spearman"
            else f"AUROC of {row.uncertainty} on the {row.shift} shift"
        )
        log.info(
            "%s: %s %.2f [%.2f, %.2f] over %d images",
            row.model,
            what,
            row.value,
            row.ci_low,
            row.ci_high,
            row.images,
        )
    return written
