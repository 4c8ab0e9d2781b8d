"""What a cluster job of each workflow step asks for, from the step's measured cost and the config.

Every step's cost is measured once per image at the paper's image size (1080 x 1080) and scaled
by the config's image size and number of images, so the paper grid's jobs are neither killed nor
asking for ten times what they use, and a smaller grid asks for less. Sources (bench/RESULTS.md):

- CPU steps: ``bench/scale.py`` on a 2-core x86-64 VM (slopes between two slices of one test set;
  peak resident memory, which does not grow with the number of images because every step streams);
- tables: ``bench/tables.py`` (time per run of 4,800 images, flat memory);
- train and infer: no GPU has measured them yet. Their costs are the paper network's FLOPs per
  image (``vsgrid describe-model``) at 15 % of an A100's bf16 peak, a deliberately low
  utilisation, plus Cellpose on each prediction; replace them with ``bench/model.py``'s figures
  from your GPU.

A job asks for :data:`MARGIN` times the estimate, and each retry (Snakemake's ``attempt``) for
that again. Stdlib only: the Snakefile imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REFERENCE_PIXELS = 1080 * 1080
BASE_MB = (
    450  # a vsgrid process with its libraries imported, before any image (quick grid's max_rss)
)
MARGIN = 2.0
MIN_RUNTIME_MIN = 10
# Two days, a common limit of GPU partitions. The paper's training (200 epochs of 21,000 fields)
# needs more: its job ends at the limit with last.pt saved and a retry resumes from there.
MAX_RUNTIME_MIN = 2880


@dataclass(frozen=True)
class Cost:
    """One step's cost at 1080 x 1080: seconds per job, core-seconds per image, peak memory."""

    start_s: float
    core_s_per_image: float
    peak_mb: float


COSTS = {
    "store": Cost(start_s=10, core_s_per_image=0.55, peak_mb=720),
    "segment_real": Cost(start_s=10, core_s_per_image=0.18, peak_mb=560),  # classical, one core
    "features_real": Cost(start_s=20, core_s_per_image=1.00, peak_mb=1440),
    "rank_features": Cost(
        start_s=300, core_s_per_image=0.0, peak_mb=2500
    ),  # capped instances; the forest's trees
    "evaluate": Cost(start_s=20, core_s_per_image=0.56, peak_mb=1980),
    "train": Cost(
        start_s=60, core_s_per_image=0.15, peak_mb=12000
    ),  # per image and epoch, on the GPU
    "infer": Cost(
        start_s=60, core_s_per_image=0.20, peak_mb=6000
    ),  # generator and Cellpose, on the GPU
    "tables": Cost(
        start_s=20, core_s_per_image=0.0004, peak_mb=1500
    ),  # per run image: runs x test images
    "figures": Cost(start_s=60, core_s_per_image=0.0, peak_mb=2000),
}


def job_resources(
    step: str, *, images: int, pixels: int, threads: int, attempt: int = 1
) -> dict[str, int]:
    """``mem_mb`` and ``runtime`` (minutes) for one job of ``step`` on ``images`` images of
    ``pixels`` pixels each, using ``threads`` cores; both grow with ``attempt``."""
    cost = COSTS[step]
    scale = pixels / REFERENCE_PIXELS
    seconds = cost.start_s + cost.core_s_per_image * scale * images / max(threads, 1)
    peak = BASE_MB + max(cost.peak_mb - BASE_MB, 0) * scale
    return {
        "mem_mb": int(math.ceil(MARGIN * peak * attempt)),
        "runtime": min(
            MAX_RUNTIME_MIN, max(MIN_RUNTIME_MIN, int(math.ceil(MARGIN * seconds / 60 * attempt)))
        ),
    }
