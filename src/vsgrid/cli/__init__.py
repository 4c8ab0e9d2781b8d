"""The ``vsgrid`` command: it parses arguments and calls one package function per subcommand.

Errors in the input (:class:`vsgrid.errors.VsgridError`) are printed as one line naming the file
or key, with exit status 2; the Snakemake rules call these subcommands. The subcommands live in
one module per stage (:mod:`vsgrid.cli.data`, ``model``, ``evaluation``, ``report``, ``screen``
for level 4, ``cluster``), the options they share in :mod:`vsgrid.cli.options`. Package modules
are imported inside each subcommand, so that a job pays only for the libraries it uses.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys

from vsgrid.cli import cluster, data, evaluation, export, model, ood, report, screen
from vsgrid.errors import VsgridError

COMMANDS = (
    data.COMMANDS
    + model.COMMANDS
    + evaluation.COMMANDS
    + ood.COMMANDS
    + report.COMMANDS
    + export.COMMANDS
    + screen.COMMANDS
    + cluster.COMMANDS
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vsgrid", description="Does virtual staining generalize? The train x test grid."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, help, options in COMMANDS:
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
        status = args.func(args) or 0
        sys.stdout.flush()  # what the command printed comes before its usage in a shared log
        logging.getLogger("vsgrid").info("vsgrid %s: %s", args.command, _usage())
        return status
    except VsgridError as exc:
        message = str(exc)
    except OSError as exc:  # a full disk, a read-only or missing folder: the file and the reason
        message = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    print(f"vsgrid {args.command}: error: {message}", file=sys.stderr)
    return 2


def _usage() -> str:
    """The CPU time of this command and its worker processes and its own peak memory, the last
    line of its job's log (docs/workflow.md says why the benchmark files' is not)."""
    own, workers = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    cpu = sum(usage.ru_utime + usage.ru_stime for usage in (own, workers))
    per_mb = 2**20 if sys.platform == "darwin" else 2**10  # ru_maxrss: bytes on macOS, KiB on Linux
    return (
        f"{cpu:.2f} s of CPU with its worker processes, peak memory {own.ru_maxrss / per_mb:.0f} MB"
        " in its main process"
    )


if __name__ == "__main__":
    sys.exit(main())
