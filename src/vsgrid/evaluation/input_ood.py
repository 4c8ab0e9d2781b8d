"""The OOD score's no-model baseline: how far a test field's bright-field image lies from the
train set's training fields by the image's own statistics, with no model at all.

A model's OOD score (:mod:`vsgrid.model.uncertainty`) earns its place only where it finds shifts
better than this. The statistics are the field's texture at the scales of nuclei and cells:
the mean and SD of the gradient magnitude and of the Laplacian of Gaussian of log(1 + counts) at
1, 2 and 4 pixels of about :data:`PIXEL_UM` (fields of smaller pixels are binned by a whole factor
first, which keeps the scales and the cost of a paper field, 1080 x 1080 at 0.65 um, at a quarter):
12 numbers a field. Intensity quantiles are left out: they follow each plate's illumination more
than its cells. The distance is the model's score's own, the Mahalanobis distance with Ledoit-Wolf
shrinkage to (up to ``infer.ood_train_fields`` of) the training split.

``vsgrid bf-texture`` writes a data set's statistics once (its test split's every field, and its
training split's fields a reference reads), a job per data set; the trust table reads them.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from vsgrid.data.store import open_store
from vsgrid.files import read_table, write_table
from vsgrid.grid import DataSet
from vsgrid.layout import Layout
from vsgrid.model.reference import OodReference, evenly_spaced

log = logging.getLogger(__name__)

PIXEL_UM = 1.3  # the quick grid's pixels; the statistics' scales are 1.3, 2.6 and 5.2 um
SIGMAS = (1.0, 2.0, 4.0)
STATISTICS = [
    f"{name}_{sigma:g}"
    for sigma in SIGMAS
    for name in ("gradient_mean", "gradient_sd", "log_abs_mean", "log_sd")
]


def bf_statistics(counts: np.ndarray, *, bin_by: int = 1) -> np.ndarray:
    """The :data:`STATISTICS` of one bright-field field (H, W) of counts, binned ``bin_by`` x
    ``bin_by`` first."""
    image = np.asarray(counts, np.float64)
    if bin_by > 1:
        height, width = (side // bin_by * bin_by for side in image.shape)
        image = image[:height, :width].reshape(height // bin_by, bin_by, -1, bin_by).mean((1, 3))
    image = np.log1p(image)
    found = []
    for sigma in SIGMAS:
        gradient = ndi.gaussian_gradient_magnitude(image, sigma)
        laplacian = ndi.gaussian_laplace(image, sigma)
        found += [gradient.mean(), gradient.std(), np.abs(laplacian).mean(), laplacian.std()]
    return np.array(found)


def write_bf_texture(config: dict, data_set: str, out: str | Path, progress: bool = True) -> int:
    """``vsgrid bf-texture``: the statistics of every test field of a data set's store and of
    the training fields a reference reads (up to ``infer.ood_train_fields``, evenly spaced), one
    row per field (``split``, ``index``, :data:`STATISTICS`), to ``out``. Returns the rows."""
    from tqdm import tqdm

    store = open_store(Layout.of(config).store(data_set))
    bin_by = max(1, round(PIXEL_UM / float(store.attrs["pixel_size_um"])))
    bf, rows = store.channel_index("bf"), []
    for split, limit in (("train", config["infer"]["ood_train_fields"]), ("test", None)):
        images = store.images(split)
        picks = evenly_spaced(images.shape[0], limit)
        for i in tqdm(picks, desc=f"{data_set} {split}", disable=not progress, unit="field"):
            rows.append([split, int(i), *bf_statistics(images[int(i), bf], bin_by=bin_by)])
    write_table(pd.DataFrame(rows, columns=["split", "index", *STATISTICS]), out)
    log.info("wrote %s (%d fields)", out, len(rows))
    return len(rows)


class InputOod:
    """The baseline's scores of a grid's test sets, from their ``vsgrid bf-texture`` tables, each
    train set's reference fitted once and each (train set, test set)'s scores computed once: the
    trust table asks for them per run and again per kind of shift."""

    def __init__(self, config: dict):
        self.layout = Layout.of(config)
        self.reference = cache(self._reference)
        self.scores = cache(self._scores)

    def _statistics(self, data_set: DataSet, split: str) -> np.ndarray:
        table = read_table(self.layout.bf_texture(data_set))
        rows = table[table["split"] == split].sort_values("index")
        return rows[STATISTICS].to_numpy(np.float64)

    def _reference(self, train_set: DataSet) -> OodReference:
        return OodReference.fit(self._statistics(train_set, "train"))

    def _scores(self, train_set: DataSet, test_set: DataSet) -> np.ndarray:
        """Each test field's distance to ``train_set``'s training fields, in test split order."""
        return self.reference(train_set).score(self._statistics(test_set, "test"))
