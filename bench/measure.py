"""Time and peak memory of a command, for the benchmarks (imported by bench/scale.py and bench/tables.py)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


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
