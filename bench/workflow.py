"""How long Snakemake takes to plan the paper grid, next to a one-rule Snakefile.

    .venv/bin/python bench/workflow.py [--configfile config/config.yaml] [--repeats 3]

Every job re-reads the Snakefile, so its parse and the DAG must stay cheap: the Snakefile
imports neither torch nor any data, and the grid comes from vsgrid.grid.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import arguments

ROOT = Path(__file__).resolve().parents[1]
TINY = {"configfile": ROOT / "config" / "quick.yaml", "repeats": 1}


def dry_run(snakefile: Path, workdir: Path, *args: str) -> tuple[float, str]:
    command = [
        str(Path(sys.executable).parent / "snakemake"),  # this environment's
        "-n",
        "--cores",
        "1",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        *args,
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, result.stdout + result.stderr


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configfile", type=Path, default=ROOT / "config" / "config.yaml", help="the grid to plan"
    )
    parser.add_argument("--repeats", type=int, default=3, help="dry runs of each; the best counts")
    args = arguments(parser, TINY)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one_rule = tmp / "Snakefile"
        one_rule.write_text('rule all:\n    output: "done.txt"\n    shell: "touch {output}"\n')
        baseline = min(dry_run(one_rule, tmp)[0] for _ in range(args.repeats))
        timings, text = [], ""
        for _ in range(args.repeats):
            seconds, text = dry_run(
                ROOT / "workflow" / "Snakefile", tmp, "--configfile", str(args.configfile.resolve())
            )
            timings.append(seconds)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", text[text.find("Job stats:") :], re.M))
    print(f"{'one-rule Snakefile':<20} dry run {baseline:.2f} s (best of {args.repeats})")
    print(
        f"{args.configfile.name + ' grid':<20} dry run {min(timings):.2f} s (best of {args.repeats}),"
        f" {jobs.get('total')} jobs: "
        f"{jobs.get('train')} train, {jobs.get('infer')} infer, {jobs.get('evaluate')} evaluate"
    )


if __name__ == "__main__":
    main()
