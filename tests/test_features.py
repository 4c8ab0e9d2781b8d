import numpy as np
import pandas as pd
import pytest
from cp_measure.bulk import get_core_measurements

from vsgrid.data.store import open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.features import (
    PREFIX,
    FeatureSet,
    check_feature_names,
    feature_names,
    measure,
    measure_stack,
    worker_pool,
)


@pytest.fixture(scope="module")
def field(quick_stores):
    store = open_store(quick_stores["lung-nontoxic"])
    return store.images("test")[3][1], store.masks("test")[3][0].astype(np.int32)


def test_one_row_per_instance_and_about_two_hundred_cellprofiler_features(field):
    image, masks = field
    table = measure(image, masks)
    assert list(table["label"]) == sorted(np.unique(masks[masks > 0]))
    features = [c for c in table.columns if c != "label"]
    assert 190 <= len(features) <= 230
    for name in (
        "AreaShape_Area",
        "AreaShape_Eccentricity",
        "Intensity_MeanIntensity",
        "Texture_Contrast_3_00_256",
        "RadialDistribution_FracAtD_1of4",
        "Granularity_2",
        "AreaShape_Zernike_2_2",
        "AreaShape_MaxFeretDiameter",
    ):
        assert name in features


def test_auto_takes_numba_for_a_job_of_many_images_only():
    settings = {
        "groups": ["texture"],
        "names": None,
        "accelerator": "auto",
        "conventions": "cellprofiler",
    }
    chosen = [FeatureSet.from_config(settings, images=n).accelerator for n in (16, 64, None)]
    assert chosen == [None, "numba", "numba"]  # an evaluate job, a screen's, one that cannot say


@pytest.mark.parametrize(
    "group, names",
    [
        ("sizeshape", ["Area", "Perimeter", "Solidity"]),
        (
            "intensity",
            ["Intensity_MeanIntensity", "Intensity_IntegratedIntensity", "Intensity_MADIntensity"],
        ),
        ("texture", ["Contrast_3_00_256", "Entropy_3_01_256"]),
        ("radial_distribution", ["RadialDistribution_MeanFrac_2of4"]),
        ("granularity", ["Granularity_1", "Granularity_5"]),
        ("zernike", ["Zernike_3_1"]),
        ("feret", ["MinFeretDiameter"]),
    ],
)
def test_values_agree_with_cp_measure_called_directly(field, group, names):
    image, masks = field
    ours = measure(
        image, masks, accelerator=None, conventions="cp_measure"
    )  # cp_measure's own defaults, as called directly
    direct = get_core_measurements()[group](masks, image.astype(np.float64) / 65535)
    for name in names:
        np.testing.assert_allclose(ours[PREFIX[group] + name], direct[name], equal_nan=True)


def test_images_without_instances_give_an_empty_table(field):
    image, masks = field
    table = measure(image, np.zeros_like(masks), names=["AreaShape_Area"])
    assert list(table.columns) == ["label", "AreaShape_Area"] and len(table) == 0


def test_unknown_feature_name_is_refused_with_a_suggestion():
    with pytest.raises(
        VsgridError, match="'AreaShape_Areaa' is not a feature .*did you mean AreaShape_Area"
    ):
        check_feature_names(["AreaShape_Areaa"], ("sizeshape",))
    assert "Granularity_1" in feature_names(("granularity",))


def test_float_masks_are_refused(field):
    image, masks = field
    with pytest.raises(VsgridError, match="integer label image"):
        measure(image, masks.astype(np.float32))


def test_processes_give_the_same_table(quick_stores):
    store = open_store(quick_stores["ovarian-toxic"])
    images, masks = store.images("test")[:6, 1], store.masks("test")[:6, 0].astype(np.int32)
    features = FeatureSet(
        ("sizeshape", "intensity", "texture"),
        ("AreaShape_Area", "Intensity_MeanIntensity", "Texture_Contrast_3_00_256"),
    )
    serial = measure_stack(images, masks, features)
    with worker_pool(2) as pmap:
        parallel = measure_stack(images, masks, features, pmap)
    pd.testing.assert_frame_equal(serial, parallel)
    assert list(serial.columns[:2]) == ["image", "label"] and set(serial["image"]) <= set(range(6))


def test_the_numba_backend_gives_the_same_features(field):
    """cp_measure's numba kernels (intensity, texture, Feret) and vsgrid's granularity against
    cp_measure's NumPy ones: equal to 1e-9 relative (the kernels sum in another order), NaN where
    NaN."""
    image, masks = field
    fast, plain = (
        measure(image, masks, accelerator="numba"),
        measure(image, masks, accelerator=None),
    )
    assert list(fast.columns) == list(plain.columns)
    np.testing.assert_allclose(
        fast.to_numpy(), plain.to_numpy(), rtol=1e-9, atol=1e-12, equal_nan=True
    )


def test_a_feature_list_measures_only_the_groups_it_needs(field):
    features = FeatureSet.from_config(
        {
            "groups": list(PREFIX),
            "names": None,
            "accelerator": "numba",
            "conventions": "cellprofiler",
        },
        ["AreaShape_Area", "Granularity_2"],
    )
    assert features.groups == ("sizeshape", "granularity") and features.columns == [
        "AreaShape_Area",
        "Granularity_2",
    ]
    assert list(features.measure(*field).columns) == ["label", "AreaShape_Area", "Granularity_2"]


@pytest.mark.parametrize(
    "group, names",
    [
        ("granularity", ["Granularity_2", "Granularity_5"]),
        ("zernike", ["AreaShape_Zernike_2_0", "AreaShape_Zernike_6_6"]),
    ],
)
def test_stopping_at_the_largest_scale_or_degree_asked_for_changes_none_kept(field, group, names):
    """Granularity is computed scale by scale and Zernike moments degree by degree: stopping at
    the largest asked for (what a screen's selected features do) changes none of those it keeps,
    bit for bit."""
    image, masks = field
    whole = measure(image, masks, (group,))
    short = FeatureSet((group,), tuple(names))
    assert short._options(group) in ({"granular_spectrum_length": 5}, {"zernike_numbers": 6})
    np.testing.assert_array_equal(short.measure(image, masks)[names], whole[names])


def test_shape_from_moments_alone_skips_regionprops_and_keeps_every_value(field, monkeypatch):
    """A feature list whose AreaShape names are all moments' (a screen's selected features, say)
    is measured by cp_measure's moment primitives, which get_sizeshape itself calls: the same
    values bit for bit (the same functions on the same labels), with regionprops never run."""
    import skimage.measure

    image, masks = field
    names = ["AreaShape_MajorAxisLength", "AreaShape_CentralMoment_1_2", "Intensity_MeanIntensity"]
    whole = measure(image, masks, ("sizeshape", "intensity"))
    monkeypatch.setattr(skimage.measure, "regionprops_table", None)  # called, it would fail
    short = FeatureSet.of(("sizeshape", "intensity"), names)
    np.testing.assert_array_equal(short.measure(image, masks)[names], whole[names])
    with pytest.raises(TypeError):  # one name beyond the moments: get_sizeshape, regionprops
        FeatureSet.of(("sizeshape",), ["AreaShape_Solidity", *names[:1]]).measure(image, masks)


def single_object(values, shape=(6, 6)):
    """One object whose pixels hold ``values`` (counts), on a zero background."""
    image, masks = np.zeros(shape, np.uint16), np.zeros(shape, np.int32)
    flat = np.ravel_multi_index(
        np.unravel_index(np.arange(len(values)), (2, len(values) // 2)), shape
    )
    image.flat[flat], masks.flat[flat] = values, 1
    return image, masks


@pytest.mark.parametrize("accelerator", ["numba", None])
def test_quartiles_median_and_mad_follow_cellprofilers_rule(accelerator):
    """Values 1000 ... 8000 counts (n = 8). CellProfiler takes the value at position n q
    (interpolated): quartiles 3000 and 7000, median 5000; MAD the median of |x - 5000| at n / 2: 2000.
    numpy's (n - 1) q gives 2750, 4500 and 6250, and MAD 2000."""
    image, masks = single_object(np.arange(1, 9) * 1000)
    names = [
        "Intensity_LowerQuartileIntensity",
        "Intensity_MedianIntensity",
        "Intensity_UpperQuartileIntensity",
        "Intensity_MADIntensity",
    ]
    cellprofiler = measure(image, masks, ("intensity",), names, accelerator)[names].iloc[0] * 65535
    np.testing.assert_allclose(cellprofiler, [3000, 5000, 7000, 2000], rtol=1e-9)
    numpy_rule = (
        measure(image, masks, ("intensity",), names, accelerator, conventions="cp_measure")[
            names
        ].iloc[0]
        * 65535
    )
    np.testing.assert_allclose(numpy_rule, [2750, 4500, 6250, 2000], rtol=1e-9)


@pytest.mark.parametrize("accelerator", ["numba", None])
def test_texture_that_cannot_be_computed_is_zero_as_cellprofiler_records_it(accelerator):
    """A 2 x 2 object has no pixel pairs at Haralick's offset of 3: CellProfiler records 0."""
    image, masks = single_object([9000, 9100, 9050, 9200], shape=(8, 8))
    texture = measure(image, masks, ("texture",), accelerator=accelerator)
    assert len(texture) == 1 and (texture.drop(columns="label").to_numpy() == 0).all()
    raw = measure(image, masks, ("texture",), accelerator=accelerator, conventions="cp_measure")
    assert np.isnan(raw.drop(columns="label").to_numpy()).all()


def test_a_dim_image_has_no_nan_texture(field):
    """On a dim 16-bit image (maximum 235 counts, one grey level at 8 bits) cp_measure leaves
    texture NaN; by CellProfiler's conventions none is."""
    image, masks = field
    dim = (image.astype(np.float64) / image.max() * 235).astype(np.uint16)
    assert measure(dim, masks, ("texture",)).drop(columns="label").isna().to_numpy().mean() == 0
    assert (
        measure(dim, masks, ("texture",), conventions="cp_measure")
        .drop(columns="label")
        .isna()
        .to_numpy()
        .mean()
        > 0.2
    )


def test_only_cellprofiler_4_names_by_default():
    assert not {"AreaShape_FilledArea", "AreaShape_PerimeterCrofton"} & set(
        feature_names(("sizeshape",))
    )
    assert {"AreaShape_FilledArea", "AreaShape_PerimeterCrofton"} <= set(
        feature_names(("sizeshape",), "cp_measure")
    )


def test_the_features_that_read_pixels_leave_out_those_of_the_masks_alone():
    """A TTA sample is measured in the prediction's masks: only what reads its pixels differs."""
    names = ("AreaShape_Area", "AreaShape_Zernike_2_0", "Intensity_MeanIntensity")
    pixels = FeatureSet.of(names=names).reading_pixels()
    assert pixels.names == ("Intensity_MeanIntensity",) and pixels.groups == ("intensity",)
    assert FeatureSet.of(names=names[:2]).reading_pixels() is None
    rng = np.random.default_rng(0)
    masks = np.zeros((32, 32), np.int32)
    masks[4:14, 4:14], masks[18:28, 16:30] = 1, 2
    image = rng.integers(100, 60000, (32, 32)).astype(np.uint16)
    both = FeatureSet.of(names=names).measure(image, masks)
    pd.testing.assert_frame_equal(
        pixels.measure(image, masks), both[["label", "Intensity_MeanIntensity"]]
    )
