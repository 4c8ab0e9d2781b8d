"""The paper's feature ranking (Saabas contributions) against permutation importance, on a grid's
real-stain features.

    .venv/bin/python bench/selection.py [--config config/quick.yaml]

Needs the grid's real-stain feature tables (run the grid first, e.g. `make quick`). For every
(cell type, stain) it ranks the features both ways with the config's forest and prints how many
of the top `evaluation.top_features` the two share, and each ranking's mean stability over
subsamples.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

from vsgrid.config import load_config
from vsgrid.evaluation.selection import rank_test_sets
from vsgrid.grid import data_sets
from vsgrid.layout import Layout


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="config/quick.yaml")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    config = load_config(args.config)
    layout, top = Layout.of(config), config["evaluation"]["top_features"]
    print(
        f"{'cell type':<10} {'stain':<5} {'shared top ' + str(top):>14} {'stability saabas':>17} {'stability permutation':>22}"
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
                    f"{cell_type:<10} {stain:<5} {shared:>14d} {stability[0]:>17.2f} {stability[1]:>22.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
