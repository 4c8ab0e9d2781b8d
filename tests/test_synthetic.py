import numpy as np
import pytest
from scipy import ndimage as ndi

from vsgrid.config import validate
from vsgrid.data import synthetic
from vsgrid.data.plates import INTENSITY_COLUMNS, mechanism, well_effects, well_position
from vsgrid.data.splits import sample_splits
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


def test_each_positive_control_acts_by_its_own_mechanism():
    """Staurosporine drives cells into apoptosis (condensed, fragmented), etoposide arrests them in
    G2 with damaged DNA (nuclei about 1.3 times wider, brighter in DAPI): both visible in DAPI."""
    drawn = {
        compound: sample_cells(
            rng_for(0, "mechanism", compound),
            LUNG,
            1.0,
            (512, 512),
            1.0,
            states=mechanism(compound),
        )
        for compound in ("etoposide", "staurosporine")
    }
    apoptotic = np.isin(
        drawn["staurosporine"]["state"], [synthetic.CONDENSED, synthetic.FRAGMENTED]
    )
    assert apoptotic.all()
    etoposide = drawn["etoposide"]
    damaged = etoposide["state"] == synthetic.DAMAGED
    assert damaged.mean() > 0.75
    healthy = sample_cells(rng_for(0, "mechanism", "DMSO"), LUNG, 0.0, (512, 512), 1.0)
    ratio = np.median(etoposide["nucleus_major"][damaged]) / np.median(healthy["nucleus_major"])
    assert ratio == pytest.approx(1.3, abs=0.1)  # medians of ~100 lognormal draws (SD 0.15)
    assert np.median(etoposide["dapi"][damaged]) > 1.1 * np.median(healthy["dapi"])


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


def test_the_summary_names_each_store_and_measures_a_controls_test_fields(quick_stores, summary):
    """A control holds test fields only: its row says which data set it is and measures those,
    instead of passing for its twin with NaN from an empty training split."""
    controls = {
        name: path for name, path in quick_stores.items() if name not in grid_stores(quick_stores)
    }
    control = summarize(controls.values()).set_index("data_set").loc["lung-nontoxic+defocus"]
    assert control["n_train"] == 0 and control["n_test"] > 0
    assert np.isfinite(control[["cells_per_field", "nucleus_dapi"]].astype(float)).all()
    # defocus blurs bright field: it explains less of DAPI than in focus
    assert control["r2_bf_dapi"] < summary.loc[("lung", "nontoxic"), "r2_bf_dapi"]
    assert set(summary["data_set"]) == set(grid_stores(quick_stores))


def test_cell_density_breast_below_half_ovarian_and_about_a_third_of_lung(summary):
    cells = summary.xs("nontoxic", level="phenotype")["cells_per_field"]
    assert cells["breast"] < cells["ovarian"] < cells["lung"]
    assert cells["breast"] < 0.5 * cells["ovarian"]
    assert 0.2 < cells["breast"] / cells["lung"] < 0.45


def test_toxic_fields_have_more_foci_brighter_nuclei_and_fewer_cells(summary):
    # Mean nucleus area says little: G2-arrested (damaged) nuclei grow as condensed ones shrink.
    for cell_type in ("lung", "ovarian", "breast"):
        nontoxic, toxic = summary.loc[(cell_type, "nontoxic")], summary.loc[(cell_type, "toxic")]
        assert toxic["cy5_foci_per_nucleus"] > 2 * nontoxic["cy5_foci_per_nucleus"]
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


NO_VARIATION = dict(
    well_density_cv=0.0,
    plate_density_cv=0.0,
    plate_intensity_cv=0.0,
    edge_density_drop=0.0,
    gradient=0.0,
)


def varied(**sizes):
    """A variation config: every effect off but ``sizes``."""
    return {**NO_VARIATION, **sizes}


def cell_counts(table, config):
    """Cells of each field of ``table`` as the generator places them (no rendering)."""
    synthetic_config = config["data"]["synthetic"]
    profile = Profile(**synthetic_config["cell_types"]["lung"])
    shape = (synthetic_config["field_size"],) * 2
    return np.array(
        [
            len(
                sample_cells(
                    rng_for(0, "field", "lung", row.plate, row.well, int(row.field)),
                    profile,
                    row.toxicity,
                    shape,
                    synthetic_config["pixel_size_um"],
                    density=row.density_factor,
                )["centre"]
            )
            for row in table.itertuples()
        ]
    )


def dmso_fields(**variation):
    """The DMSO fields of one lung plate (256 x 256 fields of 1.3 um, about 67 cells each, four
    per well), with their cell counts."""
    config = tiny_config(fields_per_well=4, field_size=256, variation=varied(**variation))
    table = synthetic.field_table("lung", config).query(
        "plate == 'lung-P01' and compound == 'DMSO'"
    )
    return table.assign(cells=cell_counts(table, config))


def test_the_fields_of_a_well_share_its_seeding_density():
    flat, uneven = dmso_fields(), dmso_fields(well_density_cv=0.3)
    assert (flat["density_factor"] == 1.0).all()
    assert (uneven.groupby("well")["density_factor"].nunique() == 1).all()
    # Per-well means of 4 fields: Poisson alone (about 67 cells) gives a variance near 67 / 4;
    # a CV of 0.3 shared by the fields of a well adds (0.3 * 67)^2, about 24 times as much.
    flat_wells, uneven_wells = (f.groupby("well")["cells"].mean() for f in (flat, uneven))
    assert uneven_wells.var() > 5 * flat_wells.var()
    factor = uneven.groupby("well")["density_factor"].first()
    assert np.corrcoef(factor, uneven_wells[factor.index])[0, 1] > 0.8


def test_edge_wells_hold_fewer_cells():
    fields = dmso_fields(edge_density_drop=0.2)
    row, column = np.array([well_position(w) for w in fields["well"]]).T
    edge = (row == 0) | (row == 15) | (column == 0) | (column == 23)
    assert np.allclose(fields["density_factor"], np.where(edge, 0.8, 1.0), rtol=0, atol=1e-12)
    # 112 edge and 96 interior fields of about 55 and 67 cells: the SE of their ratio is about 0.02.
    assert fields["cells"][edge].mean() < 0.9 * fields["cells"][~edge].mean()


def test_the_gradient_is_linear_across_the_plate_and_the_plate_factors_are_shared():
    config = tiny_config(
        variation=varied(gradient=0.2, plate_density_cv=0.1, plate_intensity_cv=0.1)
    )
    table = synthetic.field_table("lung", config)
    row, column = np.array([well_position(w) for w in table["well"]]).T
    for _, plate in table.groupby("plate"):
        factor = plate["density_factor"].to_numpy()
        position = np.column_stack([np.ones(len(plate)), row[plate.index], column[plate.index]])
        fit = np.linalg.lstsq(position, factor, rcond=None)[0]
        assert np.allclose(position @ fit, factor, rtol=0, atol=1e-12)  # exactly linear
        # From one corner to the opposite one: the plate's factor x (1 -+ gradient / 2).
        assert factor.max() - factor.min() == pytest.approx(0.2 * factor.mean(), rel=1e-9)
        assert (plate[list(INTENSITY_COLUMNS)].nunique() == 1).all()
    plates = table.groupby("plate")
    assert plates["density_factor"].mean().nunique() == 2
    assert plates["intensity_dapi"].first().nunique() == 2


def test_a_wells_factors_do_not_depend_on_the_other_wells_or_the_other_sizes():
    config = tiny_config()
    wells = synthetic.field_table("lung", config)[["plate", "well"]]
    sizes = config["data"]["synthetic"]["variation"]
    every = well_effects(wells, seed=0, cell_type="lung", **sizes)
    some = wells.sample(frac=0.1, random_state=1)  # another subset, in another order
    assert well_effects(some, seed=0, cell_type="lung", **sizes).equals(every.loc[some.index])
    brighter = well_effects(wells, seed=0, cell_type="lung", **{**sizes, "plate_intensity_cv": 0.3})
    assert brighter["density_factor"].equals(every["density_factor"])
    assert not brighter["intensity_dapi"].equals(every["intensity_dapi"])


def test_without_variation_the_fields_render_as_before(tmp_path):
    """All variation 0 draws the same numbers as the generator before wells varied: each field
    from its own stream only, its cells acting by its compound's mechanism (the stores of
    config/quick.yaml were also checked byte for byte against the earlier generator's when
    variation was added)."""
    config = tiny_config(seed=2, variation=varied())
    store = open_store(synthesize(config, tmp_path, workers=1, progress=False)[0])
    meta = store.split_metadata("test")
    assert (meta[["density_factor", *INTENSITY_COLUMNS]] == 1.0).all().all()
    profile = Profile(**config["data"]["synthetic"]["cell_types"]["lung"])
    for i, row in enumerate(meta.itertuples()):
        rng = rng_for(2, "field", "lung", row.plate, row.well, int(row.field))
        cells = sample_cells(
            rng, profile, row.toxicity, (64, 64), 1.3, states=mechanism(row.compound)
        )
        image, masks = render_field(cells, (64, 64), 1.3, rng)
        assert store.images("test")[i].tobytes() == image.tobytes()
        assert store.masks("test")[i].tobytes() == masks.tobytes()


def test_a_plates_stain_intensity_scales_its_stains_only(tmp_path):
    flat, bright = (
        open_store(
            synthesize(tiny_config(variation=v), tmp_path / name, workers=1, progress=False)[0]
        )
        for name, v in (("flat", varied()), ("bright", varied(plate_intensity_cv=0.3)))
    )
    assert np.array_equal(flat.masks("test")[:], bright.masks("test")[:])
    before, after = flat.images("test")[:].astype(float), bright.images("test")[:].astype(float)
    assert np.array_equal(before[:, 0], after[:, 0])  # bright-field is untouched
    # The test fields come from one plate. Their signal above the camera's background scales by
    # its factor; the noise is drawn anew on the scaled signal, hence the 2 % tolerance.
    meta = bright.split_metadata("test")
    assert meta["plate"].nunique() == 1
    background = {"dapi": 300.0, "fitc": 400.0, "cy5": 200.0}
    for k, stain in enumerate(("dapi", "fitc", "cy5"), start=1):
        ratio = (after[:, k] - background[stain]).sum() / (before[:, k] - background[stain]).sum()
        assert ratio == pytest.approx(meta[f"intensity_{stain}"].iloc[0], rel=0.02)


def test_test_sampling_by_wells_keeps_a_wells_fields_together():
    fields = synthetic.field_table("lung", tiny_config(fields_per_well=4))
    sizes = {"train": 8, "val": 4, "test": 10}
    by_field = sample_splits(fields, sizes, 1, 0, "lung-toxic")["test"]
    by_well = sample_splits(fields, sizes, 1, 0, "lung-toxic", test_unit="wells")["test"]
    per_well = by_well.groupby(["plate", "well"]).size().sort_values(ascending=False)
    # 10 fields of whole wells of 4: two whole wells and two fields of a third
    assert per_well.tolist() == [4, 4, 2]
    assert by_field.groupby(["plate", "well"]).size().max() < 4
    assert by_well["plate"].nunique() == 1 and len(by_well) == len(by_well.drop_duplicates())
    # the training splits do not depend on how the test fields are drawn
    for split in ("train", "val"):
        assert sample_splits(fields, sizes, 1, 0, "lung-toxic", test_unit="wells")[split].equals(
            sample_splits(fields, sizes, 1, 0, "lung-toxic")[split]
        )


def test_level_4s_both_phenotype_store_draws_its_fields_from_every_well(tmp_path):
    """``vsgrid synthesize --data-set lung-both``, as the workflow's store job runs it: the
    training fields of a model a screening team would deploy come from wells of both phenotypes,
    as many as a grid train set's."""
    import yaml

    from vsgrid.cli import main

    config = tiny_config()
    config["data"]["splits"] = {"train": 24, "val": 4, "test": 3}
    config["evaluation"]["screen"].update(enabled=True, train_phenotypes=["toxic", "both"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["synthesize", "--config", str(path), "--out", str(tmp_path / "stores")]
    assert main([*argv, "--data-set", "lung-both", "--quiet", "--no-summary"]) == 0
    store = open_store(tmp_path / "stores" / "lung-both.zarr")
    assert store.attrs["data_set"] == "lung-both"
    train = store.split_metadata("train")
    assert len(train) == 24 and set(train["phenotype"]) == {"nontoxic", "toxic"}
    assert main([*argv, "--data-set", "breast-both"]) == 2  # not a cell type of the grid
