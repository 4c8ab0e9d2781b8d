"""The OOD score's reference: a Mahalanobis distance to training fields' features, whatever the
features are (a generator's bottleneck, :mod:`vsgrid.model.uncertainty`; a field's BF texture,
:mod:`vsgrid.evaluation.input_ood`). NumPy and scikit-learn only: a job that scores features
without a generator does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf

from vsgrid.errors import VsgridError

# A feature that does not vary over the training fields (a dead channel) is not scaled up from 0.
_FLOOR = 1e-6


@dataclass(frozen=True)
class OodReference:
    """The training fields' features: their mean, scale and shrunk precision matrix."""

    mean: np.ndarray
    scale: np.ndarray
    precision: np.ndarray

    @classmethod
    def fit(cls, train_features: np.ndarray) -> OodReference:
        """Ledoit-Wolf on the features standardised over the training fields: its shrinkage
        target, a multiple of the identity, then treats every feature alike whatever its units."""
        features = np.asarray(train_features, np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise VsgridError(
                f"an OOD reference needs the features of 2 or more training fields, got {features.shape}"
            )
        mean, scale = features.mean(0), np.maximum(features.std(0), _FLOOR)
        estimator = LedoitWolf(assume_centered=True).fit((features - mean) / scale)
        return cls(mean, scale, estimator.precision_)

    def score(self, features: np.ndarray) -> np.ndarray:
        """The Mahalanobis distance of each row of ``features`` to the training fields."""
        centred = (np.asarray(features, np.float64) - self.mean) / self.scale
        squared = np.einsum("ij,jk,ik->i", centred, self.precision, centred)
        return np.sqrt(np.maximum(squared, 0.0))


def evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    """All of ``n`` fields, or ``limit`` of them evenly spaced (a split is ordered by plate)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).astype(int))
