"""The grid's results as tidy tables: per run, and per (model type, test set) against its baseline.

A *model type* is a model without its seed (``lung-nontoxic.dapi``). Its value on a test set is
the mean over seeds of the runs' means over test images; its *delta* is that value minus the
baseline's (DESIGN.md: the model type trained on the test set's distribution, or the toxic model
type of the training cell type), with a paired bootstrap confidence interval over test images:
each resample draws the same test images for the run and for its baseline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.grid import Run, baseline_of, runs
from vsgrid.seeds import rng_for
from vsgrid.store import write_table_atomically

IMAGE_METRICS = ("ssim", "psnr", "f1", "jaccard", "precision", "recall")
LEVEL = {"ssim": "pixel", "psnr": "pixel", "f1": "instance", "jaccard": "instance", "precision": "instance", "recall": "instance", "nmae": "feature", "match_rate": "feature"}
BASELINES = ("test_distribution", "train_celltype")


def run_dir(results_dir: str | Path, run: Run) -> Path:
    return Path(results_dir) / "runs" / run.model.name / run.test_set.name


def _bootstrap_indices(n_images: int, n_resamples: int, seed: int, test_set: str) -> np.ndarray:
    return rng_for(seed, "bootstrap", test_set).integers(0, n_images, size=(n_resamples, n_images))


class RunResult:
    """One run's per-image values, and its score (or bootstrap replicates) per metric."""

    def __init__(self, directory: Path):
        self.images = pd.read_parquet(directory / "images.parquet")
        self.differences = pd.read_parquet(directory / "feature_differences.parquet")
        self.scores = pd.read_parquet(directory / "scores.parquet")

    def metrics(self) -> list[str]:
        return [m for m in IMAGE_METRICS if m in self.images] + ["nmae", "match_rate"]

    def replicates(self, metric: str, indices: np.ndarray) -> np.ndarray:
        """The run's score on each resample of test images (rows of ``indices``)."""
        if metric in IMAGE_METRICS:
            values = self.images.sort_values("image")[metric].to_numpy(np.float64)
            return values[indices].mean(axis=1)
        n_images = indices.shape[1]
        if metric == "match_rate":
            counts = self.differences.drop_duplicates("image").set_index("image").reindex(range(n_images), fill_value=0)
            return counts["n_matched"].to_numpy()[indices].sum(1) / np.maximum(counts["n_real"].to_numpy()[indices].sum(1), 1)
        per_image = self.differences.pivot_table(index="image", columns="feature", values=["abs_diff_sum", "n_pairs"], aggfunc="sum").sort_index()
        sums = per_image["abs_diff_sum"].reindex(range(n_images), fill_value=0).to_numpy()
        pairs = per_image["n_pairs"].reindex(range(n_images), fill_value=0).to_numpy()
        std = self.differences.drop_duplicates("feature").set_index("feature")["real_std"].reindex(per_image["abs_diff_sum"].columns).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            nmae = sums[indices].sum(1) / pairs[indices].sum(1) / std  # (resamples, features)
        return np.nanmean(np.where(np.isfinite(nmae), nmae, np.nan), axis=1)

    def value(self, metric: str) -> float:
        row = self.scores[(self.scores["metric"] == metric) & (self.scores["feature"] == "")]
        return float(row["value"].iloc[0])


def run_table(config: dict, results_dir: str | Path) -> pd.DataFrame:
    """Every run's score per metric, long: one row per (run, metric, feature)."""
    frames = []
    for run in runs(config):
        scores = pd.read_parquet(run_dir(results_dir, run) / "scores.parquet")
        frames.append(
            scores.assign(
                run=run.name, model=run.model.name, model_type=run.model.model_type, task=run.task, shift=run.shift,
                stain=run.model.stain, seed=run.model.seed, train_set=run.model.train_set.name, test_set=run.test_set.name,
            )
        )
    columns = ["run", "model", "model_type", "task", "shift", "stain", "seed", "train_set", "test_set", "level", "metric", "feature", "value"]
    return pd.concat(frames, ignore_index=True)[columns]


def delta_table(config: dict, results_dir: str | Path, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (model type, test set, metric) and baseline kind: value, baseline, delta and its 95 % CI."""
    all_runs = runs(config)
    kept = {(r.model.train_set, r.test_set) for r in all_runs}
    by_model_type: dict[tuple, list[Run]] = {}
    for run in all_runs:
        by_model_type.setdefault((run.model.train_set, run.model.stain, run.test_set), []).append(run)
    loaded: dict[str, RunResult] = {}
    resampled: dict[tuple[str, str], np.ndarray] = {}

    def result(run: Run) -> RunResult:
        if run.name not in loaded:
            loaded[run.name] = RunResult(run_dir(results_dir, run))
        return loaded[run.name]

    def replicates(run: Run, metric: str, indices: np.ndarray) -> np.ndarray:
        # Resamples depend on the test set alone, and a baseline run serves many model types.
        if (run.name, metric) not in resampled:
            resampled[(run.name, metric)] = result(run).replicates(metric, indices)
        return resampled[(run.name, metric)]

    rows = []
    for (train_set, stain, test_set), seeds in by_model_type.items():
        first = result(seeds[0])
        indices = _bootstrap_indices(len(first.images), n_resamples, seed, test_set.name)
        for kind in BASELINES:
            base_set = baseline_of(train_set, test_set, kind)
            if (base_set, test_set) not in kept:
                continue
            base_runs = by_model_type[(base_set, stain, test_set)]
            for metric in first.metrics():
                value = float(np.mean([result(r).value(metric) for r in seeds]))
                baseline = float(np.mean([result(r).value(metric) for r in base_runs]))
                spread = np.mean([replicates(r, metric, indices) for r in seeds], axis=0) - np.mean(
                    [replicates(r, metric, indices) for r in base_runs], axis=0
                )
                low, high = np.nanpercentile(spread, [2.5, 97.5]) if np.isfinite(spread).any() else (np.nan, np.nan)
                rows.append(
                    {
                        "baseline_kind": kind, "task": seeds[0].task, "shift": seeds[0].shift, "stain": stain,
                        "train_set": train_set.name, "test_set": test_set.name, "model_type": seeds[0].model.model_type,
                        "baseline_train_set": base_set.name, "level": LEVEL[metric], "metric": metric,
                        "value": value, "baseline": baseline, "delta": value - baseline, "ci_low": float(low), "ci_high": float(high),
                        "seeds": len(seeds),
                    }
                )
    return pd.DataFrame(rows)


def task_table(deltas: pd.DataFrame) -> pd.DataFrame:
    """Mean delta per (baseline kind, task, stain, metric) over the task's shifted pairs."""
    shifted = deltas[deltas["train_set"] != deltas["baseline_train_set"]]
    return shifted.groupby(["baseline_kind", "task", "stain", "level", "metric"], as_index=False).agg(
        delta=("delta", "mean"), pairs=("delta", "size"), worst=("delta", "min"), best=("delta", "max")
    )


def write_tables(config: dict, results_dir: str | Path, out_dir: str | Path, n_resamples: int) -> dict[str, Path]:
    """All tables, Parquet and CSV, into ``out_dir``: runs, deltas (combined and one per level),
    tasks and features."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    deltas = delta_table(config, results_dir, n_resamples, config["evaluation"]["seed"])
    per_run = run_table(config, results_dir)
    tables = {
        "runs": per_run,
        "deltas": deltas,
        **{f"deltas_{level}": deltas[deltas["level"] == level] for level in ("pixel", "instance", "feature")},
        "tasks": task_table(deltas),
        "features": per_run[(per_run["metric"] == "nmae") & (per_run["feature"] != "")],  # N-MAE per selected feature (Figure 4)
    }
    written = {}
    for name, table in tables.items():
        for suffix in (".parquet", ".csv"):
            path = out / f"{name}{suffix}"
            write_table_atomically(table.reset_index(drop=True), path)
            written[f"{name}{suffix}"] = path
    return written
