# What each rule's jobs ask for: threads, a GPU, and memory and runtime from the step's measured
# cost (vsgrid.resources) for the images a job reads.

from vsgrid.resources import (
    REFERENCE_PIXELS,
    config_pixels,
    job_resources,
    screen_groups,
    screen_images,
    train_retries,
    training_work,
)

SPLITS = config["data"]["splits"]
PIXELS = config_pixels(config)
TRAIN_IMAGES, TRAIN_PIXELS = training_work(config)
# Level 4: a screen store's test split, the fields the phenotype forest trains on (its train
# split), and the groups of runs screen_tables compares.
SCREEN_IMAGES = screen_images(config)
FOREST_IMAGES = config["evaluation"]["screen"]["forest_fields"]
SCREEN_GROUPS = screen_groups(config)
# Feature processes of the jobs that measure (features.workers; 0 = 4 per job, a CPU node's share).
FEATURE_WORKERS = config["features"]["workers"] or 4
CELLPOSE = config["segmentation"]["backend"] == "cellpose"


def gpu(needed):
    """A GPU for the rules that use one; the SLURM profile turns it into --gpus."""
    return 1 if needed else 0


def resources(step, images, pixels=PIXELS):
    """A step's mem_mb and runtime from its measured cost, for jobs of ``images`` images (a
    number, or a function of the wildcards), growing with each retry."""

    def estimate(key):
        # Snakemake calls a resource with the arguments its function names
        def value(wildcards, threads, attempt):
            n = images(wildcards) if callable(images) else images
            found = job_resources(step, images=n, pixels=pixels, threads=threads, attempt=attempt)
            return found[key]

        return value

    return {key: estimate(key) for key in ("mem_mb", "runtime")}
