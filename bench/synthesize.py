"""Synthetic field rendering speed: fields per second at 256 x 256 and 1080 x 1080.

Renders untreated lung fields (the densest cell type) at the paper's 0.65 um pixels, in this
process and across all cores, and times one whole store build (rendering, compression, Zarr
writes) of the quick config. Run: .venv/bin/python bench/synthesize.py
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from vsgrid.config import load_config
from vsgrid.data.synthetic import Profile, render_field, sample_cells, synthesize
from vsgrid.seeds import rng_for

ROOT = Path(__file__).resolve().parents[1]
LUNG = Profile(
    **load_config(ROOT / "config" / "config.yaml")["data"]["synthetic"]["cell_types"]["lung"]
)


def render(args):
    size, k = args
    rng = rng_for(0, "bench", size, k)
    cells = sample_cells(rng, LUNG, 0.0, (size, size), 0.65)
    render_field(cells, (size, size), 0.65, rng)
    return len(cells["centre"])


def rate(size: int, n: int, workers: int) -> tuple[float, float]:
    jobs = [(size, k) for k in range(n)]
    start = time.perf_counter()
    if workers == 1:
        cells = list(map(render, jobs))
    else:
        with ProcessPoolExecutor(workers) as pool:
            cells = list(pool.map(render, jobs))
    return n / (time.perf_counter() - start), sum(cells) / n


def main():
    cores = os.cpu_count()
    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}"
    )
    for size, n in ((256, 64), (1080, 12)):
        for workers in (1, cores):
            fields_per_s, cells = rate(size, n, workers)
            print(
                f"{size:>5} x {size:<5} {workers} process(es): {fields_per_s:7.2f} fields/s  ({cells:.0f} cells per field)"
            )
    config = load_config(ROOT / "config" / "quick.yaml")
    n_fields = (
        sum(config["data"]["splits"].values())
        * len(config["grid"]["cell_types"])
        * len(config["grid"]["phenotypes"])
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        synthesize(config, out, progress=False)
        seconds = time.perf_counter() - start
    print(
        f"quick dataset (config/quick.yaml, {n_fields} fields of 128 x 128, {cores} processes): {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
