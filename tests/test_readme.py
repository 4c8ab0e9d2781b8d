"""Every command the README shows in a ```bash block works as written.

Each command runs in a scratch copy of the repository (the files a user has after cloning):
`vsgrid` commands for real, Snakemake ones as dry runs (`-n`), `make` targets with `make -n`.
Commands that need a cluster or conda (absent on CI machines) are checked for shell syntax and for
the files they name. `vsgrid train-cellpose` (minutes of training) is parsed here, with its
config file read; tests/test_segment.py runs it.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
CLUSTER_ONLY = ("conda ", "$(conda ", "source ")
PARSED_ONLY = ("vsgrid train-cellpose ",)
# Commands that write data sets (10-45 s each on two cores), and those that read what they wrote:
# the slow tier.
WRITES_DATA = ("vsgrid synthesize ", "vsgrid example-plates ", "vsgrid ingest ")


def slow(command: str) -> bool:
    if command.startswith(CLUSTER_ONLY):  # checked for syntax only
        return False
    return command.startswith(WRITES_DATA) or "my-plates/" in command


def commands() -> list[str]:
    """Every command line of the README's bash blocks, comments stripped, continuations joined."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """What a fresh clone holds, linked into a scratch folder so that commands write only there."""
    here = tmp_path_factory.mktemp("clone")
    for name in (
        "Snakefile",
        "workflow",
        "config",
        "profiles",
        "envs",
        "src",
        "Makefile",
        "pyproject.toml",
    ):
        (here / name).symlink_to(ROOT / name)
    return here


def run(command: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    # A home of the scratch folder's own: `bash profiles/install.sh` installs into it.
    env = {k: v for k, v in ENV.items() if k != "XDG_CONFIG_HOME"} | {"HOME": str(cwd / "home")}
    return subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def as_checked(command: str) -> str:
    """The command as the test runs it: a dry run where running it is a job for a cluster or hours."""
    words = shlex.split(command)
    if words[0] == "snakemake":
        return "snakemake -n " + command.removeprefix("snakemake ")
    if words[0] == "make":
        return "make -n " + command.removeprefix("make ")
    return command


def test_the_readme_shows_the_two_setup_commands_first():
    assert commands()[:2] == ["make quick", "make test"]


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, marks=[pytest.mark.slow] if slow(c) else []) for c in commands()],
)
def test_every_readme_command_works_as_written(command, clone):
    if command.startswith(CLUSTER_ONLY):
        assert run(f"bash -n -c {shlex.quote(command)}", clone).returncode == 0
        for name in re.findall(r"(envs/\S+|profiles/\S+)", command):
            assert (ROOT / name).exists(), name
        return
    if command.startswith(PARSED_ONLY):
        from vsgrid.cli import build_parser
        from vsgrid.config import load_config

        args = build_parser().parse_args(shlex.split(command)[1:])
        assert load_config(*(ROOT / f for f in args.config))
        return
    result = run(as_checked(command), clone)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
