"""The paper's feature ranking (Saabas contributions) against permutation importance, on a grid's
real-stain features.

    .venv/bin/python bench/selection.py [--config config/quick.yaml]
    .venv/bin/python bench/selection.py --build /tmp/vsgrid-selection --cell-types lung --stains dapi

Needs the grid's real-stain feature tables: run the grid first (e.g. `make quick`), or --build
them (the workflow up to the real-stain features, into a folder of its own). For every (cell type,
stain) it ranks the features both ways with the config's forest and prints how many of the top
`evaluation.top_features` the two share, and each ranking's mean stability over subsamples.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

from measure import arguments, run_workflow

from vsgrid.config import load_config
from vsgrid.evaluation.selection import rank_test_sets
from vsgrid.grid import data_sets
from vsgrid.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "build": Path(tempfile.gettempdir()) / "vsgrid-selection-tiny",
    "cell_types": ["lung"],
    "stains": ["dapi"],
    "test_fields": 12,
}


def built(config: dict, work: Path, test_fields: int) -> dict:
    """``config`` with its data and results in ``work``, run up to the real-stain features (on
    ``test_fields`` fields per test set, a few fields in the other splits: nothing is trained)."""
    config = copy.deepcopy(config)
    config["grid"]["controls"] = []
    config["data"]["splits"] = {"train": 2, "val": 2, "test": test_fields}
    config["data"]["dir"] = str(work / "data")
    config["results"]["dir"] = str(work / "results")
    work.mkdir(parents=True, exist_ok=True)
    run_workflow(config, work, "features_real")
    return config


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=ROOT / "config" / "quick.yaml", help="the grid")
    parser.add_argument("--cell-types", nargs="+", help="default: the grid's")
    parser.add_argument("--stains", nargs="+", help="default: the grid's")
    parser.add_argument("--workers", type=int, default=2, help="cores of the forests")
    parser.add_argument("--build", type=Path, help="first run the grid up to the features, here")
    parser.add_argument(
        "--test-fields", type=int, default=16, help="with --build: test fields per test set"
    )
    args = arguments(parser, TINY)
    config = load_config(args.config)
    for key in ("cell_types", "stains"):
        config["grid"][key] = getattr(args, key) or config["grid"][key]
    if args.build:
        config = built(config, args.build, args.test_fields)
    layout, top = Layout.of(config), config["evaluation"]["top_features"]
    print(
        f"{'cell type':<10} {'stain':<5} {'shared top ' + str(top):>14} {'stability saabas':>17}"
        f" {'stability permutation':>22}"
    )
    with tempfile.TemporaryDirectory() as work:
        for cell_type in config["grid"]["cell_types"]:
            for stain in config["grid"]["stains"]:
                inputs = {
                    d.name: layout.real_features(d.name, stain)
                    for d in data_sets(config["grid"])
                    if d.cell_type == cell_type
                }
                rankings = {}
                for method in ("saabas", "permutation"):
                    method_config = copy.deepcopy(config)
                    method_config["evaluation"]["selection"] = method
                    ranking = rank_test_sets(
                        method_config, inputs, Path(work) / f"{method}.tsv", n_jobs=args.workers
                    )
                    rankings[method] = ranking[ranking["selected"]]
                shared = len(
                    set(rankings["saabas"]["feature"]) & set(rankings["permutation"]["feature"])
                )
                stability = [rankings[m]["stability"].mean() for m in ("saabas", "permutation")]
                print(
                    f"{cell_type:<10} {stain:<5} {shared:>14d} {stability[0]:>17.2f}"
                    f" {stability[1]:>22.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
