import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.measure import label

from vsgrid.data.store import open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.metrics import instance_scores
from vsgrid.evaluation.peaks import component_peaks
from vsgrid.evaluation.segment import (
    NUMBA_SEEDS_IMAGES,
    classical_labels,
    gamma_correct,
    load_cellpose,
    segmenter,
)


def test_gamma_correction_brightens_dim_pixels():
    image = np.array([0, 655, 6553, 65535], np.uint16)
    corrected = gamma_correct(image, 0.3)
    assert corrected[0] == 0 and corrected[-1] == pytest.approx(1.0)
    assert corrected[1] == pytest.approx(0.01**0.3, rel=1e-3)


def test_classical_backend_finds_the_synthetic_nuclei(quick_config, quick_stores):
    store = open_store(quick_stores["lung-nontoxic"])
    images, truth = store.images("test")[:, 1], store.masks("test")[:, 0].astype(np.int32)
    segment = segmenter({**quick_config["segmentation"], "backend": "classical"}, "dapi", 1.3)
    labels = segment(images)
    assert labels.shape == images.shape and labels.dtype == np.int32
    f1 = np.mean([instance_scores(t, p)["f1"] for t, p in zip(truth, labels)])
    assert f1 > 0.85


def test_the_watershed_seeds_are_scikit_images_peaks_in_its_order():
    """Smooth blobs, fields all foreground (minimum above 0), specks (one-pixel components whose
    every pixel is a candidate), rounded distances (plateaus), every spacing the classical backend
    uses: the same coordinates in the same order, which number the watershed's markers."""
    rng = np.random.default_rng(0)
    for k in range(1500):
        shape = tuple(rng.integers(1, 40, 2))
        foreground = ndi.gaussian_filter(rng.random(shape), rng.uniform(0.5, 3)) > rng.uniform(
            0.3, 0.6
        )
        foreground |= (k % 7 == 0) | ((k % 5 == 0) & (rng.random(shape) > 0.95))
        distance = ndi.distance_transform_edt(foreground)
        distance = np.round(distance) if k % 3 == 0 else distance
        components, spacing = label(foreground), int(rng.integers(1, 6))
        np.testing.assert_array_equal(
            component_peaks(distance, components, spacing),
            peak_local_max(distance, min_distance=spacing, labels=components, exclude_border=False),
        )


def test_a_job_of_many_images_finds_the_same_nuclei_with_numba_seeds(quick_config, quick_stores):
    images = open_store(quick_stores["lung-nontoxic"]).images("test")[:, 1]
    settings = {**quick_config["segmentation"], "backend": "classical"}
    small, large = (segmenter(settings, "dapi", 1.3, images=n) for n in (16, NUMBA_SEEDS_IMAGES))
    assert (small.numba, large.numba) == (False, True)
    np.testing.assert_array_equal(large(images), small(images))


def test_classical_backend_on_an_empty_image():
    assert classical_labels(np.full((32, 32), 100, np.uint16), 10).max() == 0


def test_a_field_of_background_noise_has_no_objects_but_a_dim_nucleus_stays(quick_config):
    """Otsu splits any image in two; the noise floor on raw counts drops what it splits out of
    noise (a field without cells gave hundreds of objects) and keeps an object a few hundred counts
    above a background of 300 with shot noise (SD about 23 counts)."""
    rng = np.random.default_rng(0)
    noise = rng.normal(300, 23, (2, 96, 96))
    yy, xx = np.mgrid[:96, :96]
    noise[1] += 400 * (((yy - 40) ** 2 + (xx - 50) ** 2) < 25)  # a dim fragment, radius 5 pixels
    segment = segmenter({**quick_config["segmentation"], "backend": "classical"}, "dapi", 1.3)
    empty, fragment = segment(np.clip(noise, 0, 65535).astype(np.uint16))
    assert (
        classical_labels(gamma_correct(noise[0].astype(np.uint16), 0.3), 8.5).max() > 20
    )  # what the floor is for
    assert empty.max() == 0
    assert fragment.max() == 1 and fragment[40, 50] == 1


def test_cy5_is_not_segmented(quick_config):
    with pytest.raises(VsgridError, match="cy5 is measured in the DAPI nuclei"):
        segmenter(quick_config["segmentation"], "cy5", 1.3)


def test_builtin_cellpose_weights_missing_offline_say_how_to_get_them(tmp_path, monkeypatch):
    from cellpose import models

    monkeypatch.setattr(models, "MODEL_DIR", tmp_path)
    with pytest.raises(VsgridError, match="CELLPOSE_LOCAL_MODELS_PATH") as error:
        load_cellpose("nuclei", gpu=False)
    assert "nucleitorch_0" in str(error.value) and "vsgrid train-cellpose" in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded


def test_unknown_cellpose_model():
    with pytest.raises(VsgridError, match="neither an existing file nor a built-in model name"):
        load_cellpose("/nowhere/weights", gpu=False)


@pytest.mark.slow
def test_train_cellpose_from_scratch_on_ground_truth(quick_config, quick_stores, tmp_path):
    """One epoch on CPU: the pipeline end to end (weights written atomically, loadable, scored).
    The full run (README) reaches F1 0.99 at IoU 0.7 after 10 epochs."""
    from vsgrid.evaluation.cellpose_train import train_cellpose

    config = {
        **quick_config,
        "data": {**quick_config["data"], "dir": str(quick_stores["breast-nontoxic"].parent)},
    }
    report = train_cellpose(
        config,
        "breast-nontoxic",
        "dapi",
        tmp_path / "nuclei.cp",
        epochs=1,
        learning_rate=0.05,
        batch_size=8,
    )
    assert (tmp_path / "nuclei.cp").is_file() and (tmp_path / "nuclei.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert 0 <= report["f1_cellpose"] <= 1 and report["f1_classical"] > 0.8
    segment = segmenter(
        {
            **quick_config["segmentation"],
            "backend": "cellpose",
            "cellpose": {"models": {"dapi": str(tmp_path / "nuclei.cp")}, "batch_size": 8},
        },
        "dapi",
        1.3,
    )
    labels = segment(open_store(quick_stores["breast-nontoxic"]).images("test")[:4, 1])
    assert labels.shape == (4, 128, 128) and labels.dtype == np.int32
