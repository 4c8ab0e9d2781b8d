"""The paper grid's cost, from the real steps run on slices of one test set at paper image size.

    .venv/bin/python bench/scale.py [--sizes 32 128] [--field-size 1080] [--out /tmp/vsgrid-scale]

Builds a synthetic lung-toxic store of the paper config (1080 x 1080 fields) with as many test
fields as the largest slice, then runs each CPU step as its own `vsgrid` process on the first N
test images (N = each slice size), as the workflow does: real-stain segmentation (classical),
real features (every group), the ranking (on the real features of the slice), and the evaluation
of a prediction. The prediction stands in for the paper network's output: the real stain blurred
and with noise added, segmented as the inference job would. Per step: seconds per image (the
slope between the two slices) and peak memory (maximum resident set of the process) at both
sizes: flat memory means the step streams. Time is CPU time (user and system of the process and
its workers), so a step's core-hours do not depend on how well it used the cores it had.

Then it extrapolates to the paper grid (config/config.yaml: 4,800 test images per test set, 243
runs, 12 real segmentations, 18 real feature tables, 9 rankings): CPU core-hours, peak memory per
job, cluster jobs. GPU steps (training, inference, Cellpose) are not timed here: this machine has
no GPU (bench/model.py measures them where one is); their jobs are counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import yaml
import zarr
from measure import arguments, run
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
# Tiny: every step on a few small fields; its extrapolation to the paper grid means nothing.
TINY = {"sizes": [2, 4], "field_size": 256}
PAPER = {
    "field_size": 1080,
    "test_images": 4800,
    "runs": 243,
    "segment_real": 12,
    "features_real": 18,
    "rank_features": 9,
    "train": 54,
    "infer": 54,
}


def config_for(work: Path, test_images: int, workers: int, field_size: int) -> Path:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["grid"].update(
        cell_types=["lung"], phenotypes=["nontoxic", "toxic"], stains=["dapi"], seeds=[0]
    )
    config["data"].update(
        dir=str(work / "data"), splits={"train": 4, "val": 4, "test": test_images}, test_plates=1
    )
    config["data"]["synthetic"].update(
        plates_per_cell_type=2, workers=workers, field_size=field_size
    )
    config["segmentation"] = {"backend": "classical"}
    config["features"] = {"workers": workers}
    config["results"] = {"dir": str(work / "results")}
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"config-{test_images}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fake_prediction(store: Path, out: Path, n: int) -> None:
    """The real DAPI of the first n test images, blurred and noisy, as an inference job writes it
    (with the prediction's own masks, from the classical backend)."""
    from vsgrid import arrays
    from vsgrid.config import validate
    from vsgrid.data.store import open_store
    from vsgrid.evaluation.segment import segmenter

    opened = open_store(store)
    shape = opened.images("test").shape[-2:]
    group = zarr.open_group(out, mode="w")
    image = arrays.create(group, (n, *shape), chunks=(1, *shape), dtype="uint16", name="image")
    labels = arrays.create(group, (n, *shape), chunks=(1, *shape), dtype="int32", name="labels")
    segment = segmenter(
        validate({"segmentation": {"backend": "classical"}})["segmentation"], "dapi", 0.65
    )
    rng = np.random.default_rng(0)
    for i in range(n):
        real = opened.images("test")[i, 1].astype(np.float32)
        predicted = np.clip(
            ndi.gaussian_filter(real, 1.5) + rng.normal(0, 150, real.shape), 0, 65535
        ).astype(np.uint16)
        image[i], labels[i] = predicted, segment(predicted[None])[0]
    group.attrs.update(
        {
            "stain": "dapi",
            "test_set": "lung-toxic",
            "store_id": opened.store_id,
            "model": "lung-nontoxic.dapi.s0",
        }
    )


def slice_store(full: Path, out: Path, n: int) -> None:
    """The first n test fields of a store, as a store of their own (same store_id, so the
    prediction of the slice matches it), written through the store's own API so that its
    checksums hold."""
    from vsgrid.data.store import SPLITS, create_store, open_store

    source = open_store(full)
    sizes = {split: len(source.images(split)) for split in SPLITS} | {"test": n}
    meta = source.metadata
    metadata = meta[(meta["split"] != "test") | (meta["index"] < n)]
    shape = source.images("test").shape[-2:]
    with create_store(out, sizes, shape, metadata, source.attrs, source.has_masks) as group:
        for split, size in sizes.items():
            for name, read in ((split, source.images), (f"{split}_masks", source.masks)):
                if name in group:
                    for start in range(0, size, 64):
                        stop = min(start + 64, size)
                        group[name][start:stop] = read(split)[start:stop]


def measure_slice(
    work: Path, full: Path, n: int, workers: int, field_size: int
) -> dict[str, tuple[float, float]]:
    here = work / f"slice-{n}"
    config = config_for(here, n, workers, field_size)
    for data_set in ("lung-toxic", "lung-nontoxic"):
        slice_store(full / f"{data_set}.zarr", here / "data" / f"{data_set}.zarr", n)
    ref, c = here / "results" / "reference", ["--config", str(config)]
    steps = {}
    for data_set in ("lung-toxic", "lung-nontoxic"):
        masks = ref / data_set / "dapi.masks.zarr"
        steps.setdefault("segment_real", []).append(
            run(
                [
                    "vsgrid",
                    "segment",
                    *c,
                    "--test-set",
                    data_set,
                    "--stain",
                    "dapi",
                    "--out",
                    str(masks),
                ],
                here,
            )
        )
        features = ref / data_set / "dapi.features.parquet"
        steps.setdefault("features_real", []).append(
            run(
                [
                    "vsgrid",
                    "measure",
                    *c,
                    "--test-set",
                    data_set,
                    "--stain",
                    "dapi",
                    "--masks",
                    str(masks),
                    "--out",
                    str(features),
                    "--quiet",
                ],
                here,
            )
        )
    inputs = [f"{d}={ref / d / 'dapi.features.parquet'}" for d in ("lung-nontoxic", "lung-toxic")]
    steps["rank_features"] = [
        run(
            [
                "vsgrid",
                "rank-features",
                *c,
                "--inputs",
                *inputs,
                "--workers",
                str(workers),
                "--out",
                str(ref / "lung.dapi.tsv"),
            ],
            here,
        )
    ]
    fake_prediction(here / "data" / "lung-toxic.zarr", here / "prediction.zarr", n)
    evaluate = [
        "vsgrid",
        "evaluate",
        *c,
        "--test-set",
        "lung-toxic",
        "--stain",
        "dapi",
        "--prediction",
        str(here / "prediction.zarr"),
        "--model",
        "lung-nontoxic.dapi.s0",
    ]
    evaluate += [
        "--real-masks",
        str(ref / "lung-toxic" / "dapi.masks.zarr"),
        "--real-features",
        str(ref / "lung-toxic" / "dapi.features.parquet"),
    ]
    evaluate += [
        "--ranking",
        str(ref / "lung.dapi.tsv"),
        "--workers",
        str(workers),
        "--out",
        str(here / "run"),
    ]
    steps["evaluate"] = [run(evaluate, here)]
    return {
        step: (np.mean([cpu for _, _, cpu in values]), max(peak for _, peak, _ in values))
        for step, values in steps.items()
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=[32, 128], help="test images of the two slices"
    )
    parser.add_argument(
        "--field-size", type=int, default=1080, help="field side (the paper's: 1080)"
    )
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=Path("/tmp/vsgrid-scale"))
    args = arguments(parser, TINY)
    small, large = args.sizes
    work = args.out
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for n in (small, large):  # the large store is the one the slices are cut from
        seconds, peak, cpu = run(
            [
                "vsgrid",
                "synthesize",
                "--config",
                str(config_for(work / "full", n, args.workers, args.field_size)),
                "--quiet",
                "--no-summary",
            ],
            work,
        )
        fields = 2 * (n + 8)
        print(
            f"synthesize: {fields} fields of {args.field_size} x {args.field_size} in {seconds:.0f} s"
            f" ({cpu / fields:.2f} core-s per field), peak {peak:.0f} MB",
            flush=True,
        )
    measured = {
        n: measure_slice(work, work / "full" / "data", n, args.workers, args.field_size)
        for n in (small, large)
    }
    report = {"workers": args.workers, "sizes": [small, large], "steps": {}}
    if args.field_size != PAPER["field_size"]:
        print(
            f"\n(fields of {args.field_size} pixels, not 1080: the paper grid's figures do not hold)"
        )
    print(
        f"\n{'step':<14} {'core-s/image':>12} {'peak MB @' + str(small):>12}"
        f" {'peak MB @' + str(large):>12}   paper grid (4,800 images per test set)"
    )
    core_hours = 0.0
    for step in measured[small]:
        (s_small, m_small), (s_large, m_large) = measured[small][step], measured[large][step]
        per_image = (s_large - s_small) / (large - small)
        jobs = PAPER[step] if step != "evaluate" else PAPER["runs"]
        # The ranking learns from a capped subsample: its cost stops growing with the test set.
        job_core_hours = (
            (s_large + per_image * (PAPER["test_images"] - large)) / 3600
            if step != "rank_features"
            else s_large / 3600
        )
        core_hours += job_core_hours * jobs
        report["steps"][step] = {
            "core_seconds_per_image": per_image,
            "peak_mb": [m_small, m_large],
            "jobs": jobs,
            "core_hours_per_job": job_core_hours,
        }
        print(
            f"{step:<14} {per_image:12.3f} {m_small:12.0f} {m_large:12.0f}   {jobs:4d} jobs x"
            f" {job_core_hours:6.2f} core-h = {jobs * job_core_hours:6.1f} core-h",
            flush=True,
        )
    print(
        f"\nCPU steps of the paper grid: {core_hours:.0f} core-hours; GPU jobs: {PAPER['train']} train,"
        f" {PAPER['infer']} infer (with Cellpose on the predictions)"
    )
    (work / "scale.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
