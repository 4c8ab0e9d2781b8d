"""vsgrid export: a run's real and virtual stains as OME-Zarr 0.5 (or 0.4) HCS plates, valid by
ome-zarr-models, read back by ome-zarr's reader field for field, written whole or not at all,
never over what vsgrid did not write."""

import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v04.hcs import HCS as HCSv04
from ome_zarr_models.v05.hcs import HCS as HCSv05
from shared import ROOT, planned

from vsgrid import arrays
from vsgrid.cli import main
from vsgrid.data.store import CHANNELS, create_store, open_store
from vsgrid.errors import VsgridError
from vsgrid.layout import Layout
from vsgrid.report.export import MARKER, export_run

MODEL, TEST_SET = "lung-nontoxic.dapi.s0", "lung-toxic"
SHAPE = (128, 192)  # not square, so that y and x cannot be swapped unseen; 2 pyramid levels
# (plate, well, field) in store order: fields out of order in a well, wells out of order
FIELDS = [
    ("lung-P01", "B03", 2),
    ("lung-P01", "A01", 1),
    ("lung-P01", "B03", 1),
    ("lung-P02", "C05", 7),
    ("lung-P01", "A01", 2),
    ("lung-P02", "A02", 7),
]


def make_store(path, fields, data_set, seed=0, **attrs):
    metadata = pd.DataFrame(fields, columns=["plate", "well", "field"]).assign(
        split="test", index=range(len(fields))
    )
    attrs = {"data_set": data_set, "pixel_size_um": 1.3, **attrs}
    with create_store(path, {"test": len(fields)}, SHAPE, metadata, attrs, False) as group:
        group["test"][:] = np.random.default_rng(seed).integers(
            0, 4000, (len(fields), len(CHANNELS), *SHAPE), dtype="uint16"
        )
    return open_store(path)


def make_prediction(path, store, n=None, shape=SHAPE, **attrs):
    n = store.images("test").shape[0] if n is None else n
    group = zarr.open_group(path, mode="w")
    image = np.random.default_rng(1).integers(0, 4000, (n, *shape), dtype="uint16")
    arrays.create(group, image.shape, chunks=(1, *shape), dtype="uint16", name="image")[:] = image
    group.attrs.update(
        {
            "model": MODEL,
            "stain": "dapi",
            "test_set": store.attrs["data_set"],
            "store_id": store.store_id,
            **attrs,
        }
    )
    return image


@pytest.fixture
def run(tmp_path, quick_config):
    config = copy.deepcopy(quick_config)
    config["data"]["dir"], config["results"]["dir"] = str(tmp_path / "data"), str(tmp_path / "res")
    layout = Layout.of(config)
    store = make_store(layout.store(TEST_SET), FIELDS, TEST_SET)
    virtual = make_prediction(layout.prediction(MODEL, TEST_SET), store)
    return config, layout, store, virtual


def command(config, tmp_path, *options, model=MODEL, test_set=TEST_SET):
    """``vsgrid export`` of a run, as argv, with its config written to a file."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = ["--test-set", test_set] if test_set else []
    return ["export", "--config", str(path), "--model", model, *run, "--quiet", *options]


def tree(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def read_field(path):
    """A field as ome-zarr's reader sees it: its levels (numpy, (c, y, x) of its one time point
    and plane) and its metadata."""
    (node, *_) = Reader(parse_url(str(path)))()
    levels = [np.asarray(level) for level in node.data]
    assert all(level.shape[0] == level.shape[2] == 1 for level in levels)
    return [level[0, :, 0] for level in levels], node.metadata


@pytest.mark.parametrize(("ngff", "HCS"), [("0.5", HCSv05), ("0.4", HCSv04)])
def test_every_field_is_in_its_well_with_its_real_channels_and_the_virtual_stain(run, ngff, HCS):
    config, layout, store, virtual = run
    plates = export_run(config, MODEL, test_set=TEST_SET, ngff=ngff, progress=False)
    out = layout.export(MODEL, TEST_SET)
    assert plates == [out / "lung-P01.ome.zarr", out / "lung-P02.ome.zarr"]
    real = store.images("test")[:]
    for plate in plates:
        hcs = HCS.from_zarr(zarr.open_group(plate, mode="r"))  # plate, wells and images valid
        meta = hcs.ome_attributes.plate
        ours = [(w, f) for p, w, f in FIELDS if p == meta.name]
        most = max(sum(w == well for w, _ in ours) for well, _ in ours)
        assert meta.name == plate.name.removesuffix(".ome.zarr") and meta.field_count == most
        expected = {f"{w[0]}/{int(w[1:])}" for w, _ in ours}
        assert {w.path for w in meta.wells} == expected
        for well in meta.wells:  # a well's row and column indices name its real position
            row, column = well.path.split("/")
            assert (
                meta.rows[well.rowIndex].name == row
                and meta.columns[well.columnIndex].name == column
            )
    for i, (plate, well, field) in enumerate(FIELDS):
        # fields numbered within their well in the order of their field number
        image = sorted(f for p, w, f in FIELDS if (p, w) == (plate, well)).index(field)
        levels, metadata = read_field(
            out / f"{plate}.ome.zarr" / well[0] / str(int(well[1:])) / str(image)
        )
        assert levels[0].dtype == np.uint16
        assert np.array_equal(levels[0][:4], real[i]) and np.array_equal(levels[0][4], virtual[i])
        assert [level.shape for level in levels] == [(5, *SHAPE), (5, 64, 96)]
        assert metadata["channel_names"] == [
            "BF",
            "DAPI",
            "FITC",
            "Cy5",
            f"DAPI (virtual, {MODEL})",
        ]
        assert [t[0]["scale"] for t in metadata["coordinateTransformations"]] == [
            [1.0, 1.0, 1.0, 1.3, 1.3],
            [1.0, 1.0, 1.0, 2.6, 2.6],
        ]
        assert [a["name"] for a in metadata["axes"]] == ["t", "c", "z", "y", "x"]
        assert [a.get("unit") for a in metadata["axes"]] == [*[None] * 3, *["micrometer"] * 2]
    # The plate as a viewer stitches it (first field of each well): B/3 at row B, column 3.
    (node, *_) = Reader(parse_url(str(out / "lung-P01.ome.zarr")))()
    height, width = SHAPE
    tile = np.asarray(node.data[0][0, :, 0, height : 2 * height, 2 * width : 3 * width])
    assert np.array_equal(tile[:4], real[2]) and np.array_equal(tile[4], virtual[2])


def test_the_virtual_stain_shows_as_its_real_stain_and_the_rest_is_hidden(run):
    config, layout, store, _ = run
    (plate, *_) = export_run(config, MODEL, test_set=TEST_SET, progress=False)
    omero = zarr.open_group(plate / "A" / "1" / "0", mode="r").attrs["ome"]["omero"]
    channels = omero["channels"]
    assert [c["color"] for c in channels] == ["FFFFFF", "0000FF", "00FF00", "FF00FF", "0000FF"]
    assert [c["active"] for c in channels] == [False, True, False, False, True]
    assert channels[4]["window"] == channels[1]["window"]
    dapi = store.images("test")[:, 1]
    window = channels[1]["window"]
    # the 0.1-99.9 percentiles of a sample of the pixels: within the images' range, most inside
    assert dapi.min() <= window["start"] < window["end"] <= dapi.max()
    assert np.mean((dapi >= window["start"]) & (dapi <= window["end"])) > 0.99
    assert zarr.open_group(plate, mode="r").attrs["vsgrid"]["store_id"] == store.store_id


def test_ngff_04_is_zarr_v2_laid_out_as_iohub_reads_it(run, tmp_path, capsys):
    config, layout, *_ = run
    assert main(command(config, tmp_path, "--ngff", "0.3")) == 2
    assert "--ngff '0.3' is not one of 0.5, 0.4" in capsys.readouterr().err
    assert main(command(config, tmp_path, "--ngff", "0.4")) == 0
    plate = layout.export(MODEL, TEST_SET) / "lung-P01.ome.zarr"
    assert not list(plate.rglob("zarr.json"))  # no Zarr v3 metadata anywhere
    attrs = json.loads((plate / ".zattrs").read_text())
    assert attrs["plate"]["version"] == "0.4" and (plate / ".zgroup").is_file()
    field = plate / "A" / "1" / "0"
    attrs = json.loads((field / ".zattrs").read_text())
    (multiscale,) = attrs["multiscales"]
    assert multiscale["version"] == "0.4"
    assert [d["path"] for d in multiscale["datasets"]] == ["0", "1"]  # iohub's data is "0"
    assert [a["name"] for a in multiscale["axes"]] == ["t", "c", "z", "y", "x"]
    assert attrs["omero"]["rdefs"] == {"model": "color", "defaultT": 0, "defaultZ": 0}
    array = json.loads((field / "0" / ".zarray").read_text())
    assert array["compressor"] == {"id": "zstd", "level": 3, "checksum": True}
    assert array["dimension_separator"] == "/" and array["chunks"] == [1, 1, 1, *SHAPE]
    assert (field / "0" / "0" / "4" / "0" / "0" / "0").is_file()  # the virtual stain's chunk


LABELLED = {
    "lung-P01": {"bf": "Brightfield", "dapi": "Hoechst 33342", "fitc": "Phalloidin", "cy5": "MT"},
    "lung-P02": {"bf": "BF", "dapi": "DNA", "fitc": "Actin", "cy5": "Mito"},
}


def test_a_stores_own_channel_labels_name_each_plates_channels(run):
    config, layout, *_ = run
    store = make_store(layout.store(TEST_SET), FIELDS, TEST_SET, channel_labels=LABELLED)
    make_prediction(layout.prediction(MODEL, TEST_SET), store)
    out = layout.export(MODEL, TEST_SET)
    export_run(config, MODEL, test_set=TEST_SET, progress=False)
    for plate, field in (("lung-P01", "A/1/0"), ("lung-P02", "A/2/0")):
        labels = LABELLED[plate]
        _, metadata = read_field(out / f"{plate}.ome.zarr" / field)
        assert metadata["channel_names"] == [
            *(labels[c] for c in CHANNELS),
            f"{labels['dapi']} (virtual, {MODEL})",
        ]


MALFORMED = {
    "not a mapping": ["Hoechst"],
    "a plate missing": {"lung-P01": LABELLED["lung-P01"]},
    "a channel missing": {**LABELLED, "lung-P02": {"bf": "BF", "dapi": "DNA", "fitc": "Actin"}},
    "an empty label": {**LABELLED, "lung-P02": {**LABELLED["lung-P02"], "cy5": " "}},
    "two channels alike": {**LABELLED, "lung-P02": {**LABELLED["lung-P02"], "cy5": "DNA"}},
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_channel_labels_are_one_line_naming_the_store(run, case):
    config, layout, *_ = run
    store = make_store(layout.store(TEST_SET), FIELDS, TEST_SET, channel_labels=MALFORMED[case])
    make_prediction(layout.prediction(MODEL, TEST_SET), store)
    with pytest.raises(VsgridError, match="channel_labels") as error:
        export_run(config, MODEL, test_set=TEST_SET, progress=False)
    assert str(store.path) in str(error.value) and "\n" not in str(error.value)
    assert not layout.export(MODEL, TEST_SET).exists()


def test_a_screen_is_exported_from_its_store_and_prediction(run):
    config, layout, _, _ = run
    fields = [("lung-P03", "A01", 1), ("lung-P03", "P24", 1)]
    store = make_store(layout.screen_store("lung"), fields, "lung-screen", seed=2)
    virtual = make_prediction(layout.screen_prediction(MODEL, "lung"), store)
    (plate,) = export_run(config, MODEL, screen="lung", progress=False)
    assert plate == layout.export(MODEL, "lung-screen") / "lung-P03.ome.zarr"
    meta = HCSv05.from_zarr(zarr.open_group(plate, mode="r")).ome_attributes.plate
    assert (len(meta.rows), len(meta.columns)) == (16, 24)  # the plate up to its last well, P24
    levels, _ = read_field(plate / "P" / "24" / "0")
    assert np.array_equal(levels[0][:4], store.images("test")[1])
    assert np.array_equal(levels[0][4], virtual[1])


def _no_prediction(layout, store):
    shutil.rmtree(layout.prediction(MODEL, TEST_SET))
    return layout.prediction(MODEL, TEST_SET)


def _predicted(**wrong):
    def damage(layout, store):
        make_prediction(layout.prediction(MODEL, TEST_SET), store, **wrong)
        return layout.prediction(MODEL, TEST_SET)

    return damage


def _no_wells(layout, store):
    store.metadata.drop(columns="well").to_csv(store.path / "metadata.tsv", sep="\t", index=False)
    return store.path


# What each bad input does to the run; it returns the file the error must name.
BAD = {
    "missing prediction": _no_prediction,
    "another build of the store": _predicted(store_id="0" * 32),
    "one field too few": _predicted(n=len(FIELDS) - 1),
    "fields of another size": _predicted(shape=(64, 64)),
    "a store without wells": _no_wells,
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_naming_the_file_and_leaves_nothing(run, case, tmp_path, capsys):
    config, layout, store, _ = run
    named = BAD[case](layout, store)
    with pytest.raises(VsgridError) as error:
        export_run(config, MODEL, test_set=TEST_SET, progress=False)
    assert str(named) in str(error.value) and "\n" not in str(error.value)
    assert not layout.export(MODEL, TEST_SET).parent.exists()
    assert main(command(config, tmp_path)) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_a_failure_midway_leaves_the_earlier_export_as_it_was(run, tmp_path, capsys):
    config, layout, store, virtual = run
    assert main(command(config, tmp_path)) == 0
    out = layout.export(MODEL, TEST_SET)
    assert capsys.readouterr().out.split() == [str(out / f"lung-P0{p}.ome.zarr") for p in (1, 2)]
    # the last field's prediction chunk is lost: the export fails after writing the others
    (layout.prediction(MODEL, TEST_SET) / "image" / "c" / str(len(FIELDS) - 1) / "0" / "0").unlink()
    with pytest.raises(VsgridError, match="chunk .* is missing"):
        export_run(config, MODEL, test_set=TEST_SET, progress=False)
    assert sorted(p.name for p in out.parent.iterdir()) == [TEST_SET]  # no temporary left
    levels, _ = read_field(out / "lung-P02.ome.zarr" / "A" / "2" / "0")
    assert np.array_equal(levels[0][4], virtual[len(FIELDS) - 1])


def test_a_folder_holding_what_vsgrid_did_not_write_is_refused_and_left_as_it_was(
    run, tmp_path, capsys
):
    config, *_ = run
    out = tmp_path / "plates"
    (out / "keep").mkdir(parents=True)
    (out / "raw_plate.txt").write_text("raw")
    (out / "keep" / "notes.txt").write_text("notes")
    assert main(command(config, tmp_path, "--out", str(out))) == 2
    error = capsys.readouterr().err.strip()
    assert f"--out {out} holds keep, raw_plate.txt," in error and "\n" not in error
    assert tree(out) == ["keep", "keep/notes.txt", "raw_plate.txt"]
    assert (out / "raw_plate.txt").read_text() == "raw"
    with pytest.raises(VsgridError, match="is a file"):
        export_run(config, MODEL, test_set=TEST_SET, out=out / "raw_plate.txt", progress=False)
    assert tree(out) == ["keep", "keep/notes.txt", "raw_plate.txt"]


def test_an_earlier_export_or_an_empty_folder_is_replaced_and_nothing_else(run, tmp_path):
    config, _, store, _ = run
    out = tmp_path / "plates"
    out.mkdir()
    plates = export_run(config, MODEL, test_set=TEST_SET, out=out, progress=False)
    names = ["lung-P01.ome.zarr", "lung-P02.ome.zarr"]
    assert plates == [out / name for name in names]
    assert json.loads((out / MARKER).read_text()) == {
        "model": MODEL,
        "stain": "dapi",
        "test_set": TEST_SET,
        "store_id": store.store_id,
        "ngff": "0.5",
        "plates": names,
    }
    (plates[0] / "stale").write_text("inside a plate vsgrid wrote: replaced with it")
    assert export_run(config, MODEL, test_set=TEST_SET, out=out, ngff="0.4", progress=False) == (
        plates
    )
    assert sorted(p.name for p in out.iterdir()) == [*names, MARKER]
    assert not (plates[0] / "stale").exists()
    (out / "notes.txt").write_text("the user's, beside an export")
    with pytest.raises(VsgridError, match=r"holds notes\.txt,"):
        export_run(config, MODEL, test_set=TEST_SET, out=out, progress=False)
    assert (out / "notes.txt").exists() and (out / MARKER).exists()


def test_an_out_that_links_to_a_folder_exports_into_the_folder_and_keeps_the_link(run, tmp_path):
    config, *_ = run
    (tmp_path / "disk").mkdir()
    (tmp_path / "plates").symlink_to(tmp_path / "disk")
    plates = export_run(config, MODEL, test_set=TEST_SET, out=tmp_path / "plates", progress=False)
    assert [p.parent for p in plates] == [tmp_path / "disk"] * 2
    assert (tmp_path / "plates").is_symlink() and (tmp_path / "plates" / MARKER).is_file()


# Names become folders (the store's, the prediction's, the export's): each must be the grid's.
BAD_NAMES = [
    ("--test-set", "../x"),
    ("--test-set", "lung-toxic/../../x"),
    ("--model", "../lung-nontoxic.dapi.s0"),
    ("--model", "a/lung-nontoxic.dapi.s0"),
    ("--model", "lung-nontoxic.dapi"),
    ("--screen", "../lung"),
]


@pytest.mark.parametrize(("option", "value"), BAD_NAMES)
def test_a_name_that_is_not_the_grids_is_one_line_naming_the_option(
    run, tmp_path, capsys, option, value
):
    config, layout, *_ = run
    if option == "--model":
        argv = command(config, tmp_path, model=value)
    else:
        argv = command(config, tmp_path, option, value, test_set=None)
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert f"{option} {value!r}" in error and "\n" not in error
    assert not (layout.results / "export").exists()


def test_exports_are_planned_on_demand_for_every_run_and_screen_run(tmp_path):
    config = ROOT / ".test" / "config.yaml"
    jobs = planned(tmp_path, "export_all", configfile=config)
    # the .test grid's runs, and its screen runs (8 of non-toxic models, 4 of both-phenotype ones)
    assert jobs["export"] == 24 and jobs["export_screen"] == 12
    assert not {"export", "export_screen"} & set(planned(tmp_path, configfile=config))
