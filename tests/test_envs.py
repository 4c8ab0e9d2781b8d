"""pyproject.toml is the one place dependencies are pinned; the conda files must say the same."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pip_pins(env_file: str) -> list[str]:
    env = yaml.safe_load((ROOT / "envs" / env_file).read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    return pip


def test_env_files_pin_what_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pip_pins("vsgrid.yaml") == project["project"]["dependencies"]
    assert pip_pins("snakemake.yaml") == project["dependency-groups"]["cluster"]


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in project["project"]["dependencies"] + project["dependency-groups"]["cluster"]:
        assert "==" in requirement, requirement
