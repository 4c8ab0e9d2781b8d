"""What every ``vsgrid`` subcommand shares: the config it reads and the options it takes."""

from __future__ import annotations

from vsgrid.config import load_config
from vsgrid.errors import VsgridError


def config_of(args) -> dict:
    config = load_config(*args.config)
    if getattr(args, "out_stores", None):
        config["data"]["dir"] = args.out_stores
    check_names(config, args)
    return config


def _grid_names(config: dict) -> dict[str, tuple[str, list[str]]]:
    """Per option (its argparse ``dest``) that names a thing of the grid: what it names, and the
    grid's names of it (a model: a model of the grid, or a level-4 screen control)."""
    from vsgrid.grid import (
        control_runs,
        data_sets,
        masks_stain,
        models,
        screen_models,
        screen_train_sets,
        test_sets,
    )

    grid = config["grid"]
    cell_types = ("cell type", grid["cell_types"])
    controls = list(dict.fromkeys(run.model.name for run in control_runs(config)))
    trained = list(dict.fromkeys(models(grid) + screen_models(config)))
    return {
        "test_set": ("test set", [d.name for d in test_sets(grid)]),
        "train_set": ("data set", [d.name for d in data_sets(grid) + screen_train_sets(config)]),
        # a stain's masks are segmented too (cy5 is measured in dapi's)
        "stain": (
            "stain",
            list(dict.fromkeys(s for t in grid["stains"] for s in (t, masks_stain(t)))),
        ),
        "cell_type": cell_types,
        "screen": cell_types,
        "model": ("model", [m.name for m in trained] + controls),
        "model_type": ("model type", list(dict.fromkeys(m.model_type for m in trained))),
    }


def check_names(config: dict, args) -> None:
    """Each name option must name a thing of the grid: the commands join names into paths, and
    one that is not the grid's ("../x") would read and write outside the grid's folders."""
    for dest, (kind, known) in _grid_names(config).items():
        given = getattr(args, dest, None)
        for name in [given] if isinstance(given, str) else given or []:
            check_name(f"--{dest.replace('_', '-')}", name, kind, known)


def check_name(option: str, name: str, kind: str, known: list[str]) -> None:
    if name not in known:
        listed = f"e.g. {known[0]}" if len(known) > 12 else ", ".join(known)
        raise VsgridError(f"{option} {name!r} is not a {kind} of the grid ({listed})")


def option(*flags, **kwargs):
    return flags, kwargs


QUIET = option("--quiet", action="store_true", help="no progress bars")
TEST_SET = option("--test-set", required=True, help="e.g. lung-toxic")
STAIN = option("--stain", required=True, help="dapi, fitc or cy5")
OUT = option("--out", required=True, help="where to write the result")
CELL_TYPE = option("--cell-type", required=True, help="e.g. lung")
WORKERS = option(
    "--workers", type=int, help="processes (default: from the config; 0 there = every core)"
)
STORES = option(
    "--out", dest="out_stores", help="folder of the stores (default: data.dir of the config)"
)
