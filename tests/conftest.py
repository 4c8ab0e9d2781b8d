import pytest
import yaml
from shared import DATA, RESULTS, ROOT, snakemake

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


@pytest.fixture(scope="session")
def grid(tmp_path_factory):
    """The .test grid, run to the end once for the session (minutes: every test that takes it is
    in the slow tier). tests/test_workflow.py checks what it wrote; tests/test_slurm.py starts
    from a copy of it."""
    workdir = tmp_path_factory.mktemp("workflow")
    config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    config["results"]["dir"], config["data"]["dir"] = RESULTS, DATA
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir)
    return workdir
