"""What a cluster job of each workflow step asks for, from the step's measured cost and the config.

Every step's cost is measured once per image at the paper's image size (1080 x 1080) and scaled
by the config's image size and number of images, so the paper grid's jobs are neither killed nor
asking for ten times what they use, and a smaller grid asks for less. Sources (bench/RESULTS.md):

- CPU steps: ``bench/scale.py`` on a 2-core x86-64 VM (slopes between two slices of one test set;
  peak resident memory, which does not grow with the number of images because every step streams);
- tables: ``bench/tables.py`` (the paper's 243 runs of 4,800 images, the trust table included;
  flat memory); screen tables: 61 s per group of screen runs (screen, stain, seed) at the paper's
  size;
- train and infer: no GPU has measured them yet. Their costs are the paper network's FLOPs per
  image (``vsgrid describe-model``) at 15 % of an A100's bf16 peak, a deliberately low
  utilisation, plus Cellpose on each prediction; replace them with ``bench/model.py``'s figures
  from your GPU.

A job asks for :data:`MARGIN` times the estimate, and each retry (Snakemake's ``attempt``) for
that again, up to :data:`FAILURE_RETRIES` retries. A GPU step's time is the GPU's: its CPU
threads feed the GPU and do not divide it. A training longer than :data:`MAX_RUNTIME_MIN` runs as
a chain of jobs, each resuming from ``last.pt`` (:func:`train_retries`, :func:`training_plan`).
How many images a job of a step reads comes from the config: :func:`training_work`, and level 4's
:func:`screen_images` and :func:`screen_groups`. Stdlib only: the Snakefile imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vsgrid import grid

REFERENCE_PIXELS = 1080 * 1080
BASE_MB = (
    450  # a vsgrid process with its libraries imported, before any image (quick grid's max_rss)
)
MARGIN = 2.0
MIN_RUNTIME_MIN = 10
# Two days, a common limit of GPU partitions. The paper's training (200 epochs of 21,000 fields)
# needs more: its job ends at the limit with last.pt saved and a retry resumes from there.
MAX_RUNTIME_MIN = 2880
# Retries for failures (memory, a node), as the SLURM profile gives every rule: each asks for more.
# Memory and time stop growing after them (a training's later retries are its chain's next jobs).
FAILURE_RETRIES = 2


@dataclass(frozen=True)
class Cost:
    """One step's cost at 1080 x 1080: seconds per job, core-seconds per image (GPU-seconds for a
    ``gpu`` step), peak memory."""

    start_s: float
    core_s_per_image: float
    peak_mb: float
    gpu: bool = False


COSTS = {
    "store": Cost(start_s=10, core_s_per_image=0.55, peak_mb=720),
    "segment_real": Cost(start_s=10, core_s_per_image=0.18, peak_mb=560),  # classical, one core
    "features_real": Cost(start_s=20, core_s_per_image=1.00, peak_mb=1440),
    "rank_features": Cost(
        start_s=300, core_s_per_image=0.0, peak_mb=2500
    ),  # capped instances; the forest's trees
    "evaluate": Cost(start_s=20, core_s_per_image=0.56, peak_mb=1980),
    # per seed's image: decoding the predictions and one standard deviation per pixel
    "seed_spread": Cost(start_s=10, core_s_per_image=0.02, peak_mb=600),
    # per field: reading its BF, binned to 540 x 540, six Gaussian filters
    "bf_texture": Cost(start_s=10, core_s_per_image=0.05, peak_mb=500),
    "train": Cost(
        start_s=60, core_s_per_image=0.15, peak_mb=12000, gpu=True
    ),  # per image and epoch
    "infer": Cost(start_s=60, core_s_per_image=0.20, peak_mb=6000, gpu=True),  # generator, Cellpose
    # per run image (runs x test images): 243 runs of 4,800 in 615 s with the trust table
    "tables": Cost(start_s=20, core_s_per_image=0.00053, peak_mb=1500),
    "screen_tables": Cost(start_s=20, core_s_per_image=61, peak_mb=1500),  # per group, not image
    "figures": Cost(start_s=60, core_s_per_image=0.0, peak_mb=2000),
    # vsgrid export on the 2-core VM: 4 and 40 fields of noise (the least compressible), flat memory
    "export": Cost(start_s=10, core_s_per_image=0.30, peak_mb=420),
}


def job_seconds(step: str, *, images: int, pixels: int, threads: int) -> float:
    """The estimated time of one job of ``step`` on ``images`` images of ``pixels`` pixels each,
    using ``threads`` cores (which share a CPU step's work, not a GPU step's)."""
    cost = COSTS[step]
    work = cost.core_s_per_image * pixels / REFERENCE_PIXELS * images
    return cost.start_s + work / (1 if cost.gpu else max(threads, 1))


def job_resources(
    step: str, *, images: int, pixels: int, threads: int, attempt: int = 1
) -> dict[str, int]:
    """``mem_mb`` and ``runtime`` (minutes) for one job of ``step`` on ``images`` images of
    ``pixels`` pixels each, using ``threads`` cores; both grow with ``attempt``."""
    cost = COSTS[step]
    seconds = job_seconds(step, images=images, pixels=pixels, threads=threads)
    peak = BASE_MB + max(cost.peak_mb - BASE_MB, 0) * pixels / REFERENCE_PIXELS
    growth = min(attempt, 1 + FAILURE_RETRIES)
    return {
        "mem_mb": int(math.ceil(MARGIN * peak * growth)),
        "runtime": min(
            MAX_RUNTIME_MIN, max(MIN_RUNTIME_MIN, int(math.ceil(MARGIN * seconds / 60 * growth)))
        ),
    }


def config_pixels(config: dict) -> int:
    """Pixels of the config's fields. Ingested plates' size is known only once their store exists:
    they are counted as the paper's."""
    data = config["data"]
    return (
        data["synthetic"]["field_size"] ** 2 if data["source"] == "synthetic" else REFERENCE_PIXELS
    )


def training_work(config: dict) -> tuple[int, int]:
    """One model's training: images (per epoch x epochs) and their pixels (crops or whole fields)."""
    train = config["train"]
    pixels = train["crop_size"] ** 2 if train["crop_size"] else config_pixels(config)
    return config["data"]["splits"]["train"] * train["max_epochs"], pixels


def screen_images(config: dict) -> int:
    """The images of a screen store's test split: every well of every held-out plate, of the cell
    type imaged with the most fields per well (an upper bound when only some compounds are
    kept)."""
    plates = config["data"]["test_plates"]
    return (
        grid.ROWS
        * grid.COLUMNS
        * (plates if isinstance(plates, int) else len(plates))
        * max(grid.screen_fields_per_well(config, c) for c in config["grid"]["cell_types"])
    )


def screen_groups(config: dict) -> int:
    """The groups the screen tables compare one at a time: the screen runs of one (screen, stain,
    seed, training phenotype), and the controls of one (screen, stain)."""
    runs = {
        (r.cell_type, r.model.stain, r.model.seed, r.model.train_set.phenotype)
        for r in grid.screen_runs(config)
    }
    return len(runs) + len({(r.cell_type, r.model.stain) for r in grid.control_runs(config)})


def train_retries(config: dict) -> int:
    """Retries of a training job: enough jobs of at most :data:`MAX_RUNTIME_MIN` to do
    :data:`MARGIN` times the estimated work, each resuming from ``last.pt`` where the one before
    stopped, and :data:`FAILURE_RETRIES` more."""
    images, pixels = training_work(config)
    seconds = job_seconds("train", images=images, pixels=pixels, threads=1)
    return math.ceil(MARGIN * seconds / (MAX_RUNTIME_MIN * 60)) - 1 + FAILURE_RETRIES


def training_plan(config: dict) -> str:
    """What one model's training asks of the cluster, in three lines."""
    (images, pixels), epochs = training_work(config), config["train"]["max_epochs"]
    hours = job_seconds("train", images=images, pixels=pixels, threads=1) / 3600
    asked, retries = (
        job_resources("train", images=images, pixels=pixels, threads=1),
        train_retries(config),
    )
    job_hours, epoch_hours = asked["runtime"] / 60, hours / epochs

    def duration(h: float) -> str:
        return f"{h:,.0f} h" if h >= 2 else f"{h * 60:,.1f} min"

    return "\n".join(
        [
            f"train: {epochs} epochs x {images // epochs:,} images of {pixels:,} pixels: "
            f"{duration(hours)} of GPU estimated ({duration(epoch_hours)} per epoch)",
            f"a job: {duration(job_hours)} (about {job_hours / epoch_hours:,.0f} epochs), "
            f"{asked['mem_mb'] / 1000:,.0f} GB; memory grows at the first {FAILURE_RETRIES} retries",
            f"retries: {retries}, up to {retries + 1} jobs of {duration(job_hours)} "
            f"({duration((retries + 1) * job_hours)}, {(retries + 1) * job_hours / hours:.1f} x the "
            "estimate), each resuming from last.pt",
        ]
    )
