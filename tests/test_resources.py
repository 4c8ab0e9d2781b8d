"""Cluster jobs sized from measured costs: enough for what a job uses, far from ten times that."""

import math
from pathlib import Path

import pytest

from vsgrid.config import load_config
from vsgrid.resources import (
    COSTS,
    FAILURE_RETRIES,
    MARGIN,
    MAX_RUNTIME_MIN,
    MIN_RUNTIME_MIN,
    REFERENCE_PIXELS,
    job_resources,
    screen_groups,
    screen_images,
    train_retries,
    training_plan,
)

CONFIG = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("step", ["segment_real", "features_real", "evaluate"])
def test_a_paper_job_asks_for_its_measured_use_with_a_margin(step):
    asked = job_resources(step, images=4800, pixels=REFERENCE_PIXELS, threads=4)
    cost = COSTS[step]
    assert cost.peak_mb < asked["mem_mb"] <= MARGIN * cost.peak_mb + 1
    minutes = (cost.start_s + cost.core_s_per_image * 4800 / 4) / 60
    assert minutes < asked["runtime"] <= max(MARGIN * minutes + 1, MIN_RUNTIME_MIN)


def test_memory_follows_image_size_not_image_count():
    paper = job_resources("evaluate", images=4800, pixels=REFERENCE_PIXELS, threads=4)
    more = job_resources("evaluate", images=48000, pixels=REFERENCE_PIXELS, threads=4)
    quick = job_resources("evaluate", images=16, pixels=128 * 128, threads=1)
    assert more["mem_mb"] == paper["mem_mb"] and more["runtime"] > 9 * paper["runtime"]
    assert quick["mem_mb"] < paper["mem_mb"] / 2


def test_a_retry_asks_for_more_up_to_the_runtime_limit():
    first, second = (
        job_resources("features_real", images=4800, pixels=REFERENCE_PIXELS, threads=4, attempt=a)
        for a in (1, 2)
    )
    assert second["mem_mb"] == 2 * first["mem_mb"] and second["runtime"] >= 2 * first["runtime"] - 1
    training = job_resources("train", images=21000 * 200, pixels=REFERENCE_PIXELS, threads=5)
    assert training["runtime"] == MAX_RUNTIME_MIN


@pytest.mark.parametrize("step", ["train", "infer"])
def test_a_gpu_step_asks_for_its_gpu_time_whatever_its_cpu_threads(step):
    one, five = (
        job_resources(step, images=4800, pixels=REFERENCE_PIXELS, threads=t) for t in (1, 5)
    )
    assert one == five
    minutes = (COSTS[step].start_s + COSTS[step].core_s_per_image * 4800) / 60
    assert minutes < one["runtime"] <= MARGIN * minutes + 1
    cpu = [
        job_resources("evaluate", images=4800, pixels=REFERENCE_PIXELS, threads=t) for t in (1, 4)
    ]
    assert cpu[1]["runtime"] < cpu[0]["runtime"] / 3  # a CPU step's threads share its work


def test_the_paper_training_runs_to_the_end_as_a_chain_of_resumed_jobs():
    paper = load_config(CONFIG / "config.yaml")
    estimate_s = COSTS["train"].start_s + COSTS["train"].core_s_per_image * 21000 * 200
    assert 170 < estimate_s / 3600 < 180  # the 175 GPU-hours of the README
    retries = train_retries(paper)
    assert retries == math.ceil(MARGIN * estimate_s / (MAX_RUNTIME_MIN * 60)) - 1 + FAILURE_RETRIES
    jobs_for_time = retries + 1 - FAILURE_RETRIES
    assert jobs_for_time * MAX_RUNTIME_MIN * 60 >= MARGIN * estimate_s
    assert (jobs_for_time - 1) * MAX_RUNTIME_MIN * 60 < MARGIN * estimate_s  # not more than that
    plan = training_plan(paper)
    assert "200 epochs x 21,000 images" in plan and f"retries: {retries}," in plan
    assert train_retries(load_config(CONFIG / "quick.yaml")) == FAILURE_RETRIES  # one job is enough


def test_memory_and_time_stop_growing_after_the_failure_retries():
    asked = [
        job_resources("train", images=1000, pixels=REFERENCE_PIXELS, threads=1, attempt=a)
        for a in range(1, 8)
    ]
    assert asked[FAILURE_RETRIES] == asked[-1] != asked[0]


def test_a_screen_job_reads_every_well_of_the_held_out_plates_and_the_tables_job_its_groups():
    paper, quick = (load_config(CONFIG / name) for name in ("config.yaml", "quick.yaml"))
    assert screen_images(paper) == 3 * 384 * 9  # 3 held-out plates, 9 fields a well
    assert screen_images(quick) == 384 * 10  # one plate, at breast's 10 fields a well (the most)
    # 27 groups of screen runs (screen, stain, seed; one training phenotype), 9 of controls
    assert screen_groups(paper) == 27 + 9
