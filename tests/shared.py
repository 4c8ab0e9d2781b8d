"""What several test modules share that is not a fixture (those are in conftest.py): running
Snakemake on the repository's Snakefile, level-4 plates built by hand, the ingest tests' plate map.
A plain module, so that test modules import it rather than one another."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.screen.curves import hill
from vsgrid.screen.decisions import Readout, decisions
from vsgrid.screen.plate import Plate

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

# Where the `grid` fixture (conftest.py) keeps its data and results: paths with a space and with
# shell syntax, which every rule must quote and none may run.
RESULTS, DATA = "my results", "data $(touch pwned)"


# Where a bench script writes at its tiny size: a scratch folder of the test session, never /tmp's
# shared defaults.
BENCH_OUT = {
    "calibration": "--out",
    "ingest": "--out",
    "jobs": "--out",
    "scale": "--out",
    "screen": "--out",
    "selection": "--build",
    "tables": "--out",
    "trust": "--out",
}


def bench_command(script: str, scratch: Path) -> list[str]:
    """bench/<script>.py at its tiny size, writing under ``scratch``."""
    command = [sys.executable, str(ROOT / "bench" / f"{script}.py"), "--tiny"]
    if script in BENCH_OUT:
        command += [BENCH_OUT[script], str(scratch / script)]
    return command


def snakemake_command(workdir, *args, configfile=None, cores=2) -> list[str]:
    """Snakemake on the repository's Snakefile in ``workdir``, by default with the workdir's
    config.yaml (``configfile`` may be a list: later files overlay earlier ones)."""
    configfiles = (
        configfile
        if isinstance(configfile, list)
        else [configfile or Path(workdir) / "config.yaml"]
    )
    return [
        str(BIN / "snakemake"),
        "--snakefile",
        str(ROOT / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        *map(str, configfiles),
        "--cores",
        str(cores),
        # as profiles/local: the default ILP scheduler solves a problem after every finished job
        "--scheduler",
        "greedy",
        *args,
    ]


def snakemake(workdir, *args, configfile=None, check=True):
    """:func:`snakemake_command` run to its end, its output captured."""
    command = snakemake_command(workdir, *args, configfile=configfile)
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=1200)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def planned(workdir, *args, **kwargs) -> dict[str, int]:
    """Jobs per rule of a dry run (empty when there is nothing to do)."""
    result = snakemake(workdir, "-n", *args, **kwargs)
    text = result.stdout + result.stderr
    stats = text[text.find("Job stats:") :].split("\n\n")[0] if "Job stats:" in text else ""
    return {
        rule: int(count)
        for rule, count in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M)
        if rule != "total"
    }


# Level 4 on plates built by hand (tests/test_screen.py, test_assay.py, test_sentinels.py).
DOSES = np.array([0.01, 0.03, 0.1, 0.3, 1.0, 3.0])


def decide(plate: Plate, real: np.ndarray, virtual: np.ndarray, index: np.ndarray) -> dict:
    """Level-4 decisions of two readouts given per well, each fitted over ``index``."""
    return decisions(
        plate, Readout.of(plate, real, index), Readout.of(plate, virtual, index), index
    )


def plate_wells(
    compounds=("CPD-01", "CPD-02"), dmso=16, positives=8, doses=DOSES, replicates=5
) -> pd.DataFrame:
    rows = [("DMSO", 0.0)] * dmso + [("etoposide", 10.0)] * positives
    rows += [(c, d) for c in compounds for d in doses for _ in range(replicates)]
    return pd.DataFrame(rows, columns=["compound", "concentration"])


def readout(
    wells: pd.DataFrame, ec50: dict, rng, noise=0.02, top=0.1, bottom=1.0, positive=0.1
) -> np.ndarray:
    """A readout that falls from ``bottom`` (DMSO) to ``top`` with each compound's EC50."""
    values = np.full(len(wells), bottom)
    for name, e in ec50.items():
        rows = wells["compound"].eq(name).to_numpy()
        values[rows] = hill(
            np.log10(wells.loc[rows, "concentration"]), bottom, top, np.log10(e), 2.0
        )
    values[wells["compound"].eq("etoposide").to_numpy()] = positive
    return values + rng.normal(0, noise, len(values))


# The ingest tests' plates (tests/test_ingest.py, test_ome_zarr.py).
WELLS = {  # well -> (compound, concentration); one compound at six concentrations
    "A01": ("DMSO", 0),
    "A02": ("CPD-A", 0.01),
    "A03": ("CPD-A", 0.03),
    "A04": ("CPD-A", 0.1),
    "B01": ("CPD-A", 0.3),
    "B02": ("CPD-A", 1),
    "B03": ("CPD-A", 3),
    "B04": ("Etoposide", 10),
}
PLATES = {"PL1": "lung", "PL2": "lung", "PL3": "lung"}  # PL3, last by name, is the test plate
