"""Names given on the command line become paths: each must be the grid's, checked where it enters."""

import re
import shlex

import pytest
from shared import ROOT, snakemake

from vsgrid.cli import build_parser, main
from vsgrid.cli.options import check_names
from vsgrid.config import load_config

QUICK = str(ROOT / "config" / "quick.yaml")

# (command and its other options, the bad option, its value): each value would name a folder
# outside the grid's (or one the grid does not have) if it reached a path.
BAD_NAMES = [
    (["segment", "--stain", "dapi", "--out", "o"], "--test-set", "../../x"),
    (["segment", "--test-set", "lung-toxic", "--out", "o"], "--stain", "../dapi"),
    (["measure", "--stain", "dapi", "--masks", "m", "--out", "o"], "--test-set", "kidney-toxic"),
    (["seed-spread", "--test-set", "lung-toxic", "--out", "o"], "--model-type", "../x.dapi"),
    (["bf-texture", "--out", "o"], "--test-set", "../lung-toxic"),
    (["infer", "--model", "m", "--out", "o", "--test-set", "lung-toxic"], "--test-set", "../x"),
    (["infer", "--model", "m", "--out", "o"], "--screen", "../lung"),
    (["ood", "--test-set", "lung-toxic", "--out", "o"], "--model", "lung-nontoxic.dapi"),
    (["screen-store", "--cell-type", "lung"], "--cell-type", "lung/../../x"),
    (["train-cellpose", "--stain", "dapi", "--out", "o"], "--train-set", "../x-toxic"),
    (["rank-features", "--out", "o"], "--inputs", "../x"),
    (
        ["evaluate", "--test-set", "lung-toxic", "--stain", "dapi", "--out", "o"]
        + ["--prediction", "p", "--real-masks", "m", "--real-features", "f", "--ranking", "r"],
        "--model",
        "a/lung-nontoxic.dapi.s0",
    ),
]


@pytest.mark.parametrize(("command", "option", "value"), BAD_NAMES)
def test_a_name_that_is_not_the_grids_is_one_line_naming_the_option(
    tmp_path, monkeypatch, capsys, command, option, value
):
    monkeypatch.chdir(tmp_path)
    given = f"{value}=features.parquet" if option == "--inputs" else value
    argv = [command[0], "--config", QUICK, *command[1:], option, given]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"error: {option} {value!r} is not a" in error
    assert not list(tmp_path.iterdir())  # nothing written


def test_every_job_of_the_workflow_names_the_grids_things(tmp_path):
    """The rules pass names the checks accept: a control, masks of a stain outside grid.stains
    (cy5's dapi nuclei), every command's name options."""
    control = "grid={stains: [cy5], controls: [{test_set: lung-toxic, acquisition: defocus}]}"
    config = ROOT / ".test" / "config.yaml"
    plan = snakemake(tmp_path, "-n", "-p", "--config", control, configfile=config).stdout
    (handed,) = (tmp_path / ".snakemake" / "vsgrid").glob("config-*.json")
    commands = re.findall(r'vsgrid ([a-z-]+ --config "\$VSGRID_CONFIG" [^;>\n]*)', plan)
    assert {"segment", "infer", "evaluate", "screen-run"} <= {c.split()[0] for c in commands}
    config = load_config(handed)
    for command in commands:
        args = build_parser().parse_args(
            shlex.split(command.replace("$VSGRID_CONFIG", str(handed)))
        )
        check_names(config, args)
