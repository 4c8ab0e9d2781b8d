"""The paper's figures, regenerated from the tables (and, for the qualitative panels, predictions).

- Figure 2: task 1, delta of non-toxic-trained against toxic-trained models on toxic test sets,
  bars per stain grouped by cell type, one panel per metric, 95 % bootstrap CIs.
- Figure 4: N-MAE of the selected features for the non-toxic and the toxic model of one cell type
  on its toxic test set, one panel per stain, with each model's mean.
- Figure 6a / 6b: train x test cell-type heatmaps of the deltas of task 2 (non-toxic -> non-toxic)
  and task 3 (non-toxic -> toxic; its diagonal is task 1), averaged over the segmented stains.
  Per metric one diverging scale centred at 0 and shared by 6a and 6b; blue is better.
- Figures 3 and 5: bright-field, real stain and predictions side by side.
- Figure 10a / 10b (vsgrid's, not the paper's), from the trust table: per stain, the train x
  test set heatmap of the OOD score's AUROC against the model's in-distribution test images, and
  the Spearman correlation of each uncertainty with each per-image error over a model's images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vsgrid import arrays  # noqa: E402
from vsgrid.data.store import open_store  # noqa: E402
from vsgrid.evaluation.metrics import LOWER_IS_BETTER  # noqa: E402
from vsgrid.files import atomic_path, read_table  # noqa: E402
from vsgrid.grid import NONTOXIC, TOXIC, DataSet, focus_cell_type, panel_runs  # noqa: E402
from vsgrid.layout import GRID_FIGURES, TRUST_TABLE, Layout, table_path  # noqa: E402

log = logging.getLogger(__name__)

METRICS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "f1": "F1 score",
    "jaccard": "Jaccard index",
    "nmae": "N-MAE",
}  # the paper's
STAIN_NAMES = {"dapi": "DAPI (nuclei)", "fitc": "FITC (cytoplasm)", "cy5": "Cy5 (DNA damage)"}
STAIN_COLOURS = {"dapi": "#d62728", "fitc": "#17becf", "cy5": "#bcbd22"}


def use_style(settings: dict) -> None:
    """The ``figures`` section's style and resolution, for every figure drawn after it."""
    plt.style.use(settings["style"])
    plt.rcParams.update({"figure.dpi": settings["dpi"], "savefig.dpi": settings["dpi"]})


def save(figure, out_dir: Path, name: str, formats) -> list[Path]:
    """Each format written atomically."""
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


def _paper_deltas(deltas: pd.DataFrame) -> pd.DataFrame:
    """The paper's baseline, without the controls (task 0), which no figure of the paper has."""
    return deltas[(deltas["baseline_kind"] == "test_distribution") & (deltas["task"] > 0)]


def _of(data_sets: pd.Series, part: str) -> pd.Series:
    """The cell type or the phenotype of each data set name."""
    return data_sets.map(lambda name: getattr(DataSet.parse(name), part))


def figure2(deltas: pd.DataFrame, cell_types, stains):
    """Task 1: NT_c -> T_c against T_c -> T_c, per metric, cell type and stain."""
    rows = _paper_deltas(deltas)
    rows = rows[(rows["shift"] == "phenotype") & (_of(rows["train_set"], "phenotype") == NONTOXIC)]
    metrics = [m for m in METRICS if m in set(rows["metric"])]
    figure, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    width = 0.8 / len(stains)
    for ax, metric in zip(axes[0], metrics):
        for k, stain in enumerate(stains):
            part = rows[(rows["metric"] == metric) & (rows["stain"] == stain)].set_index("test_set")
            part = part.reindex([DataSet(c, TOXIC).name for c in cell_types])
            x = np.arange(len(cell_types)) + (k - (len(stains) - 1) / 2) * width
            errors = np.abs(
                np.vstack([part["delta"] - part["ci_low"], part["ci_high"] - part["delta"]])
            )
            ax.bar(
                x,
                part["delta"],
                width,
                yerr=errors,
                color=STAIN_COLOURS.get(stain),
                label=STAIN_NAMES.get(stain, stain),
                capsize=2,
            )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(cell_types)), cell_types)
        ax.set_title(
            METRICS[metric] + (" (lower is better)" if metric in LOWER_IS_BETTER else ""),
            fontsize=10,
        )
    axes[0][0].set_ylabel("delta vs toxic-trained baseline")
    axes[0][-1].legend(fontsize=8, loc="best")
    figure.suptitle("Task 1: trained on non-toxic, tested on toxic (same cell type)", fontsize=11)
    figure.tight_layout()
    return figure


def figure4(features: pd.DataFrame, cell_type: str, stains):
    """N-MAE per selected feature: non-toxic- vs toxic-trained models of ``cell_type`` on its toxic test set."""
    test_set = DataSet(cell_type, TOXIC).name
    shown = [
        s
        for s in stains
        if not features[(features["stain"] == s) & (features["test_set"] == test_set)].empty
    ]
    figure, axes = plt.subplots(len(shown), 1, figsize=(11, 3.3 * len(shown)), squeeze=False)
    for ax, stain in zip(axes[:, 0], shown):
        part = features[(features["stain"] == stain) & (features["test_set"] == test_set)]
        table = part.groupby(["train_set", "feature"])["value"].mean().unstack("train_set")
        order = table.mean(axis=1).sort_values(ascending=False).index
        x = np.arange(len(order))
        for train_set, colour, label in (
            (DataSet(cell_type, NONTOXIC).name, "#2ca02c", "trained on non-toxic"),
            (test_set, "#e8b100", "trained on toxic (baseline)"),
        ):
            if train_set not in table:
                continue
            values = table.loc[order, train_set]
            ax.plot(x, values, "o", color=colour, label=label)
            ax.axhline(values.mean(), color=colour, linestyle="--", linewidth=1)
        ax.set_xticks(x, [f.replace("_", " ") for f in order], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("N-MAE")
        ax.set_title(
            f"{STAIN_NAMES.get(stain, stain)}: {len(order)} most informative features, test set {test_set}",
            fontsize=10,
        )
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def heatmap_values(
    deltas: pd.DataFrame, cell_types, stains, test_phenotype: str
) -> dict[str, pd.DataFrame]:
    """Per metric, the train x test cell-type matrix of deltas of non-toxic-trained models,
    averaged over ``stains``; the non-toxic diagonal is the baseline itself (0)."""
    rows = _paper_deltas(deltas)
    rows = rows[
        (_of(rows["train_set"], "phenotype") == NONTOXIC)
        & (_of(rows["test_set"], "phenotype") == test_phenotype)
        & rows["stain"].isin(stains)
    ]
    rows = rows.assign(
        train=_of(rows["train_set"], "cell_type"), test=_of(rows["test_set"], "cell_type")
    )
    return {
        metric: rows[rows["metric"] == metric]
        .groupby(["train", "test"])["delta"]
        .mean()
        .unstack("test")
        .reindex(index=cell_types, columns=cell_types)
        for metric in METRICS
        if metric in set(rows["metric"])
    }


def figure6(deltas: pd.DataFrame, cell_types, stains) -> tuple:
    """Figures 6a (task 2) and 6b (task 3), sharing one colour scale per metric."""
    task2 = heatmap_values(deltas, cell_types, stains, NONTOXIC)
    task3 = heatmap_values(deltas, cell_types, stains, TOXIC)
    limits = {
        m: max(
            np.nanmax(np.abs(task2[m].to_numpy())),
            np.nanmax(np.abs(task3.get(m, task2[m]).to_numpy())),
            1e-9,
        )
        for m in task2
    }
    titles = {
        "a": "6a  Task 2: new cell type (non-toxic -> non-toxic); diagonal = baseline",
        "b": "6b  Task 3: new cell type and phenotype (non-toxic -> toxic); diagonal = task 1",
    }
    figures = []
    for key, values in (("a", task2), ("b", task3)):
        figure, axes = plt.subplots(1, len(values), figsize=(3.3 * len(values), 3.4), squeeze=False)
        for ax, (metric, matrix) in zip(axes[0], values.items()):
            cmap = "RdBu_r" if metric in LOWER_IS_BETTER else "RdBu"
            image = ax.imshow(
                matrix.to_numpy(dtype=float), cmap=cmap, vmin=-limits[metric], vmax=limits[metric]
            )
            ax.grid(False)  # the style's grid lines would cut through the cells
            for (i, j), v in np.ndenumerate(matrix.to_numpy(dtype=float)):
                if np.isfinite(v):
                    colour = (
                        "white" if abs(v) > 0.6 * limits[metric] else "black"
                    )  # readable on the strong colours
                    ax.text(
                        j,
                        i,
                        f"{v:+.2f}" if abs(v) < 10 else f"{v:+.0f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color=colour,
                    )
            ax.set_xticks(range(len(cell_types)), cell_types, rotation=30)
            ax.set_yticks(range(len(cell_types)), cell_types)
            ax.set_xlabel("test")
            ax.set_title(METRICS[metric], fontsize=10)
            figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        axes[0][0].set_ylabel("train")
        figure.suptitle(
            f"{titles[key]} ({', '.join(stains)} averaged; blue = better than baseline)",
            fontsize=10,
        )
        figure.tight_layout()
        figures.append(figure)
    return tuple(figures)


def _annotated_heatmap(ax, matrix: pd.DataFrame, *, cmap: str, vmin: float, vmax: float):
    """``matrix`` drawn cell by cell with its value written in (blank where NaN)."""
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.grid(False)  # the style's grid lines would cut through the cells
    middle = (vmin + vmax) / 2
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            # viridis is dark at its low end, a diverging map at both ends
            dark = v < middle if cmap == "viridis" else abs(v - middle) > 0.3 * (vmax - vmin)
            colour = "white" if dark else "black"
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=7)
    return image


def figure10(trust: pd.DataFrame, stains) -> tuple:
    """Figures 10a (OOD AUROC, train x test set) and 10b (Spearman of each uncertainty with each
    per-image error, over all of a model's images), one panel per stain; mean over seeds."""
    detect = trust[
        (trust["statistic"] == "auroc")
        & (trust["uncertainty"] == "ood")
        & (trust["test_set"] != "all")
    ]
    ranked = trust[(trust["statistic"] == "spearman") & (trust["test_set"] == "all")]
    shown = [s for s in stains if s in set(trust["stain"])] or list(stains)
    figures = []
    for key, rows, cmap, (vmin, vmax) in (
        ("a", detect, "viridis", (0.5, 1.0)),
        (
            "b",
            ranked.assign(test_set=ranked["uncertainty"] + " vs " + ranked["error"]),
            "RdBu",
            (-1.0, 1.0),
        ),
    ):
        figure, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.8), squeeze=False)
        for ax, stain in zip(axes[0], shown):
            of_stain = rows[rows["stain"] == stain]
            ax.set_title(STAIN_NAMES.get(stain, stain), fontsize=10)
            if of_stain.empty:
                ax.text(
                    0.5,
                    0.5,
                    "no prediction carries an uncertainty",
                    ha="center",
                    transform=ax.transAxes,
                    fontsize=8,
                )
                ax.set_axis_off()
                continue
            matrix = of_stain.groupby(["train_set", "test_set"])["value"].mean().unstack()
            image = _annotated_heatmap(ax, matrix, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xlabel("test set" if key == "a" else "uncertainty vs per-image error")
            figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        axes[0][0].set_ylabel("train set")
        figure.suptitle(
            "10a  OOD score: AUROC of each shifted test set against the in-distribution test "
            "images (0.5 = blind, 1 = every shifted image scores higher)"
            if key == "a"
            else "10b  Spearman of what the model says (TTA spread, OOD) with its per-image "
            "error, over all its test images (> 0: it knows where it errs)",
            fontsize=9,
        )
        figure.tight_layout()
        figures.append(figure)
    return tuple(figures)


def _display_range(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [0.5, 99.8])
    return float(low), float(max(high, low + 1))


def qualitative(config: dict, panel: dict, image_index: int):
    """BF, then per stain the real image and the panel's predictions, on the real image's contrast."""
    layout = Layout.of(config)
    store = open_store(layout.store(panel["test_set"]))
    field = store.images("test")[image_index]
    stains = config["grid"]["stains"]
    columns = ["bright-field", "real", *panel["columns"]]
    figure, axes = plt.subplots(
        len(stains), len(columns), figsize=(2.3 * len(columns), 2.4 * len(stains)), squeeze=False
    )
    for row, stain in enumerate(stains):
        real = field[store.channel_index(stain)]
        low, high = _display_range(real)
        images = [field[store.channel_index("bf")], real]
        images += [
            arrays.open_array(
                layout.prediction(model.format(stain=stain), panel["test_set"]) / "image"
            )[image_index]
            for model in panel["models"]
        ]
        for col, (ax, image) in enumerate(zip(axes[row], images)):
            ax.imshow(
                image, cmap="gray", vmin=None if col == 0 else low, vmax=None if col == 0 else high
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        axes[row][0].set_ylabel(STAIN_NAMES.get(stain, stain), fontsize=9)
    figure.suptitle(panel["title"], fontsize=10)
    figure.tight_layout()
    return figure


def make_figures(config: dict, tables_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Every figure, each as PNG and PDF (``figures.formats``), written atomically."""
    settings = config["figures"]
    use_style(settings)
    out = Path(out_dir)
    tables = Path(tables_dir)
    deltas = read_table(table_path(tables, "deltas"))
    features = read_table(table_path(tables, "features"))
    trust = read_table(table_path(tables, TRUST_TABLE))
    grid = config["grid"]
    cell_types, stains = grid["cell_types"], grid["stains"]
    segmented = [s for s in settings["figure6_stains"] if s in stains]
    figures = (
        figure2(deltas, cell_types, stains),
        figure4(features, focus_cell_type(config), stains),
        *figure6(deltas, cell_types, segmented or stains),
        *figure10(trust, stains),
    )
    written = []
    for name, figure in zip(GRID_FIGURES, figures, strict=True):
        written += save(figure, out, name, settings["formats"])
    for name, panel in panel_runs(config).items():
        written += save(
            qualitative(config, panel, settings["panel_image"]), out, name, settings["formats"]
        )
    log.info("wrote %d figure files under %s", len(written), out)
    return written
