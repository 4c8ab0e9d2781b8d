"""Every command the README and the docs pages show in a ```bash block works as written.

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

import numpy as np
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


def pages() -> list[Path]:
    """The README, then the docs pages it indexes."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands() -> list[str]:
    """Every command line of the pages' bash blocks, comments stripped, continuations joined, in
    page order; a command a later page repeats runs once."""
    found = []
    for page in pages():
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].strip()
                if line and not line.startswith("#") and line not in found:
                    found.append(line)
    return found


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """What a fresh clone holds, linked into a scratch folder so that commands write only there."""
    here = tmp_path_factory.mktemp("clone")
    for name in (
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


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_pages_reaches_a_file_and_its_heading():
    for page in [*pages(), ROOT / "config" / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            path, fragment = target
            if path.startswith(("http://", "https://")):
                continue
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {path} does not exist"
            if fragment:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                assert fragment in {anchor(h) for h in headings}, f"{page.name}: #{fragment}"


@pytest.mark.slow
def test_the_walkthrough_plates_ingest_alike_from_ome_zarr_and_from_tiffs(clone):
    """The README's example plates, both inputs: the two ingests store the same pixels, field for
    field. It reuses what the walkthrough's commands wrote in the clone, and writes it if they did
    not run (this test alone)."""
    from vsgrid.data.store import open_store

    for out, flag in (("my-plates", ""), ("my-tiffs", " --tiff")):
        if not (clone / out / "config.yaml").exists():
            result = run(
                f"vsgrid example-plates --config config/quick.yaml --out {out}{flag}", clone
            )
            assert result.returncode == 0, result.stderr[-2000:]
        if not (clone / out / "stores").exists():
            result = run(f"vsgrid ingest --config {out}/config.yaml", clone)
            assert result.returncode == 0, result.stderr[-2000:]
    stores = {
        out: sorted((clone / out / "stores").glob("*.zarr")) for out in ("my-plates", "my-tiffs")
    }
    assert len(stores["my-plates"]) > 0
    assert [p.name for p in stores["my-plates"]] == [p.name for p in stores["my-tiffs"]]
    for ours, theirs in zip(stores["my-plates"], stores["my-tiffs"]):
        a, b = open_store(ours), open_store(theirs)
        for split in ("train", "val", "test"):
            columns = ["plate", "well"]
            assert a.split_metadata(split)[columns].equals(b.split_metadata(split)[columns])
            assert np.array_equal(a.images(split)[:], b.images(split)[:])
