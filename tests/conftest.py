import os

# One OpenMP thread for torch in the test process and what it starts without its own setting (a
# workflow job sets its `threads`): the background lane (_lane) keeps the other core busy for most
# of the session, and two threads spinning against it on one free core cost more than they give
# (Cellpose's one-epoch training: 30 s alone, 100 s beside the lane). Before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from subprocess import PIPE

import pytest
import yaml
from shared import DATA, ENV, RESULTS, ROOT, bench_command, snakemake_command

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


def pytest_collection_modifyitems(items):
    """The bench scripts' tiny runs' tests last: their runs are the background lane's last work
    (:func:`_lane`), and a test waiting on them early would leave a core idle."""
    items.sort(key=lambda item: "tiny_runs" in getattr(item, "fixturenames", ()))


class Lane:
    """Commands run in the background while the tests go on, ``width`` at a time in the order
    they were submitted; :meth:`close` cancels what has not started and kills what has."""

    def __init__(self, width: int):
        self.pool, self.running = ThreadPoolExecutor(width), set()

    def submit(self, command: list[str], *, timeout: float, **popen) -> Future:
        return self.pool.submit(self._run, command, timeout, popen)

    def _run(self, command, timeout, popen) -> subprocess.CompletedProcess:
        process = subprocess.Popen(command, text=True, **popen)
        self.running.add(process)
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:  # timed out
                process.kill()
            self.running.discard(process)
        return subprocess.CompletedProcess(command, process.returncode, out, err)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in list(self.running):
            process.kill()


@pytest.fixture(scope="session", autouse=True)
def _lane(request, tmp_path_factory):
    """The session's long background work, started with it: the .test grid's Snakemake run when
    a selected test takes ``grid``, then the tiny runs of the bench scripts whose tests were
    selected. With the grid, one at a time: most of the suite keeps one core busy, so the lane's
    minutes overlap the tests instead of adding to them (the tiny runs, after the grid, fill the
    core its end frees). Without it, two at a time."""
    items = request.session.items
    wants_grid = any("grid" in item.fixturenames for item in items)
    scripts = sorted(
        {item.callspec.params["script"] for item in items if "tiny_runs" in item.fixturenames}
    )
    lane, work = Lane(1 if wants_grid else 2), {}
    if wants_grid:
        workdir = tmp_path_factory.mktemp("workflow")
        config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
        config["results"]["dir"], config["data"]["dir"] = RESULTS, DATA
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        log = (workdir / "snakemake.log").open("w")
        command = snakemake_command(workdir, cores=1)
        work["grid"] = (
            workdir,
            lane.submit(command, timeout=1800, stdout=log, stderr=subprocess.STDOUT, env=ENV),
        )
    scratch = tmp_path_factory.mktemp("bench") if scripts else None
    work["tiny"] = {
        script: lane.submit(
            bench_command(script, scratch),
            timeout=600,
            cwd=scratch,
            env=ENV,
            stdout=PIPE,
            stderr=PIPE,
        )
        for script in scripts
    }
    yield work
    lane.close()
    if wants_grid:
        log.close()


@pytest.fixture(scope="session")
def grid(_lane):
    """The .test grid, run to the end once for the session (its run starts with the session,
    :func:`_lane`; every test that takes it is in the slow tier). tests/test_workflow.py checks
    what it wrote; tests/test_slurm.py starts from a copy of it."""
    workdir, run = _lane["grid"]
    if run.result().returncode != 0:
        raise AssertionError(
            f"the .test grid failed:\n{(workdir / 'snakemake.log').read_text()[-5000:]}"
        )
    return workdir
