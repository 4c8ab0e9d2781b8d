"""``vsgrid train-plan``: what a model's training asks of a cluster (jobs, time, retries)."""

from __future__ import annotations

from vsgrid.cli.options import config_of


def _train_plan(args) -> None:
    from vsgrid.resources import training_plan

    print(training_plan(config_of(args)))


COMMANDS = [
    (
        "train-plan",
        _train_plan,
        "print one model's training plan on a cluster: GPU-hours, job limit, retries to the end",
        [],
    ),
]
