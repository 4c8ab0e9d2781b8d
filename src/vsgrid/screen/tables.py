"""Level 4's tables: each screen run's decisions against the real stain's, with CIs and deltas.

For every screen run (model, screen cell type) and readout, :func:`vsgrid.screen.decisions.decisions`
gives each metric on the plate and on ``evaluation.screen.bootstrap_resamples`` resamples of its
wells (within each plate, compound and concentration). The baseline convention is the grid's: a run is
compared with the model of the same stain, seed and training phenotype trained on the screen's own
cell type, on the same resampled wells, so ``delta`` = run - baseline with a paired CI. Written:

- ``screen.parquet``/``.csv``: one row per (run, readout, metric): value (the plate's), 95 % CI,
  ``undefined_share`` (the resamples without a value), reason (why the value is missing, or how
  much of the CI's resamples are missing and why), baseline value, delta, its CI and
  ``delta_undefined_share``;
- ``screen_truth.parquet``/``.csv``: per (cell type, stain, readout, compound) the real-stain EC50
  against the synthetic truth;
- ``screen_verdicts.parquet``/``.csv``: per (model type, screen, stain) whether the virtual stain
  can replace the real one (:mod:`vsgrid.screen.verdicts`);
- ``screen_outcome.txt``: the summary a user reads first, the verdicts at its top.

Level 4's controls (:mod:`vsgrid.screen.controls`) are screen runs without a train set or a
baseline, rows like a model's marked by their ``control`` column and shown first.

A resample that does not define a metric (it draws DMSO wells without spread, or no hit in either
stain) has no value, neither a worst nor a best one: the CI is the 2.5-97.5 percentiles over the
resamples that define the metric, that is, conditional on the metric existing. That is honest only
when it is said, because the resamples that drop out are not a random share (those that draw the
fewest hits, or the fewest distinct DMSO wells), so the conditional interval can be narrower or
shifted against the spread of the plate as a whole. Every row therefore gives ``undefined_share``,
and when more than ``UNDEFINED_NOTE`` (10 %) of the resamples have no value its reason says so and
why ("CI over 83 % of resamples; 17 % draw no hit in either stain"); with none, the value stands
without a CI and the reason says why. The alternatives are worse: scoring an undefined kappa 0 (or
1) invents an agreement the calls do not show, and withholding the CI below some share hides the
spread of the resamples that do have a value without saying why. A delta's CI is over the
resamples where both the run and its baseline have a value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.data.store import open_store
from vsgrid.errors import VsgridError
from vsgrid.files import read_table, write_table, write_text
from vsgrid.grid import ScreenRun, control_runs, screen_runs
from vsgrid.layout import SCREEN_OUTCOME, SCREEN_TABLES, TABLE_FORMATS, Layout, table_path
from vsgrid.screen.assay import z_prime_wells
from vsgrid.screen.curves import NO_TRUTH, truth_errors
from vsgrid.screen.decisions import Readout, decisions
from vsgrid.screen.metrics import METRIC_COLUMNS, Metric, Missing, interval_columns
from vsgrid.screen.plate import Plate, ScreenSettings
from vsgrid.screen.profiles import PROFILE, build_profiles, normalized_tables, profile_decisions
from vsgrid.screen.sentinels import COLUMNS as SENTINEL_COLUMNS
from vsgrid.screen.sentinels import (
    flip_row,
    sentinel_rows,
    smallest_replaceable_k,
    verdicts_by_k,
)
from vsgrid.screen.verdicts import control_order, verdict_table
from vsgrid.screen.wells import readouts
from vsgrid.seeds import rng_for
from vsgrid.stats import interval

log = logging.getLogger(__name__)

KEYS = ["plate", "well"]
DESIGN = [*KEYS, "compound", "concentration"]  # what a plate's decisions know of each well
TRUTH_TOLERANCE = 0.3  # log10 units: what "the same EC50" means in the outcome
# The outcome's two tables: per readout, its metrics' columns (header, width: a CI where wide).
OUTCOME_METRICS = {
    "ec50_error": ("EC50 err [95% CI]", 22),
    "hit_kappa": ("kappa [95% CI]", 22),
    "z_prime": ("Z virt", 7),
    "z_prime_real": ("Z real", 7),
}
# What the outcome ranks model types on, per screen (True: higher is better).
RANKED = {"ec50_error": False, "hit_kappa": True}
PROFILE_METRICS = {
    "activity_map": ("act. mAP [95% CI]", 22),
    "activity_map_real": ("real", 5),
    "retrieval_map": ("retrieval mAP [95% CI]", 23),
    "active_fraction": ("active", 7),
    "active_fraction_real": ("real", 5),
}
# What names a screen run in every table: its model, what it was trained on, and what it screens.
RUN_KEYS = [
    "model",
    "model_type",
    "control",
    "train_set",
    "train_cell_type",
    "cell_type",
    "stain",
    "seed",
]
RUN_COLUMNS = [*RUN_KEYS, "baseline_model", "is_baseline"]
TRUST_COLUMNS = [*RUN_COLUMNS, "readout", *SENTINEL_COLUMNS]
COLUMNS = [
    *RUN_KEYS,
    "readout",
    *METRIC_COLUMNS,
    "wells",
    "dmso_wells",
    "positive_wells",
    "plates",
    "baseline_model",
    "is_baseline",
    "baseline_value",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "delta_undefined_share",
]


# The readout the verdicts, the outcome and the figures judge: the phenotype score, the assay's
# main readout for every stain. Where the real stain separates its controls (Z' >= 0.5), it is
# the readout that does; a cell count, read as an assay reads it, does not on the quick or paper
# plates: seeding density varies 15 % from well to well (bench/RESULTS.md, level 4).
SUMMARY_READOUT = "phenotype_score"


def _aligned(real: pd.DataFrame, virtual: pd.DataFrame, path: str) -> None:
    if len(real) != len(virtual) or not real[KEYS].reset_index(drop=True).equals(
        virtual[KEYS].reset_index(drop=True)
    ):
        raise VsgridError(
            f"{path}: its wells are not the real screen's wells; rerun its screen steps"
        )


def _run_columns(run: ScreenRun) -> dict:
    """The columns of a screen row that name its run and the run's baseline (a control: its
    kind, and no train set or baseline)."""
    model, trained = run.model, run.model.train_set
    return {
        "model": model.name,
        "model_type": model.model_type,
        "control": "" if trained else model.control,
        "train_set": trained.name if trained else "",
        "train_cell_type": trained.cell_type if trained else "",
        "cell_type": run.cell_type,
        "stain": model.stain,
        "seed": model.seed,
        "baseline_model": run.baseline.name if trained else "",
        "is_baseline": run.is_baseline,
    }


def screen_rows(
    runs: list[ScreenRun],
    real: pd.DataFrame,
    virtual: dict[str, pd.DataFrame],
    settings: ScreenSettings,
    resamples: int,
    seed: int,
) -> list[dict]:
    """The rows of the screen runs of one (screen, stain, seed), every readout x metric and the
    profile metrics (readout ``profile``), with CIs and paired deltas to each run's baseline.
    ``virtual``: model name -> its per-well profile.

    Each readout is normalized per plate against its DMSO wells (:mod:`vsgrid.screen.profiles`;
    Z' reads it as measured) and fitted once per stain (real, each model) on the wells every one
    of them has a value for, and all are resampled alike: the deltas are paired."""
    columns, stain = readouts(real), runs[0].model.stain
    design = Plate(real[DESIGN].reset_index(drop=True), settings)
    tables = normalized_tables(real, virtual, design, columns)
    rows = []
    for readout in columns:
        raw = {"real": real, **virtual}
        plate, usable = design.valued({name: wells[readout] for name, wells in raw.items()})
        index = plate.resamples(
            resamples, rng_for(seed, "screen", runs[0].cell_type, stain, readout)
        )
        scaled = not isinstance(tables, Missing) and readout not in tables.dropped
        read = {
            name: Readout.of(
                plate,
                (tables.frames[name] if scaled else wells).loc[usable, readout],
                index,
                raw=wells.loc[usable, readout],
            )
            for name, wells in raw.items()
        }
        decided = {name: decisions(plate, read["real"], read[name], index) for name in virtual}
        counts = z_prime_wells(plate, read["real"].raw)
        rows += [{**r, **counts} for r in _run_rows(runs, decided, readout, int(usable.sum()))]
    found = build_profiles(tables, design, columns)
    plate = design if isinstance(found, Missing) else found.plate
    index = plate.resamples(resamples, rng_for(seed, "screen", runs[0].cell_type, stain, PROFILE))
    decided, note = profile_decisions(found, list(virtual), index)
    return rows + _run_rows(runs, decided, PROFILE, len(plate.wells), note=note)


def _run_rows(
    runs: list[ScreenRun],
    decided: dict[str, dict[str, Metric | Missing]],
    readout: str,
    wells: int,
    *,
    note: str = "",
) -> list[dict]:
    """Each run's rows of one readout's ``decided`` metrics (model name -> metric -> values),
    with the paired delta to its baseline; ``note`` (what every value leaves out) joins each
    row's reason."""
    rows = []
    for run in runs:
        ours = decided[run.model.name]
        theirs = decided[run.baseline.name] if run.baseline else {}
        for metric, values in ours.items():
            row = {**_run_columns(run), "readout": readout, "metric": metric, "wells": wells}
            if isinstance(values, Missing):
                rows.append({**row, "value": np.nan, "reason": str(values)})
                continue
            row.update(interval_columns(values))
            row["reason"] = "; ".join(r for r in (note, row["reason"]) if r)
            if metric in theirs and not isinstance(theirs[metric], Missing):
                delta = values.values - theirs[metric].values
                row.update(baseline_value=float(theirs[metric].values[0]), delta=float(delta[0]))
                low, high, share = interval(delta[1:])
                row.update(delta_ci_low=low, delta_ci_high=high, delta_undefined_share=share)
            rows.append(row)
    return rows


def _groups(config: dict) -> Iterator[tuple[list[ScreenRun], pd.DataFrame, dict]]:
    """The screen runs by (screen, stain, seed, training phenotype; the controls by screen and
    stain, first), each group with the real stain's wells and every model's (its runs' and their
    baselines', by model name)."""
    layout = Layout.of(config)
    groups: dict[tuple, list[ScreenRun]] = {}
    for run in control_runs(config) + screen_runs(config):
        trained = run.model.train_set
        groups.setdefault(
            (run.cell_type, run.model.stain, run.model.seed, trained.phenotype if trained else ""),
            [],
        ).append(run)
    for (cell_type, stain, _, _), runs in groups.items():
        real = read_table(layout.screen_real_wells(cell_type, stain))
        virtual = {}
        for model in {m for run in runs for m in (run.model, run.baseline) if m}:
            path = layout.screen_wells(model, cell_type)
            virtual[model.name] = read_table(path)
            _aligned(real, virtual[model.name], str(path))
        yield runs, real, virtual


def screen_table(config: dict) -> pd.DataFrame:
    """Every screen run's level-4 rows (see the module docstring)."""
    screen, settings = config["evaluation"]["screen"], ScreenSettings.from_config(config)
    rows = []
    for runs, real, virtual in _groups(config):
        rows += screen_rows(
            runs,
            real,
            virtual,
            settings,
            screen["bootstrap_resamples"],
            config["evaluation"]["seed"],
        )
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def trust_rows(
    runs: list[ScreenRun],
    real: pd.DataFrame,
    virtual: dict[str, pd.DataFrame],
    settings: ScreenSettings,
    *,
    ks: list[int],
    resamples: int,
    seed: int,
) -> list[dict]:
    """Per screen run, on the summary readout: the sentinel wells' decisions per k and choice
    (random only where the virtual wells carry no OOD score, as a control's), and the OOD score's
    AUROC for the wells whose hit call flips (:mod:`vsgrid.screen.sentinels`). The readout, its
    wells and resamples are those of :func:`screen_rows` (the same random stream), so k = 0 is
    the screen table's row."""
    design = Plate(real[DESIGN].reset_index(drop=True), settings)
    tables = normalized_tables(real, virtual, design, [SUMMARY_READOUT])
    scaled = not isinstance(tables, Missing) and SUMMARY_READOUT not in tables.dropped
    values = {
        name: (tables.frames[name] if scaled else wells)[SUMMARY_READOUT].to_numpy(float)
        for name, wells in {"real": real, **virtual}.items()
    }
    plate, usable = design.valued(values)
    rows = []
    for run in runs:
        name = run.model.name
        rng = rng_for(seed, "screen", run.cell_type, run.model.stain, SUMMARY_READOUT)
        # A control has no OOD score: its sentinels are random, and no flip is scored.
        ood = virtual[name]["ood"].to_numpy(float)[usable] if "ood" in virtual[name] else None
        wells = (plate, values["real"][usable], values[name][usable])
        found = sentinel_rows(*wells, ood, ks=tuple(ks), resamples=resamples, rng=rng)
        if ood is not None:
            found.append(flip_row(*wells, ood, plate.resamples(resamples, rng)))
        rows += [{**_run_columns(run), "readout": SUMMARY_READOUT, **row} for row in found]
    return rows


def screen_trust_table(config: dict) -> pd.DataFrame:
    """Every screen run's sentinel-well and hit-flip rows (:func:`trust_rows`)."""
    screen, settings = config["evaluation"]["screen"], ScreenSettings.from_config(config)
    rows = []
    if screen["sentinel_wells"]:
        for runs, real, virtual in _groups(config):
            rows += trust_rows(
                runs,
                real,
                virtual,
                settings,
                ks=screen["sentinel_wells"],
                resamples=screen["bootstrap_resamples"],
                seed=config["evaluation"]["seed"],
            )
    return pd.DataFrame(rows).reindex(columns=TRUST_COLUMNS)


def trust_outcome(trust: pd.DataFrame, margins: dict[str, float]) -> list[str]:
    """The outcome's sentinel lines: per model type, screen and stain (first seed), the fewest
    lowest-trust sentinels per plate that make the virtual stain replaceable, and how well the
    OOD score finds the wells whose hit call flips."""
    if trust.empty:
        return []
    ks = sorted(int(k) for k in trust["k"].dropna().unique())
    lines = [
        "",
        f"Sentinel wells (k per plate stained for real: random line + lowest OOD trust, "
        f"random alone without an OOD score; k in {', '.join(map(str, ks))}) and the OOD "
        "score's AUROC for the flipped hit calls:",
    ]
    keys = ["model_type", "cell_type", "stain"]
    for (model_type, cell_type, stain), group in trust.groupby(keys, sort=True):
        first = group[group["seed"] == group["seed"].min()]
        decided = first[first["metric"] != "flip_auroc"]
        k = smallest_replaceable_k(decided, margins)
        said = f"replaceable from k = {k}"
        if k is None:
            last, metric, _ = verdicts_by_k(decided, margins)[ks[-1]]
            said = f"no k up to {ks[-1]} makes it replaceable ({ks[-1]}: {last} on {metric})"
        flip = first[first["metric"] == "flip_auroc"]
        flips = "no OOD score: random sentinels only" if flip.empty else _flips(flip.iloc[0])
        lines.append(f"{model_type:26s} {cell_type:9s} {stain:5s} {said}; {flips}")
    return lines


def _flips(flip: pd.Series) -> str:
    if np.isfinite(flip["value"]):
        return f"flip AUROC {flip['value']:.2f} [{flip['ci_low']:.2f}, {flip['ci_high']:.2f}]"
    return f"flip AUROC missing: {flip['reason']}"


def truth_table(config: dict) -> pd.DataFrame:
    """The real-stain EC50 of every compound, readout, stain and cell type against the synthetic truth."""
    layout, settings = Layout.of(config), ScreenSettings.from_config(config)
    frames = []
    for cell_type, stain in sorted(
        {(run.cell_type, run.model.stain) for run in screen_runs(config)}
    ):
        truth = open_store(layout.screen_store(cell_type)).attrs.get("true_ec50_um", {})
        real = read_table(layout.screen_real_wells(cell_type, stain))
        for readout in readouts(real):
            design = Plate(real[["compound", "concentration"]].reset_index(drop=True), settings)
            plate, usable = design.valued({"real": real[readout]})
            errors = truth_errors(plate, real.loc[usable, readout].to_numpy(), truth)
            frames.append(errors.assign(cell_type=cell_type, stain=stain, readout=readout))
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            columns=[
                "compound",
                "true_log_ec50",
                "log_ec50",
                "error",
                "reason",
                "cell_type",
                "stain",
                "readout",
            ]
        )
    )
    return table[
        [
            "cell_type",
            "stain",
            "readout",
            "compound",
            "true_log_ec50",
            "log_ec50",
            "error",
            "reason",
        ]
    ]


def screen_outcome(table: pd.DataFrame, truth: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    """What a user reads first: the verdicts, the real stain's EC50s against the truth, then each
    model type's decisions on the summary readout and its profile's agreement, mean over the seeds
    that define them, with the first seed's CIs, and under the tables the first seed's reasons (a
    value missing, a CI without enough resamples)."""
    lines = [
        "Level 4: can the virtual stain replace the real one? (margins: evaluation.screen.margins)"
    ]
    lines += [
        f"{v.model_type:26s} {v.cell_type:9s} {v.stain:5s} {v.verdict:15s} {v.why}"
        for v in verdicts.itertuples()
    ]
    lines += ["", "Real stain's Z' per screen, the readouts that best separate the controls:"]
    lines += _separating_readouts(table)
    lines += ["", "Model types on each screen, best first (summary readout, mean over seeds):"]
    lines += _ranking(table)
    lines += ["", "Level 4: screen decisions, virtual vs real", ""]
    for (readout, stain, cell_type), group in truth[
        truth["readout"].isin(["cell_count", "phenotype_score"])
    ].groupby(["readout", "stain", "cell_type"]):
        within = (group["error"].abs() <= TRUTH_TOLERANCE).sum()
        fitted = group["log_ec50"].notna().sum()
        known = (
            f"EC50 within {TRUTH_TOLERANCE} log10 of the truth for {within} of {len(group)} compounds"
            if group["true_log_ec50"].notna().any()
            else f"{NO_TRUTH}; the real EC50s are in screen_truth.csv"
        )
        lines.append(f"real {stain} {readout:15s} {cell_type:9s}: {known} ({fitted} fitted)")
    notes = []
    for readout, metrics in ((SUMMARY_READOUT, OUTCOME_METRICS), (PROFILE, PROFILE_METRICS)):
        lines += [
            "",
            f"{'model type':26s} {'screen':9s} {'readout':15s} "
            + " ".join(f"{header:>{width}s}" for header, width in metrics.values()),
        ]
        rows = table[table["readout"] == readout]
        rows = rows.iloc[np.lexsort([rows["cell_type"], rows["model_type"], control_order(rows)])]
        for (model_type, cell_type), group in rows.groupby(["model_type", "cell_type"], sort=False):
            first = (
                group[group["seed"] == group["seed"].min()]
                .set_index("metric")
                .reindex(list(metrics))
            )
            mean = group.groupby("metric")["value"].mean()
            cells = [_outcome_cell(first, mean, m, width) for m, (_, width) in metrics.items()]
            lines.append(f"{model_type:26s} {cell_type:9s} {readout:15s} {' '.join(cells)}")
            notes += [
                f"  {model_type} {cell_type} {readout} {metric}: {reason}"
                for metric, reason in first["reason"].fillna("").items()
                if reason
            ]
    lines += ["", "reasons (first seed; every row's in screen.csv):" if notes else ""] + notes
    return "\n".join(lines).rstrip("\n") + "\n"


def _separating_readouts(table: pd.DataFrame, *, shown: int = 3) -> list[str]:
    """Per (screen, stain), the readouts with the highest real-stain Z' (a readout an assay could
    run on reaches 0.5): the same for every model, so the first seed's rows of one model."""
    real = table[table["metric"] == "z_prime_real"].dropna(subset=["value"])
    real = real.drop_duplicates(["cell_type", "stain", "readout"])
    lines = []
    for (cell_type, stain), group in real.groupby(["cell_type", "stain"], sort=True):
        best = group.nlargest(shown, "value")
        readouts_z = ", ".join(f"{r} {z:.2f}" for r, z in zip(best["readout"], best["value"]))
        lines.append(f"  {cell_type:9s} {stain:5s} {readouts_z}")
    return lines


def _ranking(table: pd.DataFrame, *, metrics=RANKED) -> list[str]:
    """Per (screen, stain), the model types ranked on each of ``metrics`` (metric -> True where
    higher is better), those without a value last: which training, if any, a screen is best
    served by. Controls are not ranked; they are what the instrument must accept or refuse."""
    rows = table[(table["readout"] == SUMMARY_READOUT) & (table["control"] == "")]
    lines = []
    for (cell_type, stain), group in rows.groupby(["cell_type", "stain"], sort=True):
        for metric, higher in metrics.items():
            mean = group[group["metric"] == metric].groupby("model_type")["value"].mean()
            ranked = mean.sort_values(ascending=not higher, kind="stable", na_position="last")
            listed = ", ".join(
                f"{name} {value:.2f}" if np.isfinite(value) else f"{name} missing"
                for name, value in ranked.items()
            )
            lines.append(f"  {cell_type:9s} {stain:5s} {metric:11s} {listed}")
    return lines


def _outcome_cell(first: pd.DataFrame, mean: pd.Series, metric: str, width: int) -> str:
    """A metric's mean over the seeds that define it, with the first seed's CI where the column
    is wide enough ('no CI' where the first seed has none: the reasons under the table say why;
    an EC50 error at the tested range's cap is shown as such, not as a measurement)."""
    if not np.isfinite(mean.get(metric, np.nan)):
        return f"{'missing':>{width}s}"
    if first.get("capped_share", pd.Series(dtype=float)).get(metric) == 1:
        # the tested range's cap: the virtual curve has no EC50 where the real one has
        return f"{'no EC50 (capped)':>{width}s}"
    interval = ""
    if width > 7:
        low, high = first.loc[metric, "ci_low"], first.loc[metric, "ci_high"]
        interval = f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) else " (no CI)"
    return f"{mean[metric]:.2f}{interval}".rjust(width)


def write_screen_tables(config: dict, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    table, truth, trust = screen_table(config), truth_table(config), screen_trust_table(config)
    margins = config["evaluation"]["screen"]["margins"]
    verdicts = verdict_table(table, margins, SUMMARY_READOUT)
    written = {}
    for name, frame in zip(SCREEN_TABLES, (table, truth, verdicts, trust), strict=True):
        for fmt in TABLE_FORMATS:
            written[f"{name}.{fmt}"] = table_path(out_dir, name, fmt)
            write_table(frame, written[f"{name}.{fmt}"])
    outcome = screen_outcome(table, truth, verdicts)
    outcome += "".join(line + "\n" for line in trust_outcome(trust, margins))
    written[SCREEN_OUTCOME] = write_text(outcome, out_dir / SCREEN_OUTCOME)
    missing = table[table["value"].isna()]
    log.info("level 4: %d rows, %d metrics missing with their reasons", len(table), len(missing))
    print(written[SCREEN_OUTCOME].read_text())
    return written
