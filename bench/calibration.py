"""Are the deltas' 95 % confidence intervals honest? An A/A experiment on synthetic data.

    .venv/bin/python bench/calibration.py [--seeds 6] [--out /tmp/vsgrid-calibration]

Runs the quick grid's workflow restricted to one training set (lung-nontoxic) with --seeds
seeds of every stain, tested on its own test set and on the defocus control. Then it splits the
seeds into two disjoint groups (first half "model", second half "baseline": the same training
set, so the true delta is 0) and computes each (stain, test set, metric) delta with the tables'
own code, once with the image-only CI and once with the hierarchical one (seeds, wells, fields).
It prints how often each CI contains 0: a 95 % interval should, in about 95 % of the cells.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from vsgrid.config import load_config
from vsgrid.grid import runs
from vsgrid.layout import Layout
from vsgrid.report.tables import _delta_rows, _score_runs, _test_weights

ROOT = Path(__file__).resolve().parents[1]


def calibration_config(work: Path, seeds: int) -> dict:
    config = load_config(ROOT / "config" / "quick.yaml")
    config["grid"].update(cell_types=["lung"], phenotypes=["nontoxic"], seeds=list(range(seeds)))
    config["grid"]["controls"] = [{"test_set": "lung-nontoxic", "acquisition": "defocus"}]
    config["evaluation"]["target"] = "compound"  # one phenotype only: rank on what varies within it
    config["data"]["dir"] = str(work / "data")
    config["results"]["dir"] = str(work / "results")
    return config


def run_grid(config: dict, work: Path) -> None:
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [
        str(bin_dir / "snakemake"),
        "--profile",
        "profiles/local",
        "--configfile",
        str(path),
        "--until",
        "evaluate",
        "--quiet",
        "progress",
    ]
    subprocess.run(command, cwd=ROOT, env=env, check=True)


def aa_deltas(config: dict, ci: str) -> pd.DataFrame:
    """Every (stain, test set, metric) delta between the two halves of the seeds, with ``ci``."""
    settings = {**config["evaluation"], "ci": ci}
    config = {**config, "evaluation": settings}
    layout, rows = Layout.of(config), []
    all_runs = runs(config)
    for test_set in sorted({r.test_set for r in all_runs}, key=str):
        weights = _test_weights(config, test_set.twin, settings["bootstrap_resamples"])
        for stain in config["grid"]["stains"]:
            seeds = sorted(
                (r for r in all_runs if r.test_set == test_set and r.model.stain == stain),
                key=lambda r: r.model.seed,
            )
            half = len(seeds) // 2
            scored = _score_runs(layout, seeds, weights)
            rows += _delta_rows("aa", seeds[:half], seeds[half : 2 * half], scored, settings)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("/tmp/vsgrid-calibration"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = calibration_config(args.out, args.seeds)
    run_grid(copy.deepcopy(config), args.out)
    print(
        f"A/A: seeds {list(range(args.seeds // 2))} against {list(range(args.seeds // 2, 2 * (args.seeds // 2)))} of lung-nontoxic, every stain"
    )
    print(f"{'CI':<13} {'cells':>5} {'contain 0':>9} {'coverage':>8} {'median width':>12}")
    for ci in ("images", "hierarchical"):
        deltas = aa_deltas(config, ci)
        finite = deltas.dropna(subset=["ci_low", "ci_high"])
        covers = (finite["ci_low"] <= 0) & (finite["ci_high"] >= 0)
        width = (finite["ci_high"] - finite["ci_low"]) / finite["baseline"].abs().where(
            finite["baseline"] != 0
        )
        print(
            f"{ci:<13} {len(finite):5d} {int(covers.sum()):9d} {covers.mean():8.1%} {np.nanmedian(width):11.1%}"
        )
        deltas.to_csv(args.out / f"aa-{ci}.csv", index=False)
    print(f"(width relative to the baseline's value; per-cell deltas in {args.out}/aa-*.csv)")


if __name__ == "__main__":
    main()
