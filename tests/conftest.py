import subprocess

import pytest
import yaml
from shared import DATA, ENV, RESULTS, ROOT, snakemake_command

from vsgrid.config import load_config
from vsgrid.data.synthetic import synthesize


@pytest.fixture(scope="session")
def quick_config():
    """config/quick.yaml with larger splits, so that the statistics the tests check are stable."""
    config = load_config(ROOT / "config" / "quick.yaml")
    config["data"]["splits"] = {"train": 96, "val": 24, "test": 48}
    return config


@pytest.fixture(scope="session")
def quick_stores(quick_config, tmp_path_factory):
    """The quick synthetic data set, built once for the whole test session."""
    out = tmp_path_factory.mktemp("quick")
    paths = synthesize(quick_config, out, workers=2, progress=False)
    return {p.name.removesuffix(".zarr"): p for p in paths}


@pytest.fixture(scope="session", autouse=True)
def _grid_run(request, tmp_path_factory):
    """The .test grid's Snakemake run, started with the session when a selected test takes
    ``grid``, on one core beside the tests: most of the suite's tests keep one core busy, so the
    grid's minutes overlap them instead of adding to them. Killed if the session ends first."""
    if not any("grid" in item.fixturenames for item in request.session.items):
        yield None
        return
    workdir = tmp_path_factory.mktemp("workflow")
    config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    config["results"]["dir"], config["data"]["dir"] = RESULTS, DATA
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    log = (workdir / "snakemake.log").open("w")
    process = subprocess.Popen(
        snakemake_command(workdir, cores=1), stdout=log, stderr=subprocess.STDOUT, env=ENV
    )
    yield workdir, process
    if process.poll() is None:
        process.kill()
    log.close()


@pytest.fixture(scope="session")
def grid(_grid_run):
    """The .test grid, run to the end once for the session (its run starts with the session,
    :func:`_grid_run`; every test that takes it is in the slow tier). tests/test_workflow.py checks
    what it wrote; tests/test_slurm.py starts from a copy of it."""
    workdir, process = _grid_run
    if process.wait(timeout=1800) != 0:
        raise AssertionError(
            f"the .test grid failed:\n{(workdir / 'snakemake.log').read_text()[-5000:]}"
        )
    return workdir
