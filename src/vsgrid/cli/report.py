"""``vsgrid`` subcommands of the report stage: the grid's tables and figures."""

from __future__ import annotations

from vsgrid.cli.options import OUT, config_of, option


def _tables(args) -> None:
    from vsgrid.report.tables import write_tables
    from vsgrid.report.trust import write_trust

    config = config_of(args)
    write_tables(config, args.out)
    write_trust(config, args.out)


def _figures(args) -> None:
    from vsgrid.report.figures import make_figures

    make_figures(config_of(args), args.tables, args.out)


COMMANDS = [
    (
        "tables",
        _tables,
        "collect every run's scores into tidy tables with deltas against the baselines, and the trust table",
        [OUT],
    ),
    (
        "figures",
        _figures,
        "draw the paper's figures from the tables",
        [option("--tables", required=True, help="folder written by `vsgrid tables`"), OUT],
    ),
]
