"""Tables at any grid size: time and peak memory of `vsgrid tables` on generated run folders.

    .venv/bin/python bench/tables.py [--cell-types 2 4 10] [--pairs all] [--images 4800]
                                     [--resamples 1000]

For each grid (N cell types x 2 phenotypes x 3 stains x 3 seeds; grid.pairs: all gives (2N)^2 x 9
runs, paper with 3 cell types the paper's 243) it writes every run's per-image tables, per-cell
table and the spread over seeds (random values of the right shape: the tables step, the trust
table's included, does not care what they mean), each data set's BF texture statistics (the
OOD score's no-model baseline, 256 training fields and every test field), and test stores that
hold only what the tables read (the wells of 4,800 tiny test images, 9 fields per well), and
times `vsgrid tables` with 1,000 bootstrap resamples and the default hierarchical CI: wall and
CPU seconds (the process and its workers) and peak memory. Memory should stay flat and time
grow linearly with the number of runs.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from measure import arguments, run

from vsgrid.config import validate
from vsgrid.data.store import create_store
from vsgrid.evaluation.input_ood import STATISTICS
from vsgrid.evaluation.scoring import RunValues, run_scores
from vsgrid.files import write_table
from vsgrid.grid import data_sets, runs, seed_groups, test_sets
from vsgrid.layout import Layout

FEATURES = [f"feature_{k:02d}" for k in range(20)]
CELLS = 10  # matched cells per image, each with its N-MAE and TTA spread
REFERENCE_FIELDS = 256  # training fields of a data set's BF texture (infer.ood_train_fields)
TINY = {"cell_types": [1, 2], "images": 18, "resamples": 10}  # seconds: the step runs, no more


def grid_config(work: Path, cell_types: int, pairs: str, resamples: int) -> dict:
    names = [f"c{k}" for k in range(cell_types)]
    profile = {"density_per_mm2": 400, "cell_radius_um": 13, "nucleus_radius_um": 6}
    return validate(
        {
            "grid": {"cell_types": names, "pairs": pairs},
            "data": {
                "dir": str(work / "data"),
                "synthetic": {"cell_types": {n: profile for n in names}},
            },
            "results": {"dir": str(work / "results")},
            "evaluation": {"bootstrap_resamples": resamples},
        }
    )


def write_runs(config: dict, n_images: int) -> int:
    layout, rng = Layout.of(config), np.random.default_rng(0)
    wells = pd.DataFrame(
        {
            "split": "test",
            "index": range(n_images),
            "plate": "P1",
            "well": [f"W{k // 9:03d}" for k in range(n_images)],
            "field": np.arange(n_images) % 9,
        }
    )
    for data_set in test_sets(config["grid"]):
        statistics = rng.random((REFERENCE_FIELDS + n_images, len(STATISTICS)))
        split = ["train"] * REFERENCE_FIELDS + ["test"] * n_images
        index = [*range(REFERENCE_FIELDS), *range(n_images)]
        texture = pd.DataFrame(
            {"split": split, "index": index} | dict(zip(STATISTICS, statistics.T))
        )
        write_table(texture, layout.bf_texture(data_set))
    for data_set in data_sets(config["grid"]):
        with create_store(
            layout.store(data_set),
            {"test": n_images},
            (4, 4),
            wells,
            {"data_set": data_set.name},
            with_masks=False,
        ):
            pass
    for run_ in runs(config):
        images = pd.DataFrame(
            {
                "image": np.arange(n_images),
                "flag": "",
                **{
                    m: rng.random(n_images)
                    for m in ("ssim", "psnr", "f1", "jaccard", "precision", "recall", "tta", "ood")
                },
            }
        )
        cells = pd.DataFrame(
            {
                "image": np.repeat(np.arange(n_images), CELLS),
                "label": np.tile(np.arange(1, CELLS + 1), n_images),
                "nmae": rng.random(n_images * CELLS),
                "tta": rng.random(n_images * CELLS),
            }
        )
        differences = pd.DataFrame(
            {
                "image": np.repeat(np.arange(n_images), len(FEATURES)),
                "feature": np.tile(FEATURES, n_images),
                "abs_diff_sum": rng.random(n_images * len(FEATURES)) * 10,
                "n_pairs": 10,
                "n_matched": 10,
                "n_real": 12,
                "real_std": 1.0,
            }
        )
        folder = layout.run_dir(run_.model, run_.test_set)
        folder.mkdir(parents=True, exist_ok=True)
        write_table(images, folder / "images.parquet")
        write_table(cells, folder / "cells.parquet")
        write_table(differences, folder / "feature_differences.parquet")
        write_table(
            run_scores(RunValues.from_tables(images, differences)), folder / "scores.parquet"
        )
    for model_type, test_set in seed_groups(config):
        spread = pd.DataFrame({"image": np.arange(n_images), "seeds": rng.random(n_images)})
        write_table(spread, layout.seed_spread(model_type, test_set))
    return len(runs(config))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cell-types", type=int, nargs="+", default=[2, 4, 10])
    parser.add_argument("--pairs", choices=["all", "paper"], default="all", help="grid.pairs")
    parser.add_argument("--images", type=int, default=4800, help="test images per test set")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, default=Path("/tmp/vsgrid-tables"))
    args = arguments(parser, TINY)
    print(f"{'runs':>6} {'images/run':>10} {'seconds':>8} {'CPU s':>8} {'s/run':>6} {'peak MB':>8}")
    for cell_types in args.cell_types:
        work = args.out / f"grid-{cell_types}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        config = grid_config(work, cell_types, args.pairs, args.resamples)
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        n_runs = write_runs(config, args.images)
        seconds, peak, cpu = run(
            [
                "vsgrid",
                "tables",
                "--config",
                str(work / "config.yaml"),
                "--out",
                str(work / "tables"),
            ],
            work,
        )
        print(
            f"{n_runs:6d} {args.images:10d} {seconds:8.1f} {cpu:8.1f} {seconds / n_runs:6.2f} {peak:8.0f}",
            flush=True,
        )
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
