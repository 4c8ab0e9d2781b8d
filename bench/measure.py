"""What the benchmark scripts share: the command line's ``--tiny``, running the workflow on a
config, and the time and peak memory of a command. A module the scripts import, not a script."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def arguments(parser: argparse.ArgumentParser, tiny: dict) -> argparse.Namespace:
    """The parsed command line, with ``--tiny``: ``tiny``'s values as defaults (options given on
    the command line still win), a size that runs in seconds, for smoke tests."""
    options = " ".join(
        f"--{key.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        for key, value in tiny.items()
    )
    parser.add_argument("--tiny", action="store_true", help=f"run in seconds: {options}")
    args = parser.parse_args()
    if args.tiny:
        parser.set_defaults(**tiny)
        args = parser.parse_args()
    return args


def run_workflow(config: dict, work: Path, until: str) -> None:
    """The workflow on ``config`` (written to ``work``/config.yaml) up to the jobs of rule
    ``until``, with the local profile; Snakemake's state stays in ``work``."""
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    bin_dir = Path(sys.executable).parent  # the jobs call this environment's `vsgrid`
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [str(bin_dir / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile")]
    command += ["--directory", str(work), "--profile", str(ROOT / "profiles" / "local")]
    command += ["--configfile", str(path), "--until", until, "--quiet", "rules", "progress"]
    subprocess.run(command, env=env, check=True)


def run(command: list[str], cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, peak memory (MB: resident set of the process and its workers together,
    sampled every 0.1 s) and CPU seconds (user and system, of the process and every worker it
    waited for) of one vsgrid process."""
    import resource

    import psutil

    if command[0] == "vsgrid":  # this interpreter's, wherever the command runs
        command = [sys.executable, "-m", "vsgrid.cli", *command[1:]]
    log = tempfile.TemporaryFile("w+")  # a pipe left unread would fill and stall the process
    cpu_before = _children_cpu(resource)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if process.returncode:
        log.seek(0)
        sys.exit(f"{' '.join(command)} failed:\n{log.read()[-3000:]}")
    return seconds, peak / 2**20, _children_cpu(resource) - cpu_before


def _children_cpu(resource) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
