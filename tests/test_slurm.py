"""The cluster profile on a real single-node SLURM (tests/slurm/run.sh): run when root with apt-get."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from shared import DATA, RESULTS

SCRIPT = Path(__file__).parent / "slurm" / "run.sh"


def why_not() -> str | None:
    if os.environ.get("VSGRID_SKIP_SLURM"):
        return "VSGRID_SKIP_SLURM is set"
    if os.geteuid() != 0:
        return "installing and starting SLURM needs root"
    if not shutil.which("apt-get"):
        return "installing SLURM needs apt-get (Debian's slurm-wlm and munge)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(why_not() is not None, reason=why_not() or "")
def test_gpu_rules_run_through_the_slurm_profile(grid, tmp_path):
    """From a copy of the finished .test grid (its data and the real stains' masks, features and
    rankings done), one model trained again: its train, infer, infer_screen, evaluate and
    screen_run jobs, and a forced screen_reference, are all that go through SLURM."""
    for source, target in ((DATA, "data"), (RESULTS, "results")):
        # copytree keeps modification times: what is copied stays up to date
        shutil.copytree(grid / source, tmp_path / target, symlinks=True)
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            **os.environ,
            "VSGRID_SLURM_WORKDIR": str(tmp_path),
            "VSGRID_SLURM_FORCERUN": "train screen_reference",
        },
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    # what the copy holds was not made again: no store went through SLURM
    logs = tmp_path / "results" / "slurm_logs"
    assert not (logs / "rule_store").exists() and not (logs / "rule_screen_store").exists()
    assert (
        "rule train: job" in output
        and "rule infer: job" in output
        and "on partition gpu with a GPU" in output
    )
    assert "rule infer_screen: job" in output  # level 4's GPU job
    assert "rule evaluate: job" in output and "on partition cpu without a GPU" in output
    assert (
        "rule screen_reference: job" in output and "rule screen_run: job" in output
    )  # its CPU jobs
    scores = (
        tmp_path / "results" / "runs" / "lung-nontoxic.dapi.s0" / "lung-toxic" / "scores.parquet"
    )
    import pandas as pd

    assert {"ssim", "psnr", "f1", "nmae"} <= set(pd.read_parquet(scores)["metric"])
    screen = tmp_path / "results" / "screen"
    virtual = pd.read_parquet(screen / "runs" / "lung-nontoxic.dapi.s0" / "lung.wells.parquet")
    real = pd.read_parquet(screen / "reference" / "lung" / "dapi.wells.parquet")
    assert len(virtual) > 0 and virtual[["plate", "well"]].equals(real[["plate", "well"]])
