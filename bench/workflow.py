"""How long Snakemake takes to plan the paper grid, next to a one-rule Snakefile.

    PATH=.venv/bin:$PATH python bench/workflow.py

Every job re-reads the Snakefile, so its parse and the DAG must stay cheap: the Snakefile
imports neither torch nor any data, and the grid comes from vsgrid.grid.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(snakefile: Path, workdir: Path, *args: str) -> tuple[float, str]:
    command = [
        shutil.which("snakemake"),
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
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one_rule = tmp / "Snakefile"
        one_rule.write_text('rule all:\n    output: "done.txt"\n    shell: "touch {output}"\n')
        baseline = min(dry_run(one_rule, tmp)[0] for _ in range(3))
        timings, text = [], ""
        for _ in range(3):
            seconds, text = dry_run(
                ROOT / "Snakefile", tmp, "--configfile", str(ROOT / "config" / "config.yaml")
            )
            timings.append(seconds)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", text[text.find("Job stats:") :], re.M))
    print(f"one-rule Snakefile, dry run:  {baseline:.2f} s")
    print(
        f"paper grid, dry run:          {min(timings):.2f} s (best of 3), {jobs.get('total')} jobs: "
        f"{jobs.get('train')} train, {jobs.get('infer')} infer, {jobs.get('evaluate')} evaluate"
    )


if __name__ == "__main__":
    main()
