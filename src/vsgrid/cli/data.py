"""``vsgrid`` subcommands of the data stage: the grid's counts, building stores, their summary."""

from __future__ import annotations

from vsgrid.cli.options import OUT, QUIET, STORES, WORKERS, config_of, option


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


def _example_plates(args) -> None:
    from vsgrid.data.example_plates import write_example_plates

    print(write_example_plates(config_of(args), args.out, tiff=args.tiff, progress=not args.quiet))


BUILD = [
    STORES,
    option("--data-set", action="append", help="only this data set, e.g. lung-toxic (repeatable)"),
    option("--no-summary", action="store_true", help="do not print the summary"),
    QUIET,
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
        "example-plates",
        _example_plates,
        "write three synthetic lung plates as OME-Zarr HCS plates (or TIFFs and a LoadData CSV), "
        "their plate map, cell types and a config that ingests them: plates to try the workflow on",
        [OUT, option("--tiff", action="store_true", help="TIFFs and a LoadData CSV"), QUIET],
    ),
    (
        "summary",
        _summary,
        "print the summary table of existing stores",
        [option("--data", dest="out_stores", help="folder of the stores (default: data.dir)")],
    ),
]
