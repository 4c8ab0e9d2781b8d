"""``vsgrid screen-*``: level 4's subcommands (a screen's store, real profiles, controls, runs,
tables, figures)."""

from __future__ import annotations

from vsgrid.cli.options import CELL_TYPE, OUT, QUIET, STAIN, WORKERS, config_of, option
from vsgrid.errors import VsgridError


def _screen_store(args) -> None:
    from vsgrid.data.screens import build_screen_stores

    config = config_of(args)
    build_screen_stores(
        config, config["data"]["dir"], args.cell_type, workers=args.workers, progress=not args.quiet
    )


def _screen_segment(args) -> None:
    from vsgrid.evaluation.segment import segment_store
    from vsgrid.screen.wells import screen_store, segment_forest_fields

    config = config_of(args)
    segment_store(config, screen_store(config, args.cell_type), args.stain, args.masks)
    segment_forest_fields(config, args.cell_type, args.stain, args.forest_masks)


def _screen_reference(args) -> None:
    from vsgrid.screen.wells import measure_screen_reference

    measure_screen_reference(
        config_of(args),
        args.cell_type,
        args.stain,
        masks=args.masks,
        forest_masks=args.forest_masks,
        ranking=args.ranking,
        wells_out=args.wells,
        forest_out=args.forest,
        workers=args.workers,
    )


def _screen_controls(args) -> None:
    from vsgrid.grid import screen_controls
    from vsgrid.screen.controls import write_controls

    config = config_of(args)
    controls = screen_controls(config)
    if len(args.out) != len(controls):
        raise VsgridError(
            f"--out: {len(args.out)} path(s) for the {len(controls)} controls of "
            f"evaluation.screen.controls.names ({', '.join(controls)}), one each in that order"
        )
    write_controls(
        config, args.cell_type, args.stain, dict(zip(controls, args.out)), masks=args.masks
    )


def _screen_run(args) -> None:
    from vsgrid.screen.wells import measure_screen_run

    measure_screen_run(
        config_of(args),
        args.cell_type,
        args.stain,
        prediction=args.prediction,
        reference=args.reference,
        forest=args.forest,
        out=args.out,
        nuclei=args.nuclei,
        model=args.model,
        workers=args.workers,
    )


def _screen_tables(args) -> None:
    from vsgrid.screen.tables import write_screen_tables

    write_screen_tables(config_of(args), args.out)


def _screen_figures(args) -> None:
    from vsgrid.screen.figures import make_screen_figures

    make_screen_figures(config_of(args), args.tables, args.out)


COMMANDS = [
    (
        "screen-store",
        _screen_store,
        "render the screen store (held-out plates, every well) of cell types",
        [option("--cell-type", nargs="+", required=True), WORKERS, QUIET],
    ),
    (
        "screen-segment",
        _screen_segment,
        "segment a screen's real stain (dapi, fitc), and the same stain of its phenotype forest's training fields",
        [
            CELL_TYPE,
            STAIN,
            option("--masks", required=True, help="label stack of the screen (.zarr)"),
            option(
                "--forest-masks",
                required=True,
                help="label stack of the forest's training fields (.zarr)",
            ),
        ],
    ),
    (
        "screen-reference",
        _screen_reference,
        "profile a screen's real stain per well (masks, phenotype forest, well medians)",
        [
            CELL_TYPE,
            STAIN,
            option(
                "--ranking", required=True, help="feature ranking of the (cell type, stain) (.tsv)"
            ),
            option(
                "--masks", required=True, help="real masks of the screen (cy5: the DAPI nuclei)"
            ),
            option(
                "--forest-masks",
                required=True,
                help="real masks of the forest's training fields, of the same stain as --masks",
            ),
            option("--wells", required=True, help="the real stain's per-well profiles (.parquet)"),
            option(
                "--forest",
                required=True,
                help="what the phenotype forest is trained from (.parquet)",
            ),
            WORKERS,
        ],
    ),
    (
        "screen-controls",
        _screen_controls,
        "write a screen's controls, virtual stains made from its real stain with no model "
        "(oracle, degraded, affine), as an inference job writes a screen prediction",
        [
            CELL_TYPE,
            STAIN,
            option(
                "--out",
                nargs="+",
                required=True,
                help="each control's prediction (.zarr), in the order oracle, degraded, affine, "
                "of those evaluation.screen.controls.names asks",
            ),
            option("--masks", help="real masks of the screen's segmented stain (dapi, fitc)"),
        ],
    ),
    (
        "screen-run",
        _screen_run,
        "profile a model's virtual screen per well, like the real one",
        [
            CELL_TYPE,
            STAIN,
            OUT,
            option("--prediction", required=True, help="the model's screen prediction (.zarr)"),
            option(
                "--reference",
                required=True,
                help="the real stain's per-well profiles (`vsgrid screen-reference --wells`)",
            ),
            option(
                "--forest",
                required=True,
                help="the phenotype forest's training table (`vsgrid screen-reference --forest`)",
            ),
            option("--nuclei", help="real DAPI masks of the screen (cy5)"),
            option("--model", help="the model the prediction must be of"),
            WORKERS,
        ],
    ),
    (
        "screen-tables",
        _screen_tables,
        "level 4: decisions virtual vs real per screen run, with CIs and deltas",
        [OUT],
    ),
    (
        "screen-figures",
        _screen_figures,
        "draw level 4's dose-response and heatmap figures",
        [option("--tables", required=True, help="folder written by `vsgrid screen-tables`"), OUT],
    ),
]
