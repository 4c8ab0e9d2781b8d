"""The ``vsgrid`` command: one subcommand per step, each a thin layer over the package.

Errors in the input (:class:`vsgrid.errors.VsgridError`) are printed as one line naming the file
or key, with exit status 2; the Snakemake rules call these subcommands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

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


def _stain_images(config: dict, test_set: str, stain: str, prediction: str | None):
    """The real stain of a test set, or a prediction of it: (array, store)."""
    from vsgrid.store import open_store, store_path

    store = open_store(store_path(config["data"]["dir"], test_set))
    if prediction:
        import zarr

        return zarr.open_array(prediction, mode="r"), store
    return store.images("test")[:, store.channel_index(stain)], store


def _write_labels(labels, out: str, attrs: dict) -> None:
    import zarr

    from vsgrid.store import replace_atomically, temporary_path

    with temporary_path(Path(out)) as tmp:
        array = zarr.create_array(tmp, shape=labels.shape, chunks=(1, *labels.shape[1:]), dtype="int32", zarr_format=3)
        array[:] = labels
        array.attrs.update(attrs)
        replace_atomically(tmp, Path(out))


def _segment(args) -> None:
    from vsgrid.segment import segmenter

    config = load_config(*args.config)
    images, store = _stain_images(config, args.test_set, args.stain, args.prediction)
    segment = segmenter(config["segmentation"], args.stain, float(store.attrs["pixel_size_um"]))
    labels = segment(images[:])
    _write_labels(labels, args.out, {"stain": args.stain, "test_set": args.test_set, "source": args.prediction or "real", "backend": config["segmentation"]["backend"]})
    log.info("wrote %s (%d images, %d instances)", args.out, len(labels), sum(len(np.unique(m)) - 1 for m in labels))


def _workers(setting: int) -> int:
    import os

    return setting or len(os.sched_getaffinity(0))


def _measure(args) -> None:
    import zarr
    from tqdm import tqdm

    from vsgrid.features import check_feature_names, measure_stack
    from vsgrid.store import write_table_atomically

    config = load_config(*args.config)
    settings = config["features"]
    if settings["names"]:
        check_feature_names(settings["names"], tuple(settings["groups"]))
    images, _ = _stain_images(config, args.test_set, args.stain, args.prediction)
    masks = zarr.open_array(args.masks, mode="r")
    if masks.shape != images.shape:
        raise VsgridError(f"masks {args.masks} have shape {masks.shape} but the images have {images.shape}")
    bar = lambda results: tqdm(results, total=images.shape[0], desc=f"features {args.stain}", disable=args.quiet, unit="image")  # noqa: E731
    table = measure_stack(images[:], masks[:], settings["groups"], settings["names"], args.workers or _workers(settings["workers"]), bar)
    write_table_atomically(table, Path(args.out))
    log.info("wrote %s (%d instances x %d features)", args.out, len(table), table.shape[1] - 2)


def _rank_features(args) -> None:
    import pandas as pd

    from vsgrid.grid import DataSet
    from vsgrid.selection import rank_features
    from vsgrid.store import open_store, store_path, write_table_atomically

    config = load_config(*args.config)
    settings = config["evaluation"]
    frames = []
    for item in args.inputs:
        test_set, sep, path = item.partition("=")
        if not sep:
            raise VsgridError(f"--inputs {item!r} must be TEST_SET=PATH")
        table = pd.read_parquet(path)
        if settings["target"] == "phenotype":
            table["target"] = DataSet.parse(test_set).phenotype
        else:
            meta = open_store(store_path(config["data"]["dir"], test_set)).split_metadata("test")
            if settings["target"] not in meta.columns:
                raise VsgridError(f"evaluation.target {settings['target']!r} is not a column of the metadata ({', '.join(meta.columns)})")
            table["target"] = meta[settings["target"]].astype(str).to_numpy()[table["image"]]
        frames.append(table)
    features = pd.concat(frames, ignore_index=True)
    ranking = rank_features(
        features.drop(columns=["image", "label", "target"]),
        features["target"],
        settings["top_features"],
        settings["forest_trees"],
        settings["permutation_repeats"],
        settings["seed"],
    )
    write_table_atomically(ranking, Path(args.out))
    log.info("top features: %s", ", ".join(ranking.loc[ranking["selected"], "feature"]))


def _evaluate(args) -> None:
    import pandas as pd
    import zarr

    from vsgrid import evaluate
    from vsgrid.features import measure_stack
    from vsgrid.segment import MASK_OF_STAIN, segmenter
    from vsgrid.store import write_table_atomically

    config = load_config(*args.config)
    real, store = _stain_images(config, args.test_set, args.stain, None)
    prediction = zarr.open_array(args.prediction, mode="r")[:]
    real_masks = zarr.open_array(args.real_masks, mode="r")[:]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stain in MASK_OF_STAIN:
        if prediction.shape != real.shape:
            raise VsgridError(f"the prediction {args.prediction} has shape {prediction.shape} but its test set has {real.shape}")
        pred_masks = segmenter(config["segmentation"], args.stain, float(store.attrs["pixel_size_um"]))(prediction)
        _write_labels(pred_masks, out / "masks.zarr", {"stain": args.stain, "test_set": args.test_set, "source": args.prediction})
    else:  # cy5 is measured inside the real nuclei, for the virtual stain too
        pred_masks = real_masks
    settings = config["features"]
    pred_features = measure_stack(prediction, pred_masks, settings["groups"], settings["names"], args.workers or _workers(settings["workers"]))
    write_table_atomically(pred_features, out / "features.parquet")
    ranking = pd.read_csv(args.ranking, sep="\t")
    tables = evaluate.evaluate(real, prediction, args.stain, real_masks, pred_masks, pd.read_parquet(args.real_features), pred_features, ranking, config["evaluation"])
    evaluate.write(tables, out)
    scores = tables["scores"]
    log.info("%s: %s", out, ", ".join(f"{m} {v:.4g}" for m, v in scores[scores["feature"] == ""][["metric", "value"]].itertuples(index=False)))


def _tables(args) -> None:
    from vsgrid.tables import write_tables

    config = load_config(*args.config)
    written = write_tables(config, config["results"]["dir"], args.out, config["evaluation"]["bootstrap_resamples"])
    log.info("wrote %d tables under %s", len(written), args.out)


def _figures(args) -> None:
    from vsgrid.figures import make_figures

    config = load_config(*args.config)
    written = make_figures(config, args.tables, config["results"]["dir"], args.out)
    log.info("wrote %d figure files under %s", len(written), args.out)


def _train_cellpose(args) -> None:
    from vsgrid.cellpose_train import train_cellpose
    from vsgrid.store import store_path

    config = load_config(*args.config)
    report = train_cellpose(
        store_path(config["data"]["dir"], args.train_set),
        args.stain,
        args.out,
        config["segmentation"],
        args.epochs,
        args.learning_rate,
        args.batch_size,
        config["evaluation"]["iou_threshold"],
    )
    print(f"F1 at IoU {report['iou_threshold']} on the test split: Cellpose {report['f1_cellpose']:.3f}, classical {report['f1_classical']:.3f}")


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

    def stain_command(name, func, help):
        sub = command(name, func, help)
        sub.add_argument("--test-set", required=True, help="e.g. lung-toxic")
        sub.add_argument("--stain", required=True, help="dapi, fitc or cy5")
        sub.add_argument("--out", required=True)
        return sub

    sub = stain_command("segment", _segment, "segment the real stain of a test set, or a prediction of it, into a Zarr label stack")
    sub.add_argument("--prediction", help="segment this prediction (.zarr) instead of the real stain")

    sub = stain_command("measure", _measure, "measure CellProfiler-style features of every instance into a Parquet table")
    sub.add_argument("--masks", required=True, help="label stack (.zarr) of the same images (cy5: the real DAPI nuclei)")
    sub.add_argument("--prediction", help="measure this prediction (.zarr) instead of the real stain")
    sub.add_argument("--workers", type=int, help="feature processes (default: features.workers)")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")

    sub = command("rank-features", _rank_features, "rank features by random-forest permutation importance on real-stain features")
    sub.add_argument("--inputs", nargs="+", required=True, metavar="TEST_SET=PATH", help="real-stain feature tables of the cell type's test sets")
    sub.add_argument("--out", required=True, help="ranking table (.tsv or .parquet)")

    sub = stain_command("evaluate", _evaluate, "segment and measure one run's prediction and score it at the pixel, instance and feature levels")
    sub.add_argument("--prediction", required=True, help="the run's prediction (.zarr)")
    sub.add_argument("--real-masks", required=True, help="masks of the real stain (cy5: the real DAPI nuclei)")
    sub.add_argument("--real-features", required=True, help="features of the real stain (.parquet)")
    sub.add_argument("--ranking", required=True, help="feature ranking of the (cell type, stain) (.tsv)")
    sub.add_argument("--workers", type=int, help="feature processes (default: features.workers)")

    sub = command("tables", _tables, "collect every run's scores into tidy tables with deltas against the baselines")
    sub.add_argument("--out", required=True, help="folder of the tables")

    sub = command("figures", _figures, "draw the paper's figures from the tables")
    sub.add_argument("--tables", required=True, help="folder written by `vsgrid tables`")
    sub.add_argument("--out", required=True, help="folder of the figures")

    sub = command("train-cellpose", _train_cellpose, "train a Cellpose network from scratch on a store's ground-truth masks")
    sub.add_argument("--train-set", required=True, help="a synthetic store with masks, e.g. lung-nontoxic")
    sub.add_argument("--stain", required=True, help="dapi (nuclei) or fitc (cells)")
    sub.add_argument("--out", required=True, help="the weights file to write")
    sub.add_argument("--epochs", type=int, default=100)
    sub.add_argument("--learning-rate", type=float, default=0.05)
    sub.add_argument("--batch-size", type=int, default=8)
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
