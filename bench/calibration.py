"""Are the deltas' 95 % confidence intervals honest? An A/A experiment on synthetic data.

    .venv/bin/python bench/calibration.py [--seeds 6] [--per-side 1 3] [--fields-per-well K] [--out DIR]

Runs the quick grid's workflow restricted to one training set (lung-nontoxic) with --seeds
seeds of every stain (or --stains), tested on its own test set and on the defocus control. Then it
compares disjoint groups of k seeds (--per-side, default half of them: 0..k-1 "model" against
k..2k-1 "baseline", then the next 2k; the same training set, so the true delta is 0) and
computes each (stain, test set, metric) delta with the tables' own code
(vsgrid.report.tables.run_deltas), once with the image-only CI and once with the hierarchical one
(seeds, wells, fields; with --fields-per-well K the test fields are whole wells of K fields, so
its well level is exercised). It prints how often each CI contains 0: a 95 % interval should, in
about 95 % of the cells. The workflow's results are kept in --out: another --per-side reuses them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from measure import arguments, run_workflow

from vsgrid.config import load_config
from vsgrid.grid import runs
from vsgrid.report.tables import Comparison, run_deltas

ROOT = Path(__file__).resolve().parents[1]
# Tiny: one seed a side (the hierarchical CI then cannot count training variation) and models
# trained for one epoch on a few fields, two a well: it checks that the experiment runs, not the CIs.
TINY = {"seeds": 2, "stains": ["dapi"], "fields": [8, 4, 8], "epochs": 1, "fields_per_well": 2}


def calibration_config(work: Path, args: argparse.Namespace) -> dict:
    config = load_config(ROOT / "config" / "quick.yaml")
    config["grid"].update(
        cell_types=["lung"], phenotypes=["nontoxic"], seeds=list(range(args.seeds))
    )
    config["grid"]["controls"] = [{"test_set": "lung-nontoxic", "acquisition": "defocus"}]
    if args.stains:
        config["grid"]["stains"] = args.stains
    if args.fields:
        config["data"]["splits"] = dict(zip(("train", "val", "test"), args.fields))
    if args.epochs:
        config["train"]["max_epochs"] = args.epochs
    if args.fields_per_well:
        config["data"]["synthetic"]["fields_per_well"] = args.fields_per_well
        config["data"]["test_sampling"] = "wells"
    config["evaluation"]["target"] = "compound"  # one phenotype only: rank on what varies within it
    config["data"]["dir"] = str(work / "data")
    config["results"]["dir"] = str(work / "results")
    return config


def aa_deltas(config: dict, ci: str, per_side: int) -> pd.DataFrame:
    """Every (stain, test set, metric) delta between disjoint groups of ``per_side`` seeds (seeds
    0..k-1 against k..2k-1, then 2k..3k-1 against 3k..4k-1, ...), with ``ci``."""
    config = {**config, "evaluation": {**config["evaluation"], "ci": ci}}
    all_runs, comparisons = runs(config), []
    for test_set in sorted({r.test_set for r in all_runs}, key=str):
        for stain in config["grid"]["stains"]:
            seeds = sorted(
                (r for r in all_runs if r.test_set == test_set and r.model.stain == stain),
                key=lambda r: r.model.seed,
            )
            for start in range(0, len(seeds) - 2 * per_side + 1, 2 * per_side):
                middle = start + per_side
                comparisons.append(
                    Comparison("aa", seeds[start:middle], seeds[middle : middle + per_side])
                )
    return run_deltas(config, comparisons)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=6, help="seeds of each stain, split in two")
    parser.add_argument("--stains", nargs="+", help="default: the quick grid's")
    parser.add_argument(
        "--fields",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        help="fields per split (default: the quick grid's)",
    )
    parser.add_argument("--epochs", type=int, help="train.max_epochs (default: the quick grid's)")
    parser.add_argument(
        "--fields-per-well",
        type=int,
        help="fields per synthetic well, the test fields drawn as whole wells (data.test_sampling: "
        "wells), so the hierarchical CI resamples fields within wells (default: the quick grid's 1)",
    )
    parser.add_argument(
        "--per-side",
        type=int,
        nargs="+",
        help="seeds on each side of a comparison, one table each (default: half of --seeds)",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/vsgrid-calibration"))
    args = arguments(parser, TINY)
    args.out.mkdir(parents=True, exist_ok=True)
    config = calibration_config(args.out, args)
    run_workflow(config, args.out, "evaluate")
    print(
        f"A/A of lung-nontoxic's seeds 0-{args.seeds - 1}, stains {', '.join(config['grid']['stains'])}"
    )
    print(
        f"{'seeds a side':>12} {'CI':<13} {'cells':>5} {'contain 0':>9} {'coverage':>8} {'median width':>12}"
    )
    for per_side in args.per_side or [args.seeds // 2]:
        for ci in ("images", "hierarchical"):
            deltas = aa_deltas(config, ci, per_side)
            finite = deltas.dropna(subset=["ci_low", "ci_high"])
            covers = (finite["ci_low"] <= 0) & (finite["ci_high"] >= 0)
            width = (finite["ci_high"] - finite["ci_low"]) / finite["baseline"].abs().where(
                finite["baseline"] != 0
            )
            print(
                f"{per_side:>12} {ci:<13} {len(finite):5d} {int(covers.sum()):9d}"
                f" {covers.mean():8.1%} {np.nanmedian(width):11.1%}"
            )
            deltas.to_csv(args.out / f"aa-{per_side}-{ci}.csv", index=False)
    print(f"(width relative to the baseline's value; per-cell deltas in {args.out}/aa-*.csv)")


if __name__ == "__main__":
    main()
