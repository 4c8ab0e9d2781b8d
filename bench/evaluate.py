"""Evaluation speed: cp_measure features and Cellpose segmentation at the paper's image size.

    .venv/bin/python bench/evaluate.py [--images 4] [--cellpose-weights FILE]

Features: synthetic 1080 x 1080 lung fields (about 300 cells) with their ground-truth nuclei,
every configured feature group, serial cp_measure against vsgrid's process pool on all cores.
Cellpose: images per second of Cellpose 3 (CPnet) on the same fields, gamma-corrected, with
the given weights or, where none are at hand (no internet here), a randomly initialised CPnet:
the network's cost does not depend on its weights, only mask finding does, a little.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from vsgrid.config import load_config
from vsgrid.data.synthetic import Profile, render_field, sample_cells
from vsgrid.evaluation.features import measure, measure_stack
from vsgrid.seeds import rng_for

ROOT = Path(__file__).resolve().parents[1]


def fields(n: int, size: int = 1080):
    lung = Profile(
        **load_config(ROOT / "config" / "config.yaml")["data"]["synthetic"]["cell_types"]["lung"]
    )
    out = []
    for k in range(n):
        rng = rng_for(0, "bench-evaluate", k)
        image, masks = render_field(
            sample_cells(rng, lung, 0.0, (size, size), 0.65), (size, size), 0.65, rng
        )
        out.append((image[1], masks[0].astype(np.int32)))
    return np.stack([f[0] for f in out]), np.stack([f[1] for f in out])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument(
        "--cellpose-weights", help="a Cellpose weights file (default: random CPnet)"
    )
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {platform.machine()}, {cores} cores")
    images, masks = fields(args.images)
    cells = np.mean([len(np.unique(m)) - 1 for m in masks])
    n_features = measure(images[0][:64, :64], masks[0][:64, :64]).shape[1] - 1
    print(
        f"{args.images} fields of 1080 x 1080 with {cells:.0f} nuclei each, {n_features} features per nucleus"
    )

    start = time.perf_counter()
    for image, mask in zip(images, masks):
        measure(image, mask)
    serial = time.perf_counter() - start
    start = time.perf_counter()
    measure_stack(images, masks, workers=cores)
    parallel = time.perf_counter() - start
    total = args.images * cells
    print(
        f"features, serial cp_measure:   {total / serial:7.1f} nuclei/s ({total * n_features / serial:9.0f} feature values/s, {serial / args.images:.2f} s per field)"
    )
    print(
        f"features, {cores} processes:       {total / parallel:7.1f} nuclei/s ({total * n_features / parallel:9.0f} feature values/s), speed-up {serial / parallel:.2f}x"
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
    print(
        f"Cellpose 3 on {'GPU ' + torch.cuda.get_device_name() if gpu else 'CPU'}: {args.images / seconds:.3f} images/s ({seconds / args.images:.2f} s per 1080 x 1080 field)"
    )


if __name__ == "__main__":
    main()
