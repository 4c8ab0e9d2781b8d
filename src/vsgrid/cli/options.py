"""What every ``vsgrid`` subcommand shares: the config it reads and the options it takes."""

from __future__ import annotations

from vsgrid.config import load_config


def config_of(args) -> dict:
    config = load_config(*args.config)
    if getattr(args, "out_stores", None):
        config["data"]["dir"] = args.out_stores
    return config


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
