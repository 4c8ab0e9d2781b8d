"""CellProfiler's radial intensity distribution for 2-D fields, cp_measure's algorithm in fewer passes.

cp_measure's ``get_radial_distribution`` colours the objects twice (once inside centrosome's
``distance_to_edge``), then builds ten sparse matrices and runs NumPy's masked ``std`` and
``mean`` once per ring: three quarters of its 6 ms on a 128 x 128 field with 15 nuclei is
overhead of that kind. Here the colouring is done once, every histogram is one ``bincount``
(which adds each ring's pixels in the order ``coo_matrix.toarray`` does), and the eight wedges'
coefficient of variation is computed for all rings at once with the masked arithmetic written out.
The values are cp_measure 0.3's bit for bit (``tests/test_radial.py`` compares the two). Unscaled
bins and anything but a 2-D field go to cp_measure.
"""

from __future__ import annotations

import centrosome.cpmorphology
import centrosome.propagate
import numpy as np
import scipy.ndimage
from cp_measure.core.measureobjectintensitydistribution import (
    _maximum_position_of_labels,
)
from cp_measure.core.measureobjectintensitydistribution import (
    get_radial_distribution as _cp_measure_radial_distribution,
)

WEDGES = 8


def _histogram(rows: np.ndarray, columns: np.ndarray, shape: tuple, weights=None) -> np.ndarray:
    """Sums of ``weights`` (counts without) at (row, column), dense: ``coo_matrix.toarray``'s values."""
    flat = np.bincount(rows * shape[1] + columns, weights, minlength=shape[0] * shape[1])
    return flat.astype(np.float64).reshape(shape)


def _radial_cv(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Coefficient of variation over the last axis of the wedges' mean intensities, wedges without
    pixels left out: ``np.ma.std(means, -1) / np.ma.mean(means, -1)`` as NumPy's masked arithmetic
    does it (masked entries summed as 0; a quotient masked by a zero mean keeps the numerator),
    and 0 where a ring has no pixel."""
    empty = counts == 0
    n = (~empty).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):  # rings without pixels, set to 0 below
        means = np.where(empty, 0.0, values / counts)
        mean = means.sum(-1) * 1.0 / n
        anomaly = np.where(empty, 0.0, means - mean[..., None])
        std = np.sqrt((anomaly * anomaly).sum(-1) / n)
        defined = np.abs(std) * np.finfo(np.float64).tiny < np.abs(mean)
        cv = np.where(defined, std / np.where(defined, mean, 1.0), std)
    return np.where(n == 0, 0.0, cv)


def _distances(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each pixel's distance to its object's edge and from its object's centre (the pixel farthest
    from the edge, the first in raster order where several tie), the centre's label as propagated
    to the pixel (0 where none reaches), and the centres' rows and columns."""
    colors = centrosome.cpmorphology.color_labels(labels)
    # Objects of one colour never touch, so one distance transform per colour measures each
    # object to its own edge (centrosome's distance_to_edge, with the colouring shared).
    d_to_edge = np.zeros(labels.shape)
    for color in range(1, int(colors.max()) + 1):
        mask = colors == color
        d_to_edge[mask] = scipy.ndimage.distance_transform_edt(mask)[mask]
    i, j = _maximum_position_of_labels(d_to_edge, labels, int(labels.max()))
    center_labels = np.zeros(labels.shape, int)
    center_labels[i, j] = labels[i, j]
    d_from_center = np.zeros(labels.shape)
    cl = np.zeros(labels.shape, int)
    for color in range(1, int(colors.max()) + 1):
        mask = colors == color
        l_, d = centrosome.propagate.propagate(np.zeros(labels.shape), center_labels, mask, 1)
        d_from_center[mask] = d[mask]
        cl[mask] = l_[mask]
    return d_to_edge, d_from_center, cl, i, j


def get_radial_distribution(
    labels: np.ndarray,
    pixels: np.ndarray,
    scaled: bool = True,
    bin_count: int = 4,
    maximum_radius: int = 100,
) -> dict[str, np.ndarray]:
    """``cp_measure.core.measureobjectintensitydistribution.get_radial_distribution``'s
    FracAtD, MeanFrac and RadialCV per ring of contiguous labels ``1..N``."""
    if labels.ndim != 2 or not scaled:
        return _cp_measure_radial_distribution(labels, pixels, scaled, bin_count, maximum_radius)
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    nobjects = int(labels.max())
    d_to_edge, d_from_center, cl, i, j = _distances(labels)
    good = cl > 0
    owner = cl[good] - 1
    good_labels = labels[good] - 1
    distance = d_from_center[good] / (d_from_center[good] + d_to_edge[good] + 0.001)
    bins = np.minimum((distance * bin_count).astype(int), bin_count)
    values = pixels[good]

    shape = (nobjects, bin_count + 1)
    histogram = _histogram(good_labels, bins, shape, values)
    fraction_at_distance = histogram / histogram.sum(1)[:, None]
    number = _histogram(good_labels, bins, shape)
    fraction_at_bin = number / number.sum(1)[:, None]
    mean_pixel_fraction = fraction_at_distance / (fraction_at_bin + np.finfo(float).eps)

    # Eight wedges about the centre: below it or not, right of it or not, steeper than 45 degrees
    # or not.
    rows, columns = np.nonzero(good)
    di, dj = rows - i[owner], columns - j[owner]
    wedge = (di > 0).astype(int) + (dj > 0) * 2 + (np.abs(di) > np.abs(dj)) * 4
    ring_wedge = bins * WEDGES + wedge
    cv_shape = (nobjects, (bin_count + 1) * WEDGES)
    by_ring = (nobjects, bin_count + 1, WEDGES)
    radial_cv = _radial_cv(
        _histogram(good_labels, ring_wedge, cv_shape, values).reshape(by_ring),
        _histogram(good_labels, ring_wedge, cv_shape).reshape(by_ring),
    )

    results = {}
    for ring in range(bin_count):
        scale = f"{ring + 1}of{bin_count}"
        results[f"RadialDistribution_FracAtD_{scale}"] = fraction_at_distance[:, ring]
        results[f"RadialDistribution_MeanFrac_{scale}"] = mean_pixel_fraction[:, ring]
        results[f"RadialDistribution_RadialCV_{scale}"] = radial_cv[:, ring]
    return results
