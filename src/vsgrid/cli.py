"""The ``vsgrid`` command: one subcommand per step, each a thin layer over the package.

Errors in the input (:class:`vsgrid.errors.VsgridError`) are printed as one line naming the file
or key, with exit status 2; the Snakemake rules call these subcommands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vsgrid.config import load_config
from vsgrid.errors import VsgridError

log = logging.getLogger("vsgrid")


def _grid(args) -> None:
    from vsgrid import grid

    config = load_config(*args.config)
    for name, count in grid.counts(config).items():
        print(f"{name:>14}: {count}")
    if args.tsv:
        from vsgrid.store import temporary_path

        path = Path(args.tsv)
        with temporary_path(path) as tmp:
            tmp.write_text(grid.runs_tsv(config))
            tmp.replace(path)
        log.info("wrote %s", path)


def _selected(config: dict, names: list[str] | None) -> dict:
    """The config restricted to the named data sets (``--data-set``), or unchanged."""
    if not names:
        return config
    from vsgrid.grid import DataSet, data_sets

    known = {d.name for d in data_sets(config["grid"])}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise VsgridError(f"--data-set {', '.join(unknown)} is not in the grid; known: {', '.join(sorted(known))}")
    chosen = [DataSet.parse(n) for n in names]
    grid = dict(config["grid"], cell_types=sorted({d.cell_type for d in chosen}), phenotypes=sorted({d.phenotype for d in chosen}))
    if len(chosen) != len(grid["cell_types"]) * len(grid["phenotypes"]):
        raise VsgridError("--data-set must name a full cell type x phenotype block; give one data set per call")
    return dict(config, grid=grid)


def _print_summary(paths) -> None:
    from vsgrid.summary import format_summary, summarize

    print(format_summary(summarize(paths)))


def _synthesize(args) -> None:
    from vsgrid.synthetic import synthesize

    config = _selected(load_config(*args.config), args.data_set)
    out = Path(args.out or config["data"]["dir"])
    paths = synthesize(config, out, workers=args.workers, progress=not args.quiet)
    log.info("wrote %d stores under %s", len(paths), out)
    if not args.no_summary:
        _print_summary(paths)


def _ingest(args) -> None:
    from vsgrid.ingest import ingest

    config = _selected(load_config(*args.config), args.data_set)
    out = Path(args.out or config["data"]["dir"])
    paths = ingest(config, out, progress=not args.quiet)
    log.info("wrote %d stores under %s", len(paths), out)
    if not args.no_summary:
        _print_summary(paths)


def _summary(args) -> None:
    from vsgrid.grid import data_sets
    from vsgrid.store import store_path

    config = load_config(*args.config)
    data_dir = Path(args.data or config["data"]["dir"])
    _print_summary([store_path(data_dir, d.name) for d in data_sets(config["grid"])])


def _describe_model(args) -> None:
    from vsgrid.models import NetworkConfig, describe

    config = load_config(*args.config)
    size = args.size or config["data"]["synthetic"]["field_size"]
    info = describe(NetworkConfig.from_config(config["model"]), size)
    print(f"generator parameters:       {info['generator_parameters']:,}")
    print(f"discriminator parameters:   {info['discriminator_parameters']:,} ({config['model']['num_D']} scales)")
    flops = info["generator_flops"]
    amount = f"{flops / 1e12:.3f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.2f} GFLOP"
    print(f"generator forward FLOPs:    {amount} per {info['image_size']} x {info['image_size']} image ({flops:,})")


def _model(config: dict, train_set: str, stain: str, seed: int):
    from vsgrid.grid import DataSet, Model

    try:
        data_set = DataSet.parse(train_set)
    except ValueError as exc:
        raise VsgridError(f"--train-set: {exc}") from None
    if stain not in config["grid"]["stains"]:
        raise VsgridError(f"--stain {stain!r} is not in grid.stains ({', '.join(config['grid']['stains'])})")
    return Model(data_set, stain, seed)


def _train(args) -> int:
    from vsgrid.train import INTERRUPTED_EXIT, Interrupted, train

    config = load_config(*args.config)
    model = _model(config, args.train_set, args.stain, args.seed)
    out = Path(args.out or Path(config["results"]["dir"]) / "models" / model.name)
    try:
        summary = train(config, model, out, progress=not args.quiet)
    except Interrupted as stop:
        log.warning("%s; run the same command again to resume", stop)
        return INTERRUPTED_EXIT
    log.info("%s: %s", model.name, summary["stop_reason"])
    return 0


def _infer(args) -> None:
    from vsgrid.infer import infer
    from vsgrid.store import store_path

    config = load_config(*args.config)
    infer(args.model, store_path(args.data or config["data"]["dir"], args.test_set), args.out, args.batch_size or config["infer"]["batch_size"], config["train"], progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsgrid", description="Does virtual staining generalize? The train x test grid.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help):
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--config", required=True, nargs="+", metavar="FILE", help="YAML config file(s), merged in order (keys: workflow/schemas/config.schema.yaml)"
        )
        sub.set_defaults(func=func)
        return sub

    sub = command("grid", _grid, "print the grid's counts of models and runs per task; optionally write the runs as TSV")
    sub.add_argument("--tsv", help="write one row per run to this TSV file")

    for name, func, help in (
        ("synthesize", _synthesize, "build the synthetic stores of the grid's data sets and print their summary"),
        ("ingest", _ingest, "build stores from real plates (LoadData CSV, plate map, TIFFs) and print their summary"),
    ):
        sub = command(name, func, help)
        sub.add_argument("--out", help="folder of the stores (default: data.dir of the config)")
        sub.add_argument("--data-set", action="append", help="build only this data set, e.g. lung-toxic (repeatable)")
        sub.add_argument("--no-summary", action="store_true", help="do not print the summary table")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "synthesize":
            sub.add_argument("--workers", type=int, help="rendering processes (default: data.synthetic.workers, 0 = all cores)")

    sub = command("summary", _summary, "print the summary table of existing stores")
    sub.add_argument("--data", help="folder of the stores (default: data.dir of the config)")

    sub = command("describe-model", _describe_model, "print parameter counts and forward FLOPs of the configured Pix2PixHD")
    sub.add_argument("--size", type=int, help="image size (default: data.synthetic.field_size, padded to a multiple of 2^n_downsample)")

    sub = command("train", _train, "train one model (train set, stain, seed); rerun after an interruption to resume")
    sub.add_argument("--train-set", required=True, help="e.g. lung-nontoxic")
    sub.add_argument("--stain", required=True, help="dapi, fitc or cy5")
    sub.add_argument("--seed", type=int, required=True)
    sub.add_argument("--out", help="model folder (default: <results.dir>/models/<model>)")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")

    sub = command("infer", _infer, "predict a test set with a trained model into a Zarr array")
    sub.add_argument("--model", required=True, help="model folder written by `vsgrid train`")
    sub.add_argument("--test-set", required=True, help="e.g. lung-toxic")
    sub.add_argument("--out", required=True, help="the prediction, a .zarr path")
    sub.add_argument("--data", help="folder of the stores (default: data.dir of the config)")
    sub.add_argument("--batch-size", type=int, help="default: infer.batch_size of the config")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args) or 0
    except VsgridError as exc:
        print(f"vsgrid {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
