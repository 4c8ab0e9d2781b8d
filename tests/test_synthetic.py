import numpy as np
import pytest
from scipy import ndimage as ndi

from vsgrid.config import validate
from vsgrid.data import synthetic
from vsgrid.data.store import CHANNELS, open_store
from vsgrid.data.summary import image_flag, summarize
from vsgrid.data.synthetic import Profile, render_field, sample_cells, synthesize
from vsgrid.errors import VsgridError
from vsgrid.seeds import rng_for

LUNG = Profile(600, 13, 5.5, 1.3, 0.3)


def tiny_config(seed=0, **synthetic_overrides):
    return validate(
        {
            "grid": {"cell_types": ["lung"], "phenotypes": ["toxic"], "seeds": [0]},
            "data": {
                "seed": seed,
                "splits": {"train": 4, "val": 2, "test": 3},
                "test_plates": 1,
                "synthetic": {
                    "plates_per_cell_type": 2,
                    "fields_per_well": 1,
                    "field_size": 64,
                    "pixel_size_um": 1.3,
                    **synthetic_overrides,
                },
            },
        }
    )


def render(seed, toxicity=0.5, shape=(96, 96)):
    rng = rng_for(seed, "test")
    cells = sample_cells(rng, LUNG, toxicity, shape, 1.0)
    return cells, *render_field(cells, shape, 1.0, rng)


def test_render_shapes_dtypes_and_label_consistency():
    cells, image, masks = render(1)
    assert image.shape == (4, 96, 96) and image.dtype == np.uint16
    assert masks.shape == (2, 96, 96) and masks.dtype == np.uint16
    nuclei, cell_labels = masks
    assert nuclei.max() > 0
    # A nucleus lies inside its own cell, and cell labels are 1..n without gaps.
    assert np.array_equal(nuclei[nuclei > 0], cell_labels[nuclei > 0])
    assert np.array_equal(np.unique(cell_labels), np.arange(cell_labels.max() + 1))
    # DAPI is bright inside nuclei and dark outside cells.
    dapi = image[CHANNELS.index("dapi")].astype(float)
    assert dapi[nuclei > 0].mean() > 5 * dapi[cell_labels == 0].mean()


def test_empty_field_renders():
    rng = rng_for(0, "empty")
    cells = sample_cells(rng, Profile(1e-9, 10, 5), 0.0, (32, 32), 1.0)
    image, masks = render_field(cells, (32, 32), 1.0, rng)
    assert len(cells["centre"]) == 0 and masks.max() == 0 and image.shape == (4, 32, 32)


def test_same_seed_gives_byte_identical_stores_and_another_seed_differs(tmp_path):
    first = synthesize(tiny_config(seed=3), tmp_path / "a", workers=1, progress=False)[0]
    again = synthesize(tiny_config(seed=3), tmp_path / "b", workers=2, progress=False)[0]
    other = synthesize(tiny_config(seed=4), tmp_path / "c", workers=1, progress=False)[0]
    a, b, c = (open_store(p) for p in (first, again, other))
    for split in ("train", "val", "test"):
        assert a.images(split)[:].tobytes() == b.images(split)[:].tobytes()
        assert a.masks(split)[:].tobytes() == b.masks(split)[:].tobytes()
        assert not np.array_equal(a.images(split)[:], c.images(split)[:])
    assert a.metadata.equals(b.metadata)


def test_store_layout(quick_stores, quick_config):
    store = open_store(quick_stores["ovarian-toxic"])
    size = quick_config["data"]["synthetic"]["field_size"]
    splits = quick_config["data"]["splits"]
    for split in ("train", "val", "test"):
        images = store.images(split)
        assert images.shape == (splits[split], 4, size, size) and images.dtype == np.uint16
        assert images.chunks == (1, 1, size, size) and images.array.shards == (
            1,
            4,
            size,
            size,
        )  # one file per field, one chunk per channel
        assert store.masks(split).shape == (splits[split], 2, size, size)
        meta = store.split_metadata(split)
        assert len(meta) == splits[split] and (meta["phenotype"] == "toxic").all()
    assert store.attrs["channels"] == ["bf", "dapi", "fitc", "cy5"]
    assert (
        store.attrs["pixel_size_um"] == 1.3 and store.attrs["provenance"]["source"] == "synthetic"
    )
    assert len(store.store_id) == 32


def grid_stores(quick_stores):
    """The stores of the grid's data sets, without its controls (a control has test images only)."""
    return {name: path for name, path in quick_stores.items() if "+" not in name}


def test_test_images_come_only_from_held_out_plates(quick_stores):
    for name, path in quick_stores.items():
        meta = open_store(path).metadata
        test_plates = set(meta.loc[meta["split"] == "test", "plate"])
        train_plates = set(meta.loc[meta["split"] != "test", "plate"])
        assert test_plates and not test_plates & train_plates
        assert bool(train_plates) == (name in grid_stores(quick_stores)), name
        keys = meta[["plate", "well", "field"]].astype(str).agg("/".join, axis=1)
        assert keys.is_unique


def test_phenotype_labels_follow_the_paper_rule(quick_stores):
    meta = open_store(quick_stores["lung-nontoxic"]).metadata
    assert set(meta["compound"]) <= {"DMSO"} | {f"CPD-{k:02d}" for k in range(1, 11)}
    assert meta.loc[meta["compound"] != "DMSO", "concentration"].max() <= 0.1
    toxic = open_store(quick_stores["lung-toxic"]).metadata
    assert "DMSO" not in set(toxic["compound"])
    assert toxic.loc[toxic["compound"].str.startswith("CPD"), "concentration"].min() >= 0.3


@pytest.fixture(scope="module")
def summary(quick_stores):
    return summarize(grid_stores(quick_stores).values()).set_index(["cell_type", "phenotype"])


def test_cell_density_breast_below_half_ovarian_and_about_a_third_of_lung(summary):
    cells = summary.xs("nontoxic", level="phenotype")["cells_per_field"]
    assert cells["breast"] < cells["ovarian"] < cells["lung"]
    assert cells["breast"] < 0.5 * cells["ovarian"]
    assert 0.2 < cells["breast"] / cells["lung"] < 0.45


def test_toxic_fields_have_more_foci_and_smaller_brighter_nuclei(summary):
    for cell_type in ("lung", "ovarian", "breast"):
        nontoxic, toxic = summary.loc[(cell_type, "nontoxic")], summary.loc[(cell_type, "toxic")]
        assert toxic["cy5_foci_per_nucleus"] > 2 * nontoxic["cy5_foci_per_nucleus"]
        assert toxic["nucleus_area_um2"] < nontoxic["nucleus_area_um2"]
        assert toxic["nucleus_dapi"] > nontoxic["nucleus_dapi"]
        assert toxic["cells_per_field"] < nontoxic["cells_per_field"]


def test_bright_field_is_not_a_linear_copy_of_any_stain(summary):
    for stain in ("dapi", "fitc", "cy5"):
        assert (summary[f"r2_bf_{stain}"] < 0.25).all(), summary[f"r2_bf_{stain}"]


def test_failed_build_keeps_the_earlier_store(tmp_path, monkeypatch):
    config = tiny_config()
    path = synthesize(config, tmp_path, workers=1, progress=False)[0]
    before = open_store(path).images("train")[:]
    calls = {"n": 0}
    real = synthetic.render_field

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_field", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize(tiny_config(seed=9), tmp_path, workers=1, progress=False)
    assert np.array_equal(open_store(path).images("train")[:], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lung-toxic.zarr"]


def test_asking_for_more_images_than_the_plates_hold_names_the_key(tmp_path):
    config = tiny_config()
    config["data"]["splits"]["test"] = 10_000
    with pytest.raises(
        VsgridError,
        match=r"lung-toxic: data.splits.test asks for 10000 images but the held-out test plates have only \d+",
    ):
        synthesize(config, tmp_path, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_blank_and_saturated_images_are_flagged():
    noisy = np.random.default_rng(0).integers(100, 4000, (32, 32)).astype(np.uint16)
    thresholds = {"blank_range": 16, "saturated_fraction": 0.01}
    assert image_flag(noisy, 65535, **thresholds) == ""
    assert image_flag(np.full((32, 32), 7, np.uint16), 65535, **thresholds) == "blank"
    clipped = noisy.copy()
    clipped[:4] = 65535
    assert image_flag(clipped, 65535, **thresholds) == "saturated"
    assert (
        image_flag(np.minimum(noisy, 255), 255, **thresholds) == "saturated"
    )  # an 8-bit camera's top


def test_a_nucleus_fragment_outside_the_field_renders():
    """lung-P01 F04 field 5 of the paper config (seed 0) has a fragment of a nucleus above the
    field: its render window once ended at a negative index and wrapped around."""
    config = validate({})
    row = (
        synthetic.field_table("lung", config)
        .query("plate == 'lung-P01' and well == 'F04' and field == 5")
        .iloc[0]
    )
    rng = rng_for(0, "field", "lung", row.plate, row.well, int(row.field))
    profile = Profile(**config["data"]["synthetic"]["cell_types"]["lung"])
    cells = sample_cells(rng, profile, row.toxicity, (1080, 1080), 0.65)
    image, masks = render_field(cells, (1080, 1080), 0.65, rng)
    assert image.shape == (4, 1080, 1080) and masks[0].max() > 0


def test_a_control_renders_its_twins_test_fields_with_other_bright_field_only(tmp_path):
    config = tiny_config()
    config["grid"]["controls"] = [{"test_set": "lung-toxic", "acquisition": "defocus"}]
    twin, control = (open_store(p) for p in synthesize(config, tmp_path, workers=1, progress=False))
    assert (
        control.attrs["data_set"] == "lung-toxic+defocus" and control.images("train").shape[0] == 0
    )
    original, reacquired = twin.images("test")[:], control.images("test")[:]
    assert np.array_equal(original[:, 1:], reacquired[:, 1:])  # the same stains, byte for byte

    # Out of focus: fine structure (the Laplacian, with the shot noise smoothed away) fades.
    def structure(stack):
        return np.mean(
            [np.var(ndi.laplace(ndi.gaussian_filter(bf.astype(float), 1))) for bf in stack]
        )

    assert structure(reacquired[:, 0]) < 0.5 * structure(original[:, 0])
    assert twin.split_metadata("test")[["plate", "well", "field"]].equals(
        control.split_metadata("test")[["plate", "well", "field"]]
    )
