"""Evaluation speed: cp_measure features and Cellpose segmentation at the paper's image size.

    .venv/bin/python bench/evaluate.py [--images 8] [--size 1080] [--cellpose-weights FILE]
                                       [--job-fields 16] [--repeats 5]

Features: synthetic lung fields (1080 x 1080: about 300 cells) with their ground-truth nuclei,
every feature of config/config.yaml, serial cp_measure against vsgrid's process pool on all cores.
Cellpose: images per second of Cellpose 3 (CPnet) on the same fields, gamma-corrected, with
the given weights or, where none are at hand (no internet here), a randomly initialised CPnet:
the network's cost does not depend on its weights, only mask finding does, a little.
A job: the CPU seconds of a fresh process measuring --job-fields fields of 128 x 128 (the quick
grid's evaluate job) with cp_measure's numba accelerator and without. Granularity and radial
distribution: milliseconds per 128 x 128 field of cp_measure's and of vsgrid's rewrites (numba
morphology; fewer NumPy passes); the classical segmenter's with scikit-image's watershed seeds
and with numba's (kernels warmed up).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import arguments, run

from vsgrid.config import load_config
from vsgrid.data.synthetic import Profile, render_field, sample_cells
from vsgrid.evaluation.features import FeatureSet, measure_stack, worker_pool
from vsgrid.seeds import rng_for

ROOT = Path(__file__).resolve().parents[1]
TINY = {"images": 2, "size": 128, "job_fields": 2, "repeats": 1}
# One job's feature measurement in a fresh process, as a Snakemake job pays it: Python, the
# imports, cp_measure with the given accelerator (numba: its import and cached kernels), the fields.
JOB = """
import sys
import numpy as np
from vsgrid.config import load_config
from vsgrid.evaluation.features import FeatureSet
fields = np.load(sys.argv[1])
config = load_config(sys.argv[2])
config["features"]["accelerator"] = sys.argv[3]
features = FeatureSet.from_config(config["features"])
for image, mask in zip(fields["images"], fields["masks"]):
    features.measure(image, mask)
"""


def fields(config: dict, n: int, size: int):
    lung = Profile(**config["data"]["synthetic"]["cell_types"]["lung"])
    out = []
    for k in range(n):
        rng = rng_for(0, "bench-evaluate", k)
        image, masks = render_field(
            sample_cells(rng, lung, 0.0, (size, size), 0.65), (size, size), 0.65, rng
        )
        out.append((image[1], masks[0].astype(np.int32)))
    return np.stack([f[0] for f in out]), np.stack([f[1] for f in out])


def job_cpu(config_file: Path, images, masks, repeats: int) -> dict[str, float]:
    """Median CPU seconds of a fresh process measuring ``images`` with each accelerator, the two
    alternating so that a change in the shared machine's speed touches both alike."""
    cpu = {"numba": [], "none": []}
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "fields.npz", images=images, masks=masks)
        for _ in range(repeats):
            for accelerator in cpu:
                command = [sys.executable, "-c", JOB, "fields.npz", str(config_file), accelerator]
                cpu[accelerator].append(run(command, Path(tmp))[2])
    return {accelerator: statistics.median(seconds) for accelerator, seconds in cpu.items()}


def alternating_ms(implementations: dict, fields: list[tuple], repeats: int) -> dict[str, float]:
    """Median milliseconds per field of each implementation (name -> function of a field's
    arguments), the implementations alternating pass by pass; each runs once before the clock
    starts, so numba's kernels are compiled (or loaded)."""
    seconds = {name: [] for name in implementations}
    for measure in implementations.values():
        measure(*fields[0])
    for _ in range(repeats):
        for name, measure in implementations.items():
            start = time.perf_counter()
            for field in fields:
                measure(*field)
            seconds[name].append((time.perf_counter() - start) / len(fields))
    return {name: 1e3 * statistics.median(s) for name, s in seconds.items()}


def rewritten_ms(images, masks, repeats: int) -> dict[str, dict[str, float]]:
    """cp_measure's granularity and radial distribution against vsgrid's, and the classical
    segmenter with scikit-image's watershed seeds against numba's, per 128 x 128 field."""
    from cp_measure._sanitize import sanitize
    from cp_measure.core.measuregranularity import get_granularity
    from cp_measure.core.measureobjectintensitydistribution import get_radial_distribution

    from vsgrid.evaluation import granularity, radial
    from vsgrid.evaluation.segment import NUMBA_SEEDS_IMAGES, classical_segmenter

    pairs = [(m, i.astype(np.float64) / 65535) for i, m in zip(images, masks)]
    found = {
        group: alternating_ms(
            {"cp_measure": sanitize(theirs), "vsgrid": sanitize(ours)}, pairs, repeats
        )
        for group, theirs, ours in (
            ("granularity", get_granularity, granularity.get_granularity),
            ("radial distribution", get_radial_distribution, radial.get_radial_distribution),
        )
    }
    settings = load_config(ROOT / "config" / "quick.yaml")["segmentation"]
    segmenters = {
        name: classical_segmenter(settings, "dapi", 0.65, images=n)  # fields() renders at 0.65 um
        for name, n in (("scikit-image", 1), ("numba", NUMBA_SEEDS_IMAGES))
    }
    found["segmentation"] = alternating_ms(
        {name: lambda image, s=s: s(image[None]) for name, s in segmenters.items()},
        [(image,) for image in images],
        repeats,
    )
    return found


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8, help="fields measured")
    parser.add_argument("--size", type=int, default=1080, help="their side in pixels")
    parser.add_argument(
        "--cellpose-weights", help="a Cellpose weights file (default: random CPnet)"
    )
    parser.add_argument(
        "--job-fields",
        type=int,
        default=16,
        help="fields of 128 x 128 in one job's measurement, numba against none (a quick evaluate job: 16)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes of each")
    args = arguments(parser, TINY)
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {platform.machine()}, {cores} cores")
    config = load_config(ROOT / "config" / "config.yaml")
    images, masks = fields(config, args.images, args.size)
    cells = np.mean([len(np.unique(m)) - 1 for m in masks])
    features = FeatureSet.from_config(config["features"])
    n_features = len(features.columns)
    print(
        f"{args.images} fields of {args.size} x {args.size} with {cells:.0f} nuclei each,"
        f" {n_features} features per nucleus"
    )

    start = time.perf_counter()
    for image, mask in zip(images, masks):
        features.measure(image, mask)
    serial = time.perf_counter() - start
    start = time.perf_counter()
    with worker_pool(cores) as pmap:  # its start-up counted: a job pays it too
        measure_stack(images, masks, features, pmap)
    parallel = time.perf_counter() - start
    total = args.images * cells
    print(
        f"features, serial cp_measure:   {total / serial:7.1f} nuclei/s"
        f" ({total * n_features / serial:9.0f} feature values/s, {serial / args.images:.2f} s per field)"
    )
    print(
        f"features, {cores} processes:       {total / parallel:7.1f} nuclei/s"
        f" ({total * n_features / parallel:9.0f} feature values/s), speed-up {serial / parallel:.2f}x"
    )

    quick = ROOT / "config" / "quick.yaml"
    small = fields(load_config(quick), args.job_fields, 128)
    cpu = job_cpu(quick, *small, args.repeats)
    print(
        f"one job's features, fresh process, {args.job_fields} fields of 128 x 128:"
        f" numba {cpu['numba']:.2f} s CPU, none {cpu['none']:.2f} s CPU"
        f" (none / numba {cpu['none'] / cpu['numba']:.2f})"
    )
    ms = rewritten_ms(*small, args.repeats)
    for group in ("granularity", "radial distribution"):
        theirs, ours = ms[group]["cp_measure"], ms[group]["vsgrid"]
        print(
            f"{group}, {args.job_fields} fields of 128 x 128: cp_measure {theirs:.2f} ms,"
            f" vsgrid's {ours:.2f} ms per field (x{theirs / ours:.1f})"
        )
    theirs, ours = ms["segmentation"]["scikit-image"], ms["segmentation"]["numba"]
    print(
        f"classical segmentation, {args.job_fields} fields of 128 x 128: scikit-image's seeds"
        f" {theirs:.2f} ms, numba's {ours:.2f} ms per field (x{theirs / ours:.1f})"
    )

    import torch
    from cellpose import models

    from vsgrid.evaluation.segment import gamma_correct

    gpu = torch.cuda.is_available()
    if args.cellpose_weights:
        model = models.CellposeModel(gpu=gpu, pretrained_model=args.cellpose_weights)
    else:
        torch.manual_seed(0)
        model = models.CellposeModel(
            gpu=gpu, pretrained_model=False, model_type=None, diam_mean=17.0
        )
    prepared = [gamma_correct(i, 0.3) for i in images]
    model.eval(prepared[:1], channels=[0, 0], diameter=17.0)  # warm-up
    start = time.perf_counter()
    model.eval(prepared, channels=[0, 0], diameter=17.0, batch_size=8)
    seconds = time.perf_counter() - start
    where = f"GPU {torch.cuda.get_device_name()}" if gpu else "CPU"
    print(
        f"Cellpose 3 on {where}: {args.images / seconds:.3f} images/s"
        f" ({seconds / args.images:.2f} s per {args.size} x {args.size} field)"
    )


if __name__ == "__main__":
    main()
