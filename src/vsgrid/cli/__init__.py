"""The ``vsgrid`` command: it parses arguments and calls one package function per subcommand.

Errors in the input (:class:`vsgrid.errors.VsgridError`) are printed as one line naming the file
or key, with exit status 2; the Snakemake rules call these subcommands. Level 4's ``screen-*``
subcommands live in :mod:`vsgrid.cli.screen`, the options they share in
:mod:`vsgrid.cli.options`. Package modules are imported inside each subcommand, so that a job
pays only for the libraries it uses.
"""

from __future__ import annotations

import argparse
import logging
import sys

from vsgrid.cli import cluster, screen
from vsgrid.cli.options import OUT, QUIET, STAIN, STORES, TEST_SET, WORKERS, config_of, option
from vsgrid.errors import VsgridError

log = logging.getLogger("vsgrid")


def _grid(args) -> None:
    from vsgrid.grid import counts, runs_tsv

    config = config_of(args)
    print("\n".join(f"{name:>14}: {count}" for name, count in counts(config).items()))
    if args.tsv:
        from vsgrid.files import write_text

        write_text(runs_tsv(config), args.tsv)


def _build_stores(args) -> None:
    from vsgrid.data.summary import summary_text
    from vsgrid.grid import restrict

    config = restrict(config_of(args), args.data_set)
    if args.command == "synthesize":
        from vsgrid.data.synthetic import synthesize

        paths = synthesize(
            config, config["data"]["dir"], workers=args.workers, progress=not args.quiet
        )
    else:
        from vsgrid.data.ingest import ingest

        paths = ingest(config, config["data"]["dir"], progress=not args.quiet)
    if not args.no_summary:
        print(summary_text(paths, config["evaluation"]))


def _summary(args) -> None:
    from vsgrid.data.summary import summary_text
    from vsgrid.grid import data_sets
    from vsgrid.layout import Layout

    config = config_of(args)
    print(
        summary_text(
            [Layout.of(config).store(d) for d in data_sets(config["grid"])], config["evaluation"]
        )
    )


def _describe_model(args) -> None:
    from vsgrid.model.network import NetworkConfig, description

    config = config_of(args)
    print(
        description(
            NetworkConfig.from_config(config["network"]),
            args.size or config["data"]["synthetic"]["field_size"],
        )
    )


def _train(args) -> int:
    from vsgrid.grid import find_model
    from vsgrid.layout import Layout
    from vsgrid.model.train import INTERRUPTED_EXIT, Interrupted, train

    config = config_of(args)
    model = find_model(config, args.train_set, args.stain, args.seed)
    try:
        train(
            config, model, args.out or Layout.of(config).model_dir(model), progress=not args.quiet
        )
    except Interrupted as stop:
        log.warning("%s; run the same command again to resume", stop)
        return INTERRUPTED_EXIT
    return 0


def _infer(args) -> None:
    from vsgrid.evaluation.predictions import predict_screens, predict_test_sets

    if bool(args.screen) == bool(args.test_set):
        raise VsgridError("give either --test-set or --screen")
    predict = predict_screens if args.screen else predict_test_sets
    predict(
        config_of(args),
        args.model,
        args.screen or args.test_set,
        args.out,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )


def _segment(args) -> None:
    from vsgrid.evaluation.segment import segment_store, segment_test_set
    from vsgrid.evaluation.wells import screen_store

    config = config_of(args)
    if bool(args.screen) == bool(args.test_set):
        raise VsgridError("give either --test-set or --screen")
    if args.screen:
        segment_store(config, screen_store(config, args.screen), args.stain, args.out)
    else:
        segment_test_set(config, args.test_set, args.stain, args.out)


def _measure(args) -> None:
    from vsgrid.evaluation.features import measure_test_set

    measure_test_set(
        config_of(args),
        args.test_set,
        args.stain,
        args.masks,
        args.out,
        prediction=args.prediction,
        workers=args.workers,
        progress=not args.quiet,
    )


def _rank_features(args) -> None:
    from vsgrid.evaluation.selection import rank_test_sets

    if bad := [item for item in args.inputs if "=" not in item]:
        raise VsgridError(f"--inputs {bad[0]!r} must be TEST_SET=PATH")
    rank_test_sets(
        config_of(args),
        dict(item.partition("=")[::2] for item in args.inputs),
        args.out,
        n_jobs=args.workers or 1,
    )


def _evaluate(args) -> None:
    from vsgrid.evaluation.scoring import evaluate_run

    paths = {
        "prediction": args.prediction,
        "real_masks": args.real_masks,
        "real_features": args.real_features,
        "ranking": args.ranking,
    }
    evaluate_run(
        config_of(args),
        args.test_set,
        args.stain,
        **paths,
        out=args.out,
        model=args.model,
        workers=args.workers,
    )


def _tables(args) -> None:
    from vsgrid.report.tables import write_tables

    write_tables(config_of(args), args.out)


def _figures(args) -> None:
    from vsgrid.report.figures import make_figures

    make_figures(config_of(args), args.tables, args.out)


def _train_cellpose(args) -> None:
    from vsgrid.evaluation.cellpose_train import train_cellpose

    report = train_cellpose(
        config_of(args),
        args.train_set,
        args.stain,
        args.out,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
    )
    print(
        f"F1 at IoU {report['iou_threshold']} on the test split: Cellpose {report['f1_cellpose']:.3f}, classical {report['f1_classical']:.3f}"
    )


BUILD = [
    STORES,
    option("--data-set", action="append", help="only this data set, e.g. lung-toxic (repeatable)"),
    option("--no-summary", action="store_true", help="do not print the summary"),
    QUIET,
]
MODEL = [
    option("--train-set", required=True, help="e.g. lung-nontoxic"),
    STAIN,
    option("--seed", type=int, required=True),
]
COMMANDS = [
    (
        "grid",
        _grid,
        "print the grid's counts of models and runs per task; optionally write the runs as TSV",
        [option("--tsv", help="one row per run to this TSV file")],
    ),
    (
        "synthesize",
        _build_stores,
        "build the synthetic stores of the grid's data sets and print their summary",
        [*BUILD, WORKERS],
    ),
    (
        "ingest",
        _build_stores,
        "build stores from real plates (LoadData CSV, plate map, TIFFs) and print their summary",
        BUILD,
    ),
    (
        "summary",
        _summary,
        "print the summary table of existing stores",
        [option("--data", dest="out_stores", help="folder of the stores (default: data.dir)")],
    ),
    (
        "describe-model",
        _describe_model,
        "print parameter counts and forward FLOPs of the configured Pix2PixHD",
        [option("--size", type=int, help="image size (default: data.synthetic.field_size)")],
    ),
    (
        "train",
        _train,
        "train one model (train set, stain, seed); rerun after an interruption to resume",
        [
            *MODEL,
            option("--out", help="model folder (default: <results.dir>/models/<model>)"),
            QUIET,
        ],
    ),
    (
        "infer",
        _infer,
        "predict test sets with a trained model, and segment the predictions of dapi and fitc",
        [
            option("--model", required=True, help="model folder written by `vsgrid train`"),
            option("--test-set", nargs="+", help="e.g. lung-toxic"),
            option(
                "--screen",
                nargs="+",
                metavar="CELL_TYPE",
                help="predict these cell types' screens instead of test sets",
            ),
            option(
                "--out", required=True, help="folder of the predictions, one <test set>.zarr each"
            ),
            option("--batch-size", type=int, help="default: infer.batch_size"),
            QUIET,
        ],
    ),
    (
        "segment",
        _segment,
        "segment the real stain of a test set (or a screen) into a Zarr label stack",
        [
            option("--test-set", help="e.g. lung-toxic"),
            option("--screen", metavar="CELL_TYPE", help="the screen of this cell type instead"),
            STAIN,
            OUT,
        ],
    ),
    (
        "measure",
        _measure,
        "measure CellProfiler-style features of every instance into a Parquet table",
        [
            TEST_SET,
            STAIN,
            OUT,
            option(
                "--masks",
                required=True,
                help="label stack (.zarr) of the same images (cy5: the real DAPI nuclei)",
            ),
            option(
                "--prediction",
                help="measure this prediction (a .zarr of `vsgrid infer`) instead of the real stain",
            ),
            WORKERS,
            QUIET,
        ],
    ),
    (
        "rank-features",
        _rank_features,
        "rank features by random-forest importance on real-stain features",
        [
            option(
                "--inputs",
                nargs="+",
                required=True,
                metavar="TEST_SET=PATH",
                help="real-stain feature tables of the cell type's test sets",
            ),
            OUT,
            WORKERS,
        ],
    ),
    (
        "evaluate",
        _evaluate,
        "score one run's prediction at the three levels",
        [
            TEST_SET,
            STAIN,
            OUT,
            option(
                "--prediction",
                required=True,
                help="the run's prediction (a .zarr of `vsgrid infer`)",
            ),
            option(
                "--real-masks",
                required=True,
                help="masks of the real stain (cy5: the real DAPI nuclei)",
            ),
            option("--real-features", required=True, help="features of the real stain (.parquet)"),
            option(
                "--ranking", required=True, help="feature ranking of the (cell type, stain) (.tsv)"
            ),
            WORKERS,
            option(
                "--model", help="the model the prediction must be of, e.g. lung-nontoxic.dapi.s0"
            ),
        ],
    ),
    (
        "tables",
        _tables,
        "collect every run's scores into tidy tables with deltas against the baselines",
        [OUT],
    ),
    (
        "figures",
        _figures,
        "draw the paper's figures from the tables",
        [option("--tables", required=True, help="folder written by `vsgrid tables`"), OUT],
    ),
    (
        "train-cellpose",
        _train_cellpose,
        "train a Cellpose network from scratch on a store's ground-truth masks",
        [
            option("--train-set", required=True, help="a synthetic store with masks"),
            STAIN,
            OUT,
            option("--epochs", type=int, default=100),
            option("--learning-rate", type=float, default=0.05),
            option("--batch-size", type=int, default=8),
        ],
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vsgrid", description="Does virtual staining generalize? The train x test grid."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, help, options in COMMANDS + screen.COMMANDS + cluster.COMMANDS:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--config",
            required=True,
            nargs="+",
            metavar="FILE",
            help="YAML config file(s), merged in order (keys: workflow/schemas/config.schema.yaml)",
        )
        for flags, kwargs in options:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return args.func(args) or 0
    except VsgridError as exc:
        message = str(exc)
    except OSError as exc:  # a full disk, a read-only or missing folder: the file and the reason
        message = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    print(f"vsgrid {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
