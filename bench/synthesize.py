"""Synthetic field rendering speed: fields per second at 256 x 256 and 1080 x 1080.

    .venv/bin/python bench/synthesize.py [--fields 64 12] [--splits 64 16 16]

Renders untreated lung fields (the densest cell type) at the paper's 0.65 um pixels, in this
process and across all cores, and times one whole build of the quick config's stores (rendering,
compression, Zarr writes), with its splits or --splits.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from measure import arguments

from vsgrid.config import load_config
from vsgrid.data.synthetic import Profile, render_field, sample_cells, synthesize
from vsgrid.seeds import rng_for

ROOT = Path(__file__).resolve().parents[1]
TINY = {"fields": [4, 1], "splits": [4, 2, 2]}
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fields",
        type=int,
        nargs=2,
        default=[64, 12],
        metavar=("N256", "N1080"),
        help="fields rendered at 256 x 256 and at 1080 x 1080",
    )
    parser.add_argument(
        "--splits",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        help="fields per split of each store built (default: config/quick.yaml's)",
    )
    args = arguments(parser, TINY)
    cores = os.cpu_count()
    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} cores,"
        f" Python {platform.python_version()}"
    )
    for size, n in zip((256, 1080), args.fields):
        for workers in (1, cores):
            fields_per_s, cells = rate(size, n, workers)
            print(
                f"{size:>5} x {size:<5} {workers} process(es): {fields_per_s:7.2f} fields/s"
                f"  ({cells:.0f} cells per field)"
            )
    config = load_config(ROOT / "config" / "quick.yaml")
    if args.splits:
        config["data"]["splits"] = dict(zip(("train", "val", "test"), args.splits))
    size = config["data"]["synthetic"]["field_size"]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        stores = synthesize(config, out, progress=False)
        seconds = time.perf_counter() - start
    splits = config["data"]["splits"]
    controls = len(config["grid"]["controls"])  # a control store holds the test split only
    fields = (len(stores) - controls) * sum(splits.values()) + controls * splits["test"]
    print(
        f"quick dataset (config/quick.yaml, {len(stores)} stores, {fields} fields of {size} x {size},"
        f" {cores} processes): {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
