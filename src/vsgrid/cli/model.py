"""``vsgrid`` subcommands of the model stage: the network's size, training, inference."""

from __future__ import annotations

import logging

from vsgrid.cli.options import QUIET, STAIN, config_of, option
from vsgrid.errors import VsgridError

log = logging.getLogger("vsgrid")


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
    from vsgrid.evaluation.predictions import predict

    if bool(args.screen) == bool(args.test_set):
        raise VsgridError("give either --test-set or --screen")
    predict(
        config_of(args),
        args.model_dir,
        args.screen or args.test_set,
        args.out,
        screens=bool(args.screen),
        batch_size=args.batch_size,
        progress=not args.quiet,
    )


MODEL = [
    option("--train-set", required=True, help="e.g. lung-nontoxic"),
    STAIN,
    option("--seed", type=int, required=True),
]


COMMANDS = [
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
            option(
                "--model",
                dest="model_dir",  # a folder, not a model's name (the other commands' --model)
                required=True,
                help="model folder written by `vsgrid train`",
            ),
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
]
