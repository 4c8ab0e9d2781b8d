import pytest
import yaml
from shared import DATA, RESULTS, ROOT, snakemake

from vsgrid.config import load_config
from vsgrid.data.synthetic import synthesize

GRID = "grid"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Two workers (pytest-xdist, pyproject's `-n 2 --dist loadgroup`) each take whole groups:
    a module is one group, so that its module fixtures are built once and its tests run in order
    (the README's walkthrough writes the plates its next commands read); the modules that read
    the session's .test grid are one group, which runs first as the longest, then the groups with
    the most slow tests."""
    on_grid = {item.module.__name__ for item in items if GRID in item.fixturenames}
    group = {}
    for item in items:
        module = item.module.__name__
        group[item] = GRID if module in on_grid else module
        item.add_marker(pytest.mark.xdist_group(group[item]))
    slow = {name: 0 for name in group.values()}
    for item in items:
        slow[group[item]] += item.get_closest_marker("slow") is not None
    items.sort(key=lambda item: (group[item] != GRID, -slow[group[item]]))


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
