"""Is what a model says of its own predictions worth trusting? Checked against the real stain.

A prediction carries what the model says without the real stain
(:mod:`vsgrid.model.uncertainty`): each pixel's spread over test-time augmentation and, where
asked for, over MC dropout, and each field's out-of-distribution (OOD) score. Per image, the
evaluation writes them beside the image's scores as :data:`UNCERTAINTIES`: ``tta`` (read with
the image it scores, :func:`vsgrid.evaluation.scoring.score_image`), ``dropout`` and ``ood``
(:func:`image_trust`). A model type trained with several
seeds says one more: where its seeds disagree (:func:`seed_spread`, per image the mean over the
field of each pixel's standard deviation over the seeds' predictions, ddof 1: a few seeds are a
sample of the trainings that could have been).
The grid holds the truth to check them against (:mod:`vsgrid.report.trust`, with
:mod:`vsgrid.stats`'s statistics):

- :func:`vsgrid.stats.spearman`: does an image the model is less sure of have a larger error?
  Spearman's rank correlation of an uncertainty with a per-image error (1 - SSIM, the F1 loss
  1 - F1, N-MAE), positive when the uncertainty ranks the errors;
- :func:`vsgrid.stats.auroc`: does the OOD score tell a shifted test set's images from the
  model's in-distribution test images? 0.5 = not at all, 1 = every shifted image scores higher.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vsgrid.data.store import open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.stacks import Prediction, blocks, read_prediction
from vsgrid.files import write_table
from vsgrid.grid import seed_groups
from vsgrid.layout import Layout

# The per-image columns of a run's images table: what the model says of each image.
UNCERTAINTIES = ("tta", "dropout", "ood")


def image_trust(prediction: Prediction, *, block_images: int) -> dict[str, np.ndarray]:
    """Per image of a prediction, what its model says of it besides the TTA spread (which the
    scoring reads with the image), each only where the prediction carries it: ``dropout``, the
    mean over the field of each pixel's MC-dropout spread (counts), and ``ood``, the field's OOD
    score."""
    said = {}
    if prediction.dropout_spread is not None:
        spread = prediction.dropout_spread
        said["dropout"] = np.concatenate(
            [
                np.asarray(spread[start:stop], np.float64).mean((1, 2))
                for start, stop in blocks(spread.shape[0], block_images)
            ]
            or [np.empty(0)]
        )
    if prediction.ood is not None:
        said["ood"] = np.asarray(prediction.ood, np.float64)
    return said


def seed_spread(predictions: list[Prediction], *, block_images: int) -> np.ndarray:
    """Per image, the mean over the field of each pixel's standard deviation (ddof 1) over the
    ``predictions`` of one test set by one model type's seeds (two or more), in counts."""
    if len(predictions) < 2:
        raise VsgridError(
            f"a spread over seeds needs 2 predictions or more, got {len(predictions)}"
        )
    n = predictions[0].image.shape[0]
    per_block = []
    for start, stop in blocks(n, block_images):
        stack = np.stack([np.asarray(p.image[start:stop], np.float64) for p in predictions])
        per_block.append(stack.std(0, ddof=1).mean((1, 2)))
    return np.concatenate(per_block or [np.empty(0)])


def write_seed_spread(config: dict, model_type: str, test_set: str, out) -> np.ndarray:
    """``vsgrid seed-spread``: the spread over seeds of a model type's predictions of a test set,
    one row per test image (``image``, ``seeds``), to ``out``."""
    group = seed_groups(config).get((model_type, test_set))
    if group is None:
        raise VsgridError(
            f"{model_type} on {test_set} is not a run of the grid with two seeds or more"
        )
    layout = Layout.of(config)
    store = open_store(layout.store(group[0].test_set))
    predictions = [
        read_prediction(
            layout.prediction(run.model, run.test_set), store, run.model.stain, run.model.name
        )
        for run in group
    ]
    spread = seed_spread(predictions, block_images=config["evaluation"]["block_images"])
    write_table(pd.DataFrame({"image": np.arange(len(spread)), "seeds": spread}), out)
    return spread
