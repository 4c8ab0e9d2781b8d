"""The grid's results as tidy tables: per run, and per (model type, test set) against its baseline.

A *model type* is a model without its seed (``lung-nontoxic.dapi``). Its value on a test set is
the mean over seeds of the runs' scores; its *delta* is that value minus the baseline's (the model
type trained on the test set's distribution, or the toxic model type of the training cell type),
with a 95 % bootstrap confidence interval, ``evaluation.ci``:

- ``hierarchical`` (default): each resample draws the seeds of the model type and of the baseline
  (with replacement), then the test set's wells (or plates, ``evaluation.ci_unit``), then the
  fields of each drawn well. Seeds vary with training, wells with culture, focus and dose; fields
  of one well share them, so a CI over fields alone is too narrow. With a single seed on a side,
  training variation cannot be counted and the ``ci_levels`` column says so;
- ``images``: test images drawn with replacement (what earlier versions reported).

Model and baseline are always resampled on the same images, by the same draws
(:func:`vsgrid.evaluation.resampling.resampling_weights`). Every replicate is computed by
:func:`vsgrid.evaluation.scoring.score`, the function that computed the run's value.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from vsgrid.evaluation.metrics import LEVEL, LOWER_IS_BETTER
from vsgrid.evaluation.resampling import resampling_weights
from vsgrid.evaluation.scoring import RunValues, score
from vsgrid.files import read_table, write_table, write_text
from vsgrid.grid import DataSet, Run, baseline_of, runs
from vsgrid.layout import GRID_TABLES, OUTCOME, TABLE_FORMATS, Layout, table_path
from vsgrid.report.outcome import outcome_text
from vsgrid.seeds import rng_for
from vsgrid.stats import interval

log = logging.getLogger(__name__)

BASELINES = ("test_distribution", "train_celltype")


def run_table(config: dict) -> pd.DataFrame:
    """Every run's score per metric, long: one row per (run, metric, feature)."""
    layout = Layout.of(config)
    frames = []
    for run in runs(config):
        scores = read_table(layout.run_table(run.model, run.test_set, "scores"))
        frames.append(
            scores.assign(
                run=run.name,
                model=run.model.name,
                model_type=run.model.model_type,
                task=run.task,
                shift=run.shift,
                stain=run.model.stain,
                seed=run.model.seed,
                train_set=run.model.train_set.name,
                test_set=run.test_set.name,
            )
        )
    columns = [
        "run",
        "model",
        "model_type",
        "task",
        "shift",
        "stain",
        "seed",
        "train_set",
        "test_set",
        "level",
        "metric",
        "feature",
        "value",
    ]
    return pd.concat(frames, ignore_index=True)[columns]


class Comparison(NamedTuple):
    """The runs (seeds) of one model type on one test set against the runs of its baseline on the
    same images: on that test set, or for a control on the test set it re-acquires (its twin).
    ``kind`` is the rows' ``baseline_kind``."""

    kind: str
    runs: list[Run]
    baseline_runs: list[Run]


def delta_table(config: dict) -> pd.DataFrame:
    """Per (model type, test set, metric) and baseline kind: value, baseline, delta and its 95 % CI."""
    # Runs by the test set's twin, then by test set and model type.
    grouped: dict[DataSet, dict[DataSet, dict[tuple, list[Run]]]] = {}
    for run in runs(config):
        by_test_set = grouped.setdefault(run.test_set.twin, {}).setdefault(run.test_set, {})
        by_test_set.setdefault((run.model.train_set, run.model.stain), []).append(run)
    comparisons = []
    for twin, test_sets in grouped.items():
        for test_set, model_types in test_sets.items():
            for (train_set, stain), seeds in model_types.items():
                for kind in BASELINES:
                    base_runs = test_sets.get(twin, {}).get(
                        (baseline_of(train_set, test_set, kind), stain)
                    )
                    if base_runs:
                        comparisons.append(Comparison(kind, seeds, base_runs))
    return run_deltas(config, comparisons)


def run_deltas(config: dict, comparisons: list[Comparison]) -> pd.DataFrame:
    """The deltas of these runs: a row per comparison and metric, with the CI ``evaluation.ci``.

    One set of test images (a test set and its controls) at a time: its runs are read once, scored
    and resampled, and dropped before the next one, so memory does not grow with the number of
    runs (a baseline run serves every comparison it is in).
    """
    layout, settings = Layout.of(config), config["evaluation"]
    by_twin: dict[DataSet, list[Comparison]] = {}
    for comparison in comparisons:
        by_twin.setdefault(comparison.runs[0].test_set.twin, []).append(comparison)
    rows = []
    for twin, group in by_twin.items():
        weights = resampling_weights(config, twin, settings["bootstrap_resamples"])
        involved = {r.name: r for c in group for r in (*c.runs, *c.baseline_runs)}
        scored = _score_runs(layout, list(involved.values()), weights)
        for kind, seeds, base_runs in group:
            rows += _delta_rows(kind, seeds, base_runs, scored, settings)
    return pd.DataFrame(rows)


def _score_runs(
    layout: Layout, test_set_runs: list[Run], weights: np.ndarray
) -> dict[str, dict[str, tuple[float, np.ndarray]]]:
    """Each run's value and its replicate in each resample, per metric."""
    scored = {}
    for run in test_set_runs:
        values = RunValues.read(layout.run_dir(run.model, run.test_set))
        everyone = np.ones(values.n_images)
        scored[run.name] = {
            m: (float(score(m, values, everyone)), score(m, values, weights))
            for m in values.metrics
        }
    return scored


def _mean_over_seeds(replicates: np.ndarray, draws: np.ndarray | None) -> np.ndarray:
    """(seeds, resamples) -> (resamples,): the mean over the seeds, or over those drawn for each resample."""
    if draws is None:
        return replicates.mean(0)
    return replicates[draws, np.arange(replicates.shape[1])[:, None]].mean(1)


def _delta_rows(
    kind: str, seeds: list[Run], base_runs: list[Run], scored: dict, settings: dict
) -> list[dict]:
    """A model type against its baseline on one test set, a row per metric: the mean over seeds
    of each side's values, their difference, and its percentile interval over the resamples."""
    first, hierarchical = seeds[0], settings["ci"] == "hierarchical"
    rng = rng_for(
        settings["seed"],
        "seeds",
        first.test_set.name,
        first.model.model_type,
        base_runs[0].model.model_type,
    )
    n_resamples = settings["bootstrap_resamples"]
    # The same seed draws for every metric: one resample is one imagined repetition of the study.
    draws = [
        rng.integers(0, len(side), (n_resamples, len(side)))
        if hierarchical and len(side) > 1
        else None
        for side in (seeds, base_runs)
    ]
    levels = f"seeds, {settings['ci_unit']}s, fields" if hierarchical else "images"
    if hierarchical and min(len(seeds), len(base_runs)) == 1:
        levels = f"{settings['ci_unit']}s, fields (a single seed: training variation not counted)"
    rows = []
    for metric in scored[first.name]:
        if any(metric not in scored[r.name] for r in (*seeds, *base_runs)):
            continue  # e.g. the CRPS where one side's predictions carry no TTA samples
        model_scores = [scored[r.name][metric] for r in seeds]
        base_scores = [scored[r.name][metric] for r in base_runs]
        value = float(np.mean([v for v, _ in model_scores]))
        baseline = float(np.mean([v for v, _ in base_scores]))
        spread = _mean_over_seeds(
            np.array([r for _, r in model_scores]), draws[0]
        ) - _mean_over_seeds(np.array([r for _, r in base_scores]), draws[1])
        low, high, _ = interval(spread)
        rows.append(
            {
                "baseline_kind": kind,
                "task": first.task,
                "shift": first.shift,
                "stain": first.model.stain,
                "train_set": first.model.train_set.name,
                "test_set": first.test_set.name,
                "model_type": first.model.model_type,
                "baseline_train_set": base_runs[0].model.train_set.name,
                "level": LEVEL[metric],
                "metric": metric,
                "value": value,
                "baseline": baseline,
                "delta": value - baseline,
                "ci_low": float(low),
                "ci_high": float(high),
                "seeds": len(seeds),
                "ci": settings["ci"],
                "ci_levels": levels,
            }
        )
    return rows


def task_table(deltas: pd.DataFrame) -> pd.DataFrame:
    """Mean delta per (baseline kind, task, stain, metric) over the task's shifted pairs, with the
    worst and the best delta in each metric's own direction (for N-MAE, lower is better)."""
    shifted = deltas[deltas["train_set"] != deltas["baseline_train_set"]]
    table = shifted.groupby(
        ["baseline_kind", "task", "stain", "level", "metric"], as_index=False
    ).agg(
        delta=("delta", "mean"),
        pairs=("delta", "size"),
        lowest=("delta", "min"),
        highest=("delta", "max"),
    )
    lower_better = table["metric"].isin(LOWER_IS_BETTER)
    table["worst"] = np.where(lower_better, table["highest"], table["lowest"])
    table["best"] = np.where(lower_better, table["lowest"], table["highest"])
    return table.drop(columns=["lowest", "highest"])


def write_tables(config: dict, out_dir: str | Path) -> dict[str, Path]:
    """All tables, Parquet and CSV, into ``out_dir``: runs, deltas (combined and one per level),
    tasks and features; and ``outcome.txt``, the grid's outcome in a few lines."""
    out = Path(out_dir)
    deltas = delta_table(config)
    per_run = run_table(config)
    tables = {
        "runs": per_run,
        "deltas": deltas,
        **{
            f"deltas_{level}": deltas[deltas["level"] == level]
            for level in ("pixel", "instance", "feature")
        },
        "tasks": task_table(deltas),
        "features": per_run[
            (per_run["metric"] == "nmae") & (per_run["feature"] != "")
        ],  # N-MAE per selected feature (Figure 4)
    }
    written = {}
    for name in GRID_TABLES:
        for fmt in TABLE_FORMATS:
            written[f"{name}.{fmt}"] = table_path(out, name, fmt)
            write_table(tables[name].reset_index(drop=True), written[f"{name}.{fmt}"])
    written[OUTCOME] = write_text(outcome_text(per_run, deltas), out / OUTCOME)
    log.info("wrote %d tables under %s", len(written), out)
    return written
