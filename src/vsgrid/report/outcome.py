"""The grid's outcome in a few lines of text: what ``make quick`` prints and the report opens with.

First the in-distribution quality of each stain (runs whose test set is their training
distribution, mean over data sets and seeds), then, per task and stain, the mean delta against
the test set's own baseline and how many of those deltas have a 95 % CI that excludes 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUALITY = ("ssim", "psnr", "f1", "nmae")
DELTAS = ("ssim", "f1", "nmae")


def _cell(deltas: pd.Series, low: pd.Series, high: pd.Series) -> str:
    """``mean (k/n)``: the mean delta and how many of the n deltas have a CI excluding 0."""
    if deltas.empty:
        return "-"
    excluding = int(((low > 0) | (high < 0)).sum())
    return f"{deltas.mean():+.3f} ({excluding}/{len(deltas)})"


def in_distribution(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean score per stain (rows) and metric (columns) over the in-distribution runs."""
    own = runs[(runs["shift"] == "none") & (runs["feature"] == "") & runs["metric"].isin(QUALITY)]
    table = own.pivot_table(index="stain", columns="metric", values="value", aggfunc="mean")
    return table.reindex(columns=[m for m in QUALITY if m in table.columns])


def counted(group: pd.DataFrame) -> str:
    """What the CIs of a (task, stain) group count, in a few words: a CI over one seed a side
    counts no training variation (task 0 compares the same models, so it has none to count)."""
    if (group["task"] == 0).all():
        return "same models"
    if (group["ci"] == "images").all():
        return "images only"
    if group["ci_levels"].str.contains("single seed").any():
        return "1 seed: not training"
    return f"{int(group['seeds'].min())}+ seeds"


def task_deltas(deltas: pd.DataFrame) -> pd.DataFrame:
    """Per (task, shift, stain), each metric's mean delta against the test set's own baseline,
    with the count of CIs excluding 0 (``+0.012 (3/4)``) and what those CIs count."""
    shifted = deltas[
        (deltas["baseline_kind"] == "test_distribution")
        & (deltas["shift"] != "none")
        & deltas["metric"].isin(DELTAS)
    ]
    rows = []
    for (task, shift, stain), group in shifted.groupby(["task", "shift", "stain"], sort=True):
        by_metric = {m: g for m, g in group.groupby("metric")}
        row = {"task": task, "shift": shift, "stain": stain}
        for metric in DELTAS:
            g = by_metric.get(metric, group.iloc[:0])
            row[f"delta {metric}"] = _cell(g["delta"], g["ci_low"], g["ci_high"])
        row["CIs count"] = counted(group)
        rows.append(row)
    return pd.DataFrame(rows)


def outcome_text(runs: pd.DataFrame, deltas: pd.DataFrame) -> str:
    """The two tables as plain text, with a line on how to read them."""
    quality, tasks = in_distribution(runs), task_deltas(deltas)
    lines = [
        "In-distribution quality (model tested on its own training distribution, mean over data "
        "sets):",
        quality.to_string(float_format=lambda v: f"{v:.3f}" if np.isfinite(v) else "nan"),
        "",
        "Mean delta against each test set's own baseline, per task and stain",
        "(in brackets: deltas whose 95 % CI excludes 0, of all; N-MAE: lower is better):",
        tasks.to_string(index=False),
    ]
    if not tasks.empty and (tasks["CIs count"] == "1 seed: not training").any():
        lines += [
            "",
            "CIs over one seed a side count wells and fields, not training variation: they are",
            "too narrow for a claim about the model type, and their k/n counts are largely seed",
            "noise (docs/methods.md, 'Confidence intervals'). Rows with 2+ seeds count training too.",
        ]
    return "\n".join(lines) + "\n"
