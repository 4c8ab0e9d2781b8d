"""Sampling train, validation and test images from plates, as the paper does.

Per cell type, the held-out plates feed the test sets only; the other plates are sampled into
train and validation. The same function serves synthetic and ingested plates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vsgrid.data.plates import named
from vsgrid.errors import VsgridError
from vsgrid.seeds import rng_for


def held_out_plates(plates, n_test: int) -> list[str]:
    """The last ``n_test`` plates by name: the default choice of test plates."""
    names = sorted(set(plates))
    if len(names) <= n_test:
        raise VsgridError(
            f"data.test_plates is {n_test} but there are only {len(names)} plates ({', '.join(names)}); "
            "at least one plate must remain for training"
        )
    return names[-n_test:]


def sample_splits(
    fields: pd.DataFrame,
    sizes: dict,
    test_plates,
    seed: int,
    data_set: str,
    *,
    test_unit: str = "fields",
) -> dict[str, pd.DataFrame]:
    """Draw ``sizes["train"]``, ``sizes["val"]`` and ``sizes["test"]`` fields without replacement.

    ``fields`` are the candidate fields of one (cell type, phenotype), with ``plate`` and ``well``
    columns. ``test_plates`` is either a number of plates to hold out (the last by name) or the
    plate names. ``test_unit`` "fields" draws test fields at random, as the paper does; "wells"
    draws whole wells at random and takes every field of each (the last one drawn may be cut to
    the size), so that wells hold several test fields. Each split comes back sorted by plate, well
    and field. Asking for more fields than there are is an error naming the config key.
    """
    if isinstance(test_plates, int):
        test_plates = held_out_plates(fields["plate"], test_plates)
    is_test = fields["plate"].isin(set(test_plates))
    rng = rng_for(seed, "splits", data_set)
    pools = {"test": fields[is_test], "train+val": fields[~is_test]}
    wanted = {"test": sizes["test"], "train+val": sizes["train"] + sizes["val"]}
    drawn = {}
    for pool, frame in pools.items():
        if wanted[pool] > len(frame):
            keys = "data.splits.test" if pool == "test" else "data.splits.train + data.splits.val"
            where = "held-out test plates" if pool == "test" else "training plates"
            raise VsgridError(
                f"{data_set}: {keys} asks for {wanted[pool]} images but the {where} have only {len(frame)}"
            )
        shuffled = frame.iloc[rng.permutation(len(frame))]
        if pool == "test" and test_unit == "wells":
            shuffled = _by_well(shuffled)
        drawn[pool] = shuffled.head(wanted[pool])
    order = ["plate", "well", "field"]
    train_val = drawn["train+val"]
    return {
        "train": train_val.iloc[: sizes["train"]].sort_values(order).reset_index(drop=True),
        "val": train_val.iloc[sizes["train"] :].sort_values(order).reset_index(drop=True),
        "test": drawn["test"].sort_values(order).reset_index(drop=True),
    }


def screen_splits(
    fields: pd.DataFrame,
    test_plates,
    *,
    controls: list[str],
    compounds: int | None,
    forest_fields: int,
) -> dict[str, pd.DataFrame]:
    """A screen store's fields, in plate, well, field order: ``test``, every field of every well
    of the held-out ``test_plates`` (a number, the last by name, or the names), or only the first
    ``compounds`` compounds' wells (by name) besides the ``controls``; ``train``, at most
    ``forest_fields`` fields of the control wells of the other plates, spread evenly over them,
    whose cells teach the phenotype forest as a screening group trains its classifier: on plates
    the screen does not hold. ``fields``: one row per field, with plate, well, field, compound."""
    if isinstance(test_plates, int):
        test_plates = held_out_plates(fields["plate"], test_plates)
    fields = fields.sort_values(["plate", "well", "field"]).reset_index(drop=True)
    held_out = fields["plate"].isin(set(test_plates))
    control = pd.Series(named(fields["compound"], controls), index=fields.index)
    if compounds:
        kept = sorted(fields.loc[~control, "compound"].unique())[:compounds]
        held_out &= control | fields["compound"].isin(kept)
    candidates = fields[~fields["plate"].isin(set(test_plates)) & control]
    spread = np.linspace(0, len(candidates) - 1, min(forest_fields, len(candidates)))
    return {
        "train": candidates.iloc[np.unique(spread.astype(int))].reset_index(drop=True),
        "test": fields[held_out].reset_index(drop=True),
    }


def _by_well(shuffled: pd.DataFrame) -> pd.DataFrame:
    """Shuffled fields regrouped by well, the wells in the order they first appear: a random
    order of wells drawn from the same permutation, so the training splits do not change."""
    first = shuffled.groupby(["plate", "well"], sort=False).ngroup()
    return (
        shuffled.assign(_well=first.to_numpy())
        .sort_values(["_well", "field"], kind="stable")
        .drop(columns="_well")
    )
