"""Cluster jobs sized from measured costs: enough for what a job uses, far from ten times that."""

import pytest

from vsgrid.resources import (
    COSTS,
    MARGIN,
    MAX_RUNTIME_MIN,
    MIN_RUNTIME_MIN,
    REFERENCE_PIXELS,
    job_resources,
)


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
