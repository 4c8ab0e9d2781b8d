"""The grid's bootstrap resamples of a test set's images, over its store's test split.

Every run on a test set's images (the test set's and its controls', which re-acquire it: their
*twin*) is resampled by the same draws, :func:`vsgrid.stats.bootstrap_weights` over the twin's
test split: wells (or plates, ``evaluation.ci_unit``), then their fields, with
``evaluation.ci: hierarchical``; images alone with ``images``. The stream is named by the twin,
so the deltas (:mod:`vsgrid.report.tables`), the trust table (:mod:`vsgrid.report.trust`) and
``vsgrid ood`` (:mod:`vsgrid.evaluation.ood`) draw the same resamples of the same images.
"""

from __future__ import annotations

import numpy as np

from vsgrid.data.store import open_store
from vsgrid.grid import DataSet
from vsgrid.layout import Layout
from vsgrid.seeds import rng_for
from vsgrid.stats import bootstrap_weights


def resampling_weights(config: dict, twin: DataSet, n_resamples: int) -> np.ndarray:
    """The resampling weights of a test set's images, shared by every run on them:
    (n_resamples, test images), in the order of the store's test split."""
    settings = config["evaluation"]
    rng = rng_for(settings["seed"], "bootstrap", twin.name)
    metadata = open_store(Layout.of(config).store(twin)).split_metadata("test")
    units = metadata["plate"].astype(str) + (
        "/" + metadata["well"].astype(str) if settings["ci_unit"] == "well" else ""
    )
    return bootstrap_weights(
        units.to_numpy(), n_resamples, rng, nested=settings["ci"] == "hierarchical"
    )


def trust_weights(config: dict, twin: DataSet) -> np.ndarray:
    """The resamples every trust CI draws (an uncertainty's Spearman, an OOD AUROC): the first
    ``evaluation.trust_resamples`` of the deltas' :func:`resampling_weights`, so that a trust CI
    over 200 draws is the one a grid of 200 bootstrap resamples would give."""
    settings = config["evaluation"]
    kept = min(settings["trust_resamples"], settings["bootstrap_resamples"])
    return resampling_weights(config, twin, settings["bootstrap_resamples"])[:kept]
