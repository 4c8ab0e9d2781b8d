"""Where a finished workflow's time went: per rule, its jobs' wall and CPU seconds.

    .venv/bin/python bench/jobs.py [--results results/quick]

Run it after `make quick` (or any run). Wall seconds come from each job's `benchmark:` file, CPU
seconds from the last line of its log, where `vsgrid` writes the CPU time of its process and its
worker processes (the benchmark files' cpu_time misses the end of long jobs: docs/workflow.md).
With --tiny it runs the first steps of a one-data-set workflow into --out and reads those.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
from measure import arguments, run_workflow

from vsgrid.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY: dict = {}  # --tiny reads a workflow of its own (tiny_results)
CPU_LINE = re.compile(r"vsgrid \S+: ([\d.]+) s of CPU")


def job_times(results: Path) -> pd.DataFrame:
    """One row per job of ``results``: its rule, wall seconds and CPU seconds (NaN where its log
    has no CPU line: a job that failed, or one run before vsgrid wrote it)."""
    rows = []
    for benchmark in sorted((results / "benchmarks").rglob("*.tsv")):
        job = str(benchmark.relative_to(results / "benchmarks")).removesuffix(".tsv")
        log = results / "logs" / f"{job}.log"
        found = CPU_LINE.findall(log.read_text(errors="replace")) if log.is_file() else []
        wall = pd.read_csv(benchmark, sep="\t")["s"].iloc[0]
        rows.append(
            {"rule": Path(job).parts[0], "wall": wall, "cpu": float(found[-1]) if found else None}
        )
    if not rows:
        raise SystemExit(f"{results}/benchmarks: no benchmark files (is it a results folder?)")
    return pd.DataFrame(rows)


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    table = jobs.groupby("rule", sort=False).agg(
        jobs=("wall", "size"), wall=("wall", "sum"), cpu=("cpu", "sum")
    )
    table.loc["all"] = [len(jobs), jobs["wall"].sum(), jobs["cpu"].sum()]
    return table


def tiny_results(out: Path) -> Path:
    """A one-data-set workflow run up to its reference features (store, segment, measure)."""
    config = load_config(ROOT / "config" / "quick.yaml")
    config["grid"].update(cell_types=["lung"], phenotypes=["toxic"], stains=["dapi"], controls=[])
    config["data"]["splits"] = {"train": 4, "val": 2, "test": 4}
    config["evaluation"]["screen"]["enabled"] = False
    config["data"]["dir"], config["results"]["dir"] = str(out / "data"), str(out / "results")
    out.mkdir(parents=True, exist_ok=True)
    run_workflow(config, out, "features_real")
    return out / "results"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=Path("results/quick"))
    parser.add_argument(
        "--out", type=Path, default=Path("/tmp/vsgrid-jobs"), help="with --tiny: where it runs"
    )
    args = arguments(parser, TINY)
    results = tiny_results(args.out) if args.tiny else args.results
    jobs = job_times(results)
    print(f"{'rule':<18} {'jobs':>5} {'wall s':>8} {'CPU s':>8} {'wall s/job':>10}")
    for rule, row in per_rule(jobs).iterrows():
        print(
            f"{rule:<18} {row['jobs']:5.0f} {row['wall']:8.1f} {row['cpu']:8.1f}"
            f" {row['wall'] / row['jobs']:10.2f}"
        )
    if unlogged := int(jobs["cpu"].isna().sum()):
        print(f"({unlogged} jobs without a CPU line in their log: not counted in CPU s)")


if __name__ == "__main__":
    main()
