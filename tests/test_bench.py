"""Every benchmark script runs at its tiny size and prints the figures it is for; its --help works.

bench/measure.py is the module the scripts share (imported, never run), so it is not among them.
"""

import re
import subprocess
import sys

import pytest
from shared import ENV, ROOT

BENCH = ROOT / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "measure")

NUMBER = r"-?[\d.]+(?:e[+-]\d+)?"
# What each script must print at its tiny size: the lines that carry its figures, with their units.
FIGURES = {
    "calibration": [
        rf"^\s+1 images\s+\d+\s+\d+\s+{NUMBER}%\s+{NUMBER}%$",
        rf"^\s+1 hierarchical\s+\d+\s+\d+\s+{NUMBER}%\s+{NUMBER}%$",
    ],
    "ingest": [
        r"^OME-Zarr ingest, 8 fields of 64 x 64 \(4 channels, uint16\):$",
        rf"^fields table \(every plate's, well's and field's metadata\): {NUMBER} ms per field$",
        rf"^whole ingest: {NUMBER} s wall, {NUMBER} s CPU per field \({NUMBER} s in all\)$",
    ],
    "jobs": [
        rf"^{rule}\s+1\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$"
        for rule in ("store", "segment_real", "features_real")
    ]
    + [r"^all\s+3\s+"],
    "evaluate": [
        rf"^features, serial cp_measure:\s+{NUMBER} nuclei/s",
        rf"^features, \d+ processes:\s+{NUMBER} nuclei/s .* speed-up {NUMBER}x$",
        rf"^Cellpose 3 on \w+.*: {NUMBER} images/s",
        rf"^one job's features, fresh process, 2 fields of 128 x 128: numba {NUMBER} s CPU,"
        rf" none {NUMBER} s CPU \(none / numba {NUMBER}\)$",
        *(
            rf"^{group}, 2 fields of 128 x 128: cp_measure {NUMBER} ms, vsgrid's {NUMBER} ms"
            rf" per field \(x{NUMBER}\)$"
            for group in ("granularity", "radial distribution")
        ),
        rf"^classical segmentation, 2 fields of 128 x 128: scikit-image's seeds {NUMBER} ms,"
        rf" numba's {NUMBER} ms per field \(x{NUMBER}\)$",
    ],
    "model": [
        rf"^  {variant}\s+train\s+{NUMBER} img/s \({NUMBER} TFLOP/s\)"
        rf"\s+infer\s+{NUMBER} img/s \({NUMBER} TFLOP/s\)"
        for variant in (r"fp32 eager", r"bf16 autocast", r"bf16 \+ compile \(aot_eager\)")
    ]
    + [rf"^  FLOPs: {NUMBER} G per image per training step"],
    "scale": [
        rf"^synthesize: \d+ fields of 256 x 256 in {NUMBER} s",
        *(
            rf"^{step}\s+{NUMBER}\s+\d+\s+\d+\s+\d+ jobs x\s+{NUMBER} core-h"
            for step in ("segment_real", "features_real", "rank_features", "evaluate")
        ),
        rf"^CPU steps of the paper grid: {NUMBER} core-hours",
    ],
    "screen": [
        r"^lung screen, 96 x 96 fields at 1.3 um, 1 per well: \d+ images",
        *(
            rf"^{step}\s+{NUMBER}\s+\d+\s+\d+$"
            for step in (
                "screen_store",
                "segment_screen",
                "screen_reference",
                "screen_run",
                "screen_tables",
            )
        ),
        rf"^real DAPI: \d+ cells per DMSO well; Z' \w+ {NUMBER}",
    ],
    "selection": [rf"^lung\s+dapi\s+\d+\s+{NUMBER}\s+{NUMBER}$"],
    "synthesize": [
        rf"^\s*{size} x {size}\s+\d process\(es\):\s+{NUMBER} fields/s" for size in ("256", "1080")
    ]
    + [rf"^quick dataset .*: {NUMBER} s$"],
    "tables": [
        rf"^\s+36\s+18\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+\d+$",
        rf"^\s+144\s+18\s+{NUMBER}",
    ],
    "trust": [
        rf"^  {case}\s+{NUMBER} s wall\s+{NUMBER} s CPU per image \({NUMBER} x the pass alone\)$"
        for case in ("pass alone", r"\+ OOD score", r"\+ OOD and TTA")
    ]
    + [
        rf"^\s+{n} test images\s+{variant}\s+{NUMBER} s wall\s+{NUMBER} s CPU per image\s+peak\s+{NUMBER} MB$"
        for n in (8, 16)
        for variant in (r"TTA \+ OOD", "OOD only")
    ],
    "workflow": [
        rf"^one-rule Snakefile\s+dry run {NUMBER} s",
        r"^quick.yaml grid\s+dry run .* \d+ jobs: 21 train, 18 infer, 84 evaluate$",
    ],
}
# More than 10 s of CPU each: the workflow's jobs and a training, a dozen `vsgrid` processes,
# torch.compile (model), or two `vsgrid tables` runs over generated grids (tables).
SLOW = {
    "calibration",
    "evaluate",
    "model",
    "scale",
    "screen",
    "selection",
    "tables",
    "trust",
}


@pytest.fixture(scope="module")
def tiny_runs(_lane):
    """The tiny runs of the scripts whose tests were selected: the session's background lane
    (conftest.py) starts them with the session, after the .test grid when that runs too.
    --durations charges the wait to the setup of the first selected one."""
    return {script: run.result() for script, run in _lane["tiny"].items()}


def test_every_script_has_its_figures():
    assert sorted(FIGURES) == SCRIPTS


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=[pytest.mark.slow] if s in SLOW else []) for s in SCRIPTS]
)
def test_the_tiny_size_prints_the_figures(script, tiny_runs):
    result = tiny_runs[script]
    assert result.returncode == 0, result.stderr[-3000:]
    for figure in FIGURES[script]:
        assert re.search(figure, result.stdout, re.M), (
            f"no line matches {figure!r}:\n{result.stdout}"
        )


@pytest.mark.slow  # thirteen interpreters importing torch, pandas and the rest at once: 11 s
def test_help_of_every_script_exits_0_quickly(tmp_path):
    """All at once: --help exits before any work, so it costs each script only its imports."""
    running = {
        s: subprocess.Popen(
            [sys.executable, str(BENCH / f"{s}.py"), "--help"],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in SCRIPTS
    }
    for script, process in running.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, f"{script}: {err[-2000:]}"
        assert out.startswith("usage:") and "--tiny" in out, f"{script}: {out}"
    assert not list(tmp_path.iterdir())  # and wrote nothing
