"""vsgrid's radial distribution against cp_measure's.

The same NumPy and SciPy steps on the same arrays, histograms summed in the same order and the
masked arithmetic written out, so the results are equal bit for bit (NaN where cp_measure has NaN),
not to a tolerance.
"""

import numpy as np
import pytest
from cp_measure._sanitize import sanitize
from cp_measure.core.measureobjectintensitydistribution import (
    get_radial_distribution as cp_measure_radial_distribution,
)

from vsgrid.data.store import U16_MAX, open_store
from vsgrid.evaluation.radial import get_radial_distribution


def assert_cp_measures(masks, pixels, **options):
    expected = sanitize(cp_measure_radial_distribution)(masks, pixels, **options)
    found = sanitize(get_radial_distribution)(masks, pixels, **options)
    assert list(found) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name], err_msg=name)


@pytest.fixture(scope="module")
def cells(quick_stores):
    store = open_store(quick_stores["ovarian-toxic"])
    images, masks = store.images("test")[:8], store.masks("test")[:8]
    return [
        (image.astype(np.float64) / U16_MAX, mask.astype(np.int32))
        for field, labels in zip(images, masks)
        for image in field[1:]
        for mask in labels
    ]


@pytest.mark.parametrize("bin_count", [4, 1, 7])
def test_the_rings_of_real_cells_are_cp_measures(cells, bin_count):
    for image, masks in cells:
        assert_cp_measures(masks, image, bin_count=bin_count)


def test_touching_tied_and_dark_objects_are_cp_measures():
    """Squares of even width (tied centres), objects that touch (several colours), one-pixel
    objects, a field without signal (every ring's mean 0), and labels with gaps."""
    rng = np.random.default_rng(3)
    masks = np.zeros((40, 40), np.int32)
    masks[2:8, 2:8], masks[2:8, 8:14], masks[8:12, 2:14] = 1, 2, 3
    masks[20, 20], masks[30:38, 25:39] = 4, 9
    image = rng.random(masks.shape)
    for pixels in (image, np.zeros_like(image), np.round(image * 3) / 3):
        assert_cp_measures(masks, pixels)


def test_fields_without_cells_unscaled_bins_and_volumes_are_cp_measures():
    rng = np.random.default_rng(1)
    masks = np.zeros((30, 30), np.int32)
    masks[5:15, 5:12] = 1
    assert_cp_measures(np.zeros((30, 30), np.int32), rng.random((30, 30)))
    assert_cp_measures(masks, rng.random((30, 30)), scaled=False, maximum_radius=6)
    assert get_radial_distribution(np.ones((3, 8, 8), np.int32), rng.random((3, 8, 8))) == {}
