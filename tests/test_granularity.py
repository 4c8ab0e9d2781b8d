"""vsgrid's granularity against cp_measure's and its kernels against scikit-image's.

Erosion and reconstruction only select values, and every other step calls the same NumPy and SciPy
functions on the same arrays in the same order, so the results are equal bit for bit, not to a
tolerance.
"""

import numpy as np
import pytest
import skimage.morphology
from cp_measure._sanitize import sanitize
from cp_measure.core.measuregranularity import get_granularity as cp_measure_granularity
from scipy import ndimage as ndi

from vsgrid.data.store import U16_MAX, open_store
from vsgrid.evaluation.granularity import erode_cross, get_granularity, reconstruct_cross

CROSS = skimage.morphology.disk(1)


def fields(rng, n):
    """Smooth random fields, some quantized to a few grey levels so that plateaus and ties occur."""
    for k in range(n):
        shape = tuple(rng.integers(2, 48, 2))
        image = ndi.gaussian_filter(rng.random(shape), rng.uniform(0, 3))
        yield np.round(image * 6) / 6 if k % 3 == 0 else image


def test_the_kernels_give_scikit_images_erosion_and_reconstruction():
    for image in fields(np.random.default_rng(0), 150):
        eroded = erode_cross(image)
        np.testing.assert_array_equal(eroded, skimage.morphology.erosion(image, CROSS))
        np.testing.assert_array_equal(
            reconstruct_cross(eroded, image),
            skimage.morphology.reconstruction(eroded, image, footprint=CROSS),
        )


@pytest.fixture(scope="module")
def cells(quick_stores):
    store = open_store(quick_stores["breast-toxic"])
    images, masks = store.images("test")[:6, 1], store.masks("test")[:6, 0]
    return [(i.astype(np.float64) / U16_MAX, m.astype(np.int32)) for i, m in zip(images, masks)]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"granular_spectrum_length": 4},
        {"subsample_size": 0.5, "image_sample_size": 0.5, "element_size": 5},
        {"subsample_size": 0.3, "image_sample_size": 0.2},
    ],
)
def test_the_spectrum_is_cp_measures(cells, options):
    ours, theirs = sanitize(get_granularity), sanitize(cp_measure_granularity)
    for image, masks in cells:
        expected = theirs(masks, image, **options)
        found = ours(masks, image, **options)
        assert list(found) == list(expected)
        for name in expected:
            np.testing.assert_array_equal(found[name], expected[name])


def test_fields_without_cells_too_small_or_in_3d_are_cp_measures():
    image = np.random.default_rng(1).random((40, 40))
    empty, tiny = np.zeros((40, 40), np.int32), np.ones((6, 6), np.int32)
    volume, labels = np.random.default_rng(2).random((3, 24, 24)), np.ones((3, 24, 24), np.int32)
    for masks, pixels in ((empty, image), (tiny, image[:6, :6]), (labels, volume)):
        expected = cp_measure_granularity(masks, pixels)
        found = get_granularity(masks, pixels)
        assert list(found) == list(expected)
        for name in expected:
            np.testing.assert_array_equal(found[name], expected[name])
