"""``vsgrid`` subcommands of the evaluation stage: segmentation, features, ranking, scoring."""

from __future__ import annotations

from vsgrid.cli.options import (
    OUT,
    QUIET,
    STAIN,
    TEST_SET,
    WORKERS,
    check_name,
    config_of,
    option,
)
from vsgrid.errors import VsgridError


def _segment(args) -> None:
    from vsgrid.evaluation.segment import segment_test_set

    segment_test_set(config_of(args), args.test_set, args.stain, args.out)


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
    from vsgrid.grid import test_sets

    if bad := [item for item in args.inputs if "=" not in item]:
        raise VsgridError(f"--inputs {bad[0]!r} must be TEST_SET=PATH")
    config = config_of(args)
    inputs = dict(item.partition("=")[::2] for item in args.inputs)
    known = [d.name for d in test_sets(config["grid"])]
    for test_set in inputs:
        check_name("--inputs", test_set, "test set", known)
    rank_test_sets(config, inputs, args.out, n_jobs=args.workers or 1)


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


def _seed_spread(args) -> None:
    from vsgrid.evaluation.trust import write_seed_spread

    write_seed_spread(config_of(args), args.model_type, args.test_set, args.out)


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
        f"F1 at IoU {report['iou_threshold']} on the test split: "
        f"Cellpose {report['f1_cellpose']:.3f}, classical {report['f1_classical']:.3f}"
    )


COMMANDS = [
    (
        "segment",
        _segment,
        "segment the real stain of a test set into a Zarr label stack",
        [TEST_SET, STAIN, OUT],
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
        "seed-spread",
        _seed_spread,
        "per test image, how far a model type's seeds' predictions disagree (the trust table's)",
        [
            option("--model-type", required=True, help="e.g. lung-nontoxic.dapi"),
            option("--test-set", required=True, help="e.g. lung-toxic"),
            OUT,
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
