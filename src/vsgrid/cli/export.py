"""``vsgrid export``: a run's real and virtual stains as OME-Zarr HCS plates, for any NGFF viewer."""

from __future__ import annotations

from vsgrid.cli.options import QUIET, config_of, option


def _export(args) -> None:
    from vsgrid.report.export import export_run

    plates = export_run(
        config_of(args),
        args.model,
        test_set=args.test_set,
        screen=args.screen,
        out=args.out,
        ngff=args.ngff,
        progress=not args.quiet,
    )
    print("\n".join(map(str, plates)))


COMMANDS = [
    (
        "export",
        _export,
        "write a model's prediction of a test set (or a screen) beside the real channels, as "
        "OME-Zarr plates",
        [
            option("--model", required=True, help="e.g. lung-nontoxic.dapi.s0"),
            option("--test-set", help="e.g. lung-toxic"),
            option("--screen", metavar="CELL_TYPE", help="the cell type's screen, instead"),
            option(
                "--out",
                help="folder of the plates, new, empty or an earlier export (default: "
                "<results.dir>/export/<model>/<test set>)",
            ),
            option(
                "--ngff",
                default="0.5",
                help="OME-Zarr version: 0.5 (Zarr v3), or 0.4 (Zarr v2) for iohub 0.2 and VisCy",
            ),
            QUIET,
        ],
    ),
]
