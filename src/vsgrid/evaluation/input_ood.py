"""The OOD score's no-model baseline: how far a test field's bright-field image lies from the
train set's training fields by the image's own statistics, with no model at all.

A model's OOD score (:mod:`vsgrid.model.uncertainty`) earns its place only where it finds shifts
better than this. The statistics are the field's texture at the scales of nuclei and cells:
the mean and SD of the gradient magnitude and of the Laplacian of Gaussian of log(1 + counts) at
1, 2 and 4 pixels (12 numbers). Intensity quantiles are left out: they follow each plate's
illumination more than its cells. The distance is the model's score's own, the Mahalanobis
distance with Ledoit-Wolf shrinkage to (up to ``infer.ood_train_fields`` of) the training split.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy import ndimage as ndi

from vsgrid.data.store import open_store
from vsgrid.grid import DataSet
from vsgrid.layout import Layout
from vsgrid.model.uncertainty import OodReference, evenly_spaced

SIGMAS_PX = (1.0, 2.0, 4.0)


def bf_statistics(counts: np.ndarray) -> np.ndarray:
    """The 12 texture statistics of one bright-field field (H, W) of counts."""
    image = np.log1p(np.asarray(counts, np.float64))
    found = []
    for sigma in SIGMAS_PX:
        gradient = ndi.gaussian_gradient_magnitude(image, sigma)
        laplacian = ndi.gaussian_laplace(image, sigma)
        found += [gradient.mean(), gradient.std(), np.abs(laplacian).mean(), laplacian.std()]
    return np.array(found)


class InputOod:
    """The baseline's scores of a grid's test sets, each train set's reference and each test
    set's statistics computed once."""

    def __init__(self, config: dict):
        self.layout = Layout.of(config)
        self.train_fields = config["infer"]["ood_train_fields"]
        self.statistics = cache(self._statistics)
        self.reference = cache(self._reference)

    def _statistics(self, data_set: DataSet, split: str) -> np.ndarray:
        store = open_store(self.layout.store(data_set))
        images, bf = store.images(split), store.channel_index("bf")
        picks = evenly_spaced(images.shape[0], self.train_fields if split == "train" else None)
        return np.stack([bf_statistics(images[int(i), bf]) for i in picks])

    def _reference(self, train_set: DataSet) -> OodReference:
        return OodReference.fit(self.statistics(train_set, "train"))

    def scores(self, train_set: DataSet, test_set: DataSet) -> np.ndarray:
        """Each test field's distance to ``train_set``'s training fields, in test split order."""
        return self.reference(train_set).score(self.statistics(test_set, "test"))
