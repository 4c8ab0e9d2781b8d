from pathlib import Path

import pytest

from vsgrid.config import load_config
from vsgrid.data.synthetic import synthesize

ROOT = Path(__file__).resolve().parents[1]


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
