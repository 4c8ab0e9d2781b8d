"""Level 4's figures, from the screen tables and the per-well profiles.

- Figure 7: dose-response curves of a few compounds on every screen: the summary readout per
  well (the phenotype score) of the real stain and of each control's and taking-part model's
  virtual stain, with their Hill fits; a row per screen, a panel per compound, first stain and
  seed.
- Figure 8: train set x test cell-type heatmaps of the EC50 error and the hit-call kappa of the
  summary readout (mean over seeds), and the verdict (:mod:`vsgrid.screen.verdicts`) with the
  metric that decides it, one row per stain.
- Figure 9: profile-level agreement (:mod:`vsgrid.screen.profiles`) per screen: the activity mAP
  of the real stain's profiles and of each model's virtual ones, and each model's virtual-to-real
  retrieval mAP, with 95 % CIs over wells; first seed, one row per stain.

Level 4's controls (:mod:`vsgrid.screen.controls`) come first in each: after the real stain in
Figure 7, as the first rows of Figure 8's train x test panels, the first series of Figure 9.
"""

from __future__ import annotations

import logging
import textwrap
from itertools import product
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vsgrid.files import read_table  # noqa: E402
from vsgrid.grid import (  # noqa: E402
    AFFINE,
    BOTH,
    NONTOXIC,
    SCREEN_CONTROLS,
    TOXIC,
    DataSet,
    control_runs,
    screen_runs,
)
from vsgrid.layout import SCREEN_FIGURES, Layout, table_path  # noqa: E402
from vsgrid.report.figures import STAIN_NAMES, save, use_style  # noqa: E402
from vsgrid.screen.curves import curves, hill  # noqa: E402
from vsgrid.screen.metrics import Missing  # noqa: E402
from vsgrid.screen.plate import Plate, ScreenSettings  # noqa: E402
from vsgrid.screen.profiles import PROFILE  # noqa: E402
from vsgrid.screen.sentinels import LOWEST_TRUST, RANDOM, RANDOM_LINE  # noqa: E402
from vsgrid.screen.tables import SUMMARY_READOUT  # noqa: E402
from vsgrid.screen.verdicts import NOT_REPLACEABLE, REPLACEABLE, UNDECIDED  # noqa: E402

log = logging.getLogger(__name__)

READOUT_NAMES = {
    "cell_count": "cells per well",
    "phenotype_score": "phenotype score (mean toxic probability)",
}
HEATMAP_METRICS = {
    "ec50_error": ("EC50 error (log10, virtual vs real)", "Reds", (0.0, None)),
    "hit_kappa": ("hit-call kappa", "Blues", (0.0, 1.0)),
}
# A verdict's colour and its word in the heatmap: agreement green, refusal red, undecided grey.
VERDICT_STYLE = {
    REPLACEABLE: ("#4daf4a", "yes"),
    UNDECIDED: ("#bdbdbd", "undecided"),
    NOT_REPLACEABLE: ("#e41a1c", "no"),
}


def figure7(
    screens: dict[str, dict[str, pd.DataFrame]],
    settings: ScreenSettings,
    compounds: int,
    stain: str,
):
    """Dose-response per screen (rows) and compound (columns). ``screens``: screen cell type ->
    (label -> per-well profile, the real stain first)."""
    readout = SUMMARY_READOUT
    first = next(iter(next(iter(screens.values())).values()))
    shown = Plate(first[["compound", "concentration"]], settings).compounds()[:compounds]
    figure, axes = plt.subplots(
        len(screens),
        len(shown),
        figsize=(3.6 * len(shown) + 2.6, 3.0 * len(screens)),
        squeeze=False,
        sharey="row",
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (cell_type, wells) in zip(axes, screens.items()):
        for ax, compound in zip(row, shown):
            for k, (label, frame) in enumerate(wells.items()):
                colour = "black" if k == 0 else colours[(k - 1) % len(colours)]
                _dose_response(ax, frame, compound, settings, readout, colour, label)
            ax.set_xscale("log")
            ax.set_title(f"{cell_type} screen: {compound}", fontsize=9)
        row[0].set_ylabel(READOUT_NAMES[readout], fontsize=8)
        # Beside the panels, never over points: each screen has its own models.
        row[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    for ax in axes[-1]:
        ax.set_xlabel("concentration (uM)")
    figure.suptitle(
        f"Figure 7: dose-response on every screen, {STAIN_NAMES.get(stain, stain)}: "
        "real (black) vs virtual, Hill fits, EC50 dotted (dashed: no EC50)",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def _dose_response(ax, frame: pd.DataFrame, compound: str, settings, readout: str, colour, label):
    """One stain's wells of a compound and its Hill fit (its mean, dashed, where it has no EC50)."""
    rows = frame["compound"].astype(str) == compound
    x, y = frame.loc[rows, "concentration"].to_numpy(), frame.loc[rows, readout].to_numpy()
    ax.scatter(x, y, s=10, color=colour, alpha=0.7, label=label)
    fit = curves(
        Plate(frame[["compound", "concentration"]], settings),
        frame[readout].to_numpy(),
        np.arange(len(frame))[None, :],
    )[compound]
    if isinstance(fit, Missing) or not np.isfinite(fit.log_ec50[0]):
        ax.axhline(np.nanmean(y), color=colour, lw=1.0, ls="--")
        return
    grid = np.logspace(np.log10(x.min()), np.log10(x.max()), 100)
    ax.plot(
        grid,
        hill(np.log10(grid), fit.bottom[0], fit.top[0], fit.log_ec50[0], fit.slope[0]),
        color=colour,
        lw=1.5,
    )
    ax.axvline(10 ** fit.log_ec50[0], color=colour, lw=0.8, ls=":")


def _source(rows: pd.DataFrame) -> pd.Series:
    """What each row's virtual stain comes from: its control, else its model's train set (the
    model type's name before its stain)."""
    control = rows["control"].fillna("") if "control" in rows else pd.Series("", index=rows.index)
    return control.where(control != "", rows["model_type"].str.partition(".")[0])


def _sources(rows: pd.DataFrame, cell_types) -> list[str]:
    """The rows of a train x test panel: the controls present, then the train sets present, by
    phenotype (as the grid orders them, level 4's ``both`` last) and cell type."""
    present = set(_source(rows))
    trained = [DataSet(c, p).name for p, c in product([NONTOXIC, TOXIC, BOTH], cell_types)]
    return [s for s in [*SCREEN_CONTROLS, *trained] if s in present]


def _cell_text(value: float, capped_share: float) -> str:
    """A heatmap cell: an EC50 error that is the tested range's cap (the virtual stain has no
    EC50 where the real one has) is no measurement, and says so."""
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.2f}\n(capped)" if capped_share == 1 else f"{value:.2f}"


def figure8(table: pd.DataFrame, verdicts: pd.DataFrame, cell_types, stains):
    rows = table[
        (table["readout"] == SUMMARY_READOUT) & table["metric"].isin(list(HEATMAP_METRICS))
    ]
    rows = rows.assign(source=_source(rows))
    sources = _sources(rows, cell_types)
    panels = len(HEATMAP_METRICS) + 1
    figure, axes = plt.subplots(
        len(stains),
        panels,
        # square cells: a row of cells a stain, each half an inch, and room for the labels
        figsize=(3.6 * panels, len(stains) * (1.8 + 0.5 * len(sources))),
        squeeze=False,
    )
    for i, stain in enumerate(stains):
        for j, (metric, (title, cmap, (low, high))) in enumerate(HEATMAP_METRICS.items()):
            ax = axes[i][j]
            picked = rows[(rows["stain"] == stain) & (rows["metric"] == metric)]
            matrix, capped = (
                picked.groupby(["source", "cell_type"])[column]
                .mean()
                .unstack("cell_type")
                .reindex(index=sources, columns=cell_types)
                .to_numpy(dtype=float)
                for column in ("value", "capped_share")
            )
            top = (
                high
                if high is not None
                else max(np.nanmax(matrix) if np.isfinite(matrix).any() else 1.0, 1e-9)
            )
            image = ax.imshow(matrix, cmap=cmap, vmin=low, vmax=top)
            ax.grid(False)
            for (r, c), v in np.ndenumerate(matrix):
                ax.text(
                    c,
                    r,
                    _cell_text(v, capped[r, c]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if np.isfinite(v) and v > low + 0.6 * (top - low) else "black",
                )
            ax.set_xticks(range(len(cell_types)), cell_types, rotation=30)
            ax.set_yticks(range(len(sources)), sources)
            ax.set_xlabel("screen (test) cell type")
            ax.set_ylabel(
                f"{stain} ({READOUT_NAMES[SUMMARY_READOUT].split(' (')[0]}): control, train set"
            )
            ax.set_title(title, fontsize=10)
            figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        _verdict_panel(axes[i][-1], verdicts[verdicts["stain"] == stain], sources, cell_types)
    figure.suptitle(
        "Figure 8: screen decisions from virtual stains (n/a: missing, see screen.csv)", fontsize=10
    )
    figure.tight_layout()
    return figure


PROFILE_PANELS = {
    "activity_map": "activity mAP (treatments vs DMSO)",
    "retrieval_map": "retrieval mAP (virtual well -> real wells)",
}


def _series_label(source: str) -> str:
    return f"control: {source}" if source in SCREEN_CONTROLS else f"virtual, trained on {source}"


def figure9(table: pd.DataFrame, cell_types, stains):
    """Per stain (rows): activity mAP real (black) vs virtual (one colour per train set)
    and retrieval mAP, per screen cell type, first seed, with 95 % CI bars."""
    rows = table[(table["readout"] == PROFILE) & (table["seed"] == table["seed"].min())]
    rows = rows.assign(source=_source(rows))
    trains = [c for c in _sources(rows, cell_types) if c in set(rows["source"])]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / (len(trains) + 1)
    figure, axes = plt.subplots(
        len(stains), 2, figsize=(4.2 + 1.2 * len(cell_types), 3.4 * len(stains)), squeeze=False
    )
    for i, stain in enumerate(stains):
        ours = rows[rows["stain"] == stain]
        for ax, (metric, title) in zip(axes[i], PROFILE_PANELS.items()):
            series = [("real stain", "black", metric + "_real", None)] * (metric == "activity_map")
            series += [
                (_series_label(t), colours[k % len(colours)], metric, t)
                for k, t in enumerate(trains)
            ]
            for k, (label, colour, name, train) in enumerate(series):
                picked = ours[ours["metric"] == name]
                if train is not None:
                    picked = picked[picked["source"] == train]
                picked = picked.drop_duplicates("cell_type").set_index("cell_type")
                picked = picked.reindex(cell_types)
                x = np.arange(len(cell_types)) + (k - (len(series) - 1) / 2) * width
                value = picked["value"].to_numpy(float)
                error = np.abs(picked[["ci_low", "ci_high"]].to_numpy(float).T - value)
                ax.errorbar(
                    x,
                    value,
                    yerr=np.nan_to_num(error),
                    fmt="o",
                    color=colour,
                    label=label,
                    capsize=2,
                    ms=4,
                )
            ax.set_xticks(range(len(cell_types)), cell_types)
            ax.set_xlabel("screen (test) cell type")
            ax.set_ylabel(f"{STAIN_NAMES.get(stain, stain)}: mAP (0-1)")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(title, fontsize=10)
        # Beside the panels, never over points: an mAP can lie anywhere from 0 to 1.
        axes[i][-1].legend(
            *axes[i][0].get_legend_handles_labels(),
            fontsize=7,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
        )
    figure.suptitle(
        "Figure 9: profile-level agreement, real vs virtual (95 % CI over wells; missing: no point)",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def _verdict_panel(ax, verdicts: pd.DataFrame, sources: list[str], cell_types) -> None:
    """The verdicts of one stain over (controls and train sets) x test cell types: each
    cell's colour its verdict, its text the verdict's word and the metric that decides it."""
    by_cell = (
        verdicts.assign(source=_source(verdicts))
        .drop_duplicates(["source", "cell_type"])
        .set_index(["source", "cell_type"])
    )
    for r, train in enumerate(sources):
        for c, screen in enumerate(cell_types):
            if (train, screen) in by_cell.index:
                verdict = by_cell.loc[(train, screen)]
                (colour, word), deciding = (
                    VERDICT_STYLE[verdict["verdict"]],
                    verdict["deciding_metric"],
                )
            else:
                (colour, word), deciding = ("white", "n/a"), ""
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, color=colour))
            # the metric's words wrapped to the cell, as the heatmaps' cells are square
            deciding = textwrap.fill(deciding.replace("_", " "), 11)
            ax.text(c, r, f"{word}\n{deciding}".strip(), ha="center", va="center", fontsize=6.5)
    ax.set_xlim(-0.5, len(cell_types) - 0.5)
    ax.set_ylim(len(sources) - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.grid(False)
    ax.set_xticks(range(len(cell_types)), cell_types, rotation=30)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("screen (test) cell type")
    ax.set_title("replaceable? (deciding metric)", fontsize=10)


def make_screen_figures(config: dict, tables_dir: str | Path, out_dir: str | Path) -> list[Path]:
    settings = config["figures"]
    use_style(settings)
    out = Path(out_dir)
    table = read_table(table_path(tables_dir, "screen"))
    verdicts = read_table(table_path(tables_dir, "screen_verdicts"))
    trust = read_table(table_path(tables_dir, "screen_trust"))
    runs = screen_runs(config)
    stains = sorted({r.model.stain for r in runs}, key=config["grid"]["stains"].index)
    seed = config["grid"]["seeds"][0]
    screens = {
        cell_type: _screen_wells(config, cell_type, stains[0], seed)
        for cell_type in config["grid"]["cell_types"]
    }
    screen = config["evaluation"]["screen"]
    figures = (
        figure7(screens, ScreenSettings.from_config(config), screen["figure_compounds"], stains[0]),
        figure8(table, verdicts, config["grid"]["cell_types"], stains),
        figure9(table, config["grid"]["cell_types"], stains),
        figure11(trust, config["grid"]["cell_types"]),
    )
    written = []
    for name, figure in zip(SCREEN_FIGURES, figures, strict=True):
        written += save(figure, out, name, settings["formats"])
    log.info("wrote %d figure files under %s", len(written), out)
    return written


def _screen_wells(config: dict, cell_type: str, stain: str, seed: int) -> dict[str, pd.DataFrame]:
    """Figure 7's stains of one screen, by label: the real one, the controls, then the models of
    the first seed."""
    layout = Layout.of(config)
    wells = {"real": read_table(layout.screen_real_wells(cell_type, stain))}
    for run in control_runs(config) + screen_runs(config):
        model = run.model
        if run.cell_type != cell_type or model.stain != stain or model.seed != seed:
            continue
        source = model.control if model.train_set is None else model.train_set.name
        wells[_series_label(source)] = read_table(layout.screen_wells(model, cell_type))
    return wells


SENTINEL_PANELS = {
    "ec50_error": ("EC50 error (log10 units, virtual vs real)", "lower is better"),
    "hit_kappa": ("hit-call kappa (virtual vs real, 0-1)", "higher is better"),
    "z_prime": ("Z' of the virtual readout (unitless)", "dashed: the real stain's"),
}
SENTINEL_COLOURS = {LOWEST_TRUST: "#d62728", RANDOM: "#1f77b4", RANDOM_LINE: "#2ca02c"}


def _sentinel_panel(ax, rows: pd.DataFrame, metric: str) -> None:
    """One decision metric of one screen run's sentinel rows against the share of wells not
    stained: each choice of sentinels (:data:`SENTINEL_COLOURS`) a line with its 95 % CI band, the
    sentinels per plate (k) on the top axis."""
    label, note = SENTINEL_PANELS[metric]
    for choice, colour in SENTINEL_COLOURS.items():
        line = rows[(rows["metric"] == metric) & (rows["choice"] == choice)].sort_values("k")
        x = 100 * line["stain_cost_saved"].to_numpy(float)
        ax.plot(x, line["value"].to_numpy(float), "o-", color=colour, ms=4, label=choice)
        ax.fill_between(
            x,
            line["ci_low"].to_numpy(float),
            line["ci_high"].to_numpy(float),
            color=colour,
            alpha=0.2,
            lw=0,
        )
    real = rows.loc[rows["metric"] == "z_prime_real", "value"].dropna()
    if metric == "z_prime" and len(real):
        ax.axhline(real.iloc[0], color="black", lw=1.0, ls="--", label="real stain")
    ks = rows.dropna(subset=["k"]).drop_duplicates("k").sort_values("k")
    top = ax.secondary_xaxis("top")
    top.set_xticks(100 * ks["stain_cost_saved"].to_numpy(float), ks["k"].astype(int).astype(str))
    top.set_xlabel("sentinel wells per plate (k)", fontsize=8)
    ax.set_xlabel("stain cost saved (% of wells not stained)", fontsize=8)
    ax.set_ylabel(label, fontsize=8)
    ax.set_title(note, fontsize=8)


def figure11(trust: pd.DataFrame, cell_types):
    """Sentinel wells (:mod:`vsgrid.screen.sentinels`, ``tables/screen_trust``): first the
    affine-distorted oracle of the first screen (the control the recalibration must rescue),
    then per screen cell type the model a team would use on it, trained on both phenotypes of
    its own cell type (else on its own cell type, else the first model screened), first seed and
    stain; per decision metric (columns) its
    recalibrated virtual readout against the share of wells not stained."""
    shown = [c for c in cell_types if c in set(trust["cell_type"])] or list(cell_types)[:1]
    panels = _sentinel_runs(trust, shown)
    figure, axes = plt.subplots(
        len(panels), len(SENTINEL_PANELS), figsize=(12.0, 3.3 * len(panels)), squeeze=False
    )
    for row, (cell_type, rows) in zip(axes, panels):
        if rows.empty:
            row[0].text(0.5, 0.5, "no screen run", ha="center", transform=row[0].transAxes)
            continue
        for ax, metric in zip(row, SENTINEL_PANELS):
            _sentinel_panel(ax, rows, metric)
        row[0].annotate(
            f"{cell_type} screen\n{rows['model'].iloc[0]}",
            (-0.32, 0.5),
            xycoords="axes fraction",
            rotation=90,
            ha="center",
            va="center",
            fontsize=9,
        )
    axes[0][0].legend(fontsize=8, loc="best")
    figure.suptitle(
        "11  Sentinel wells: the virtual readout recalibrated on k wells per plate stained for "
        "real, chosen by lowest trust (OOD), at random, or a random line + lowest trust "
        "(95 % CI over wells; random: and draws)",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def _sentinel_runs(trust: pd.DataFrame, shown: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """Figure 11's rows: (screen cell type, one run's sentinel rows)."""
    control = trust["control"].fillna("") if "control" in trust else pd.Series("", trust.index)
    affine = trust[(control == AFFINE) & (trust["cell_type"] == shown[0])]
    panels = [(shown[0], affine)] if len(affine) else []
    models = trust[control == ""]
    for cell_type in shown:
        runs = models[models["cell_type"] == cell_type]
        own = runs[runs["train_cell_type"] == cell_type]
        deployed = own[own["train_set"] == DataSet(cell_type, BOTH).name]
        runs = deployed if len(deployed) else own if len(own) else runs
        first = runs["model"].iloc[0] if len(runs) else None
        panels.append((cell_type, runs[runs["model"] == first]))
    return panels
