"""OME-Zarr ingest: HCS plates written by ome-zarr's own writer from synthetic fields."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata
from ome_zarr_models.exceptions import ValidationWarning
from shared import PLATES, WELLS

from vsgrid.cli import main
from vsgrid.config import load_config, validate
from vsgrid.data.ingest import ingest
from vsgrid.data.ome_zarr import read_plates
from vsgrid.data.store import CHANNELS, open_store
from vsgrid.data.synthetic import Profile, render_field, sample_cells
from vsgrid.errors import VsgridError

# The images' channel order differs from vsgrid's, so the labels must steer the mapping.
LABELS = {"dapi": "DAPI", "bf": "Brightfield", "cy5": "Cy5", "fitc": "FITC"}
LABEL_ORDER = tuple(LABELS.values())
FORMATS = {"PL1": FormatV04(), "PL2": FormatV05(), "PL3": FormatV05()}  # both NGFF versions
FIELDS = 2
SIZE = 64
PIXEL_UM = 0.65


def omero(labels):
    window = {"start": 0, "end": 65535, "min": 0, "max": 65535}
    return {"channels": [{"label": x, "color": "FFFFFF", "window": window} for x in labels]}


def write_field(group, pixels, fmt, axes="cyx", labels=LABEL_ORDER, pixel_um=PIXEL_UM):
    """A field as a microscope's exporter writes it: its pixel size in micrometers on y and x
    (none with ``pixel_um`` None)."""
    scale = {a: pixel_um if a in "yx" else 1.0 for a in axes} if pixel_um else None
    units = {a: "micrometer" for a in axes if a in "zyx"} if pixel_um else None
    write_image(
        pixels,
        group,
        scale_factors=[2],
        fmt=fmt,
        axes=axes,
        omero=omero(labels),
        scale=scale,
        axes_units=units,
    )


@pytest.fixture(scope="module")
def rendered():
    """Synthetic (4, 64, 64) fields in CHANNELS order, by (plate, well, field)."""
    config = load_config(Path(__file__).parents[1] / "config" / "config.yaml")
    profile = Profile(**config["data"]["synthetic"]["cell_types"]["lung"])
    rng = np.random.default_rng(0)
    fields = {}
    for plate in PLATES:
        for well in WELLS:
            for field in range(FIELDS):
                cells = sample_cells(rng, profile, 0.0, (SIZE, SIZE), 0.65)
                fields[(plate, well, field)] = render_field(cells, (SIZE, SIZE), 0.65, rng)[0]
    return fields


def write_plates(root, rendered, planes=1):
    """The plates as OME-Zarr (PL3 without a name: named by its path), and the two CSVs.

    With ``planes`` > 1, each field is a z-stack (c, z, y, x) whose plane k is the field plus
    k * 1000 in a random half of its pixels; returns what was written, by (plate, well, field).
    """
    rng, written = np.random.default_rng(1), {}
    for plate, fmt in FORMATS.items():
        group = zarr.open_group(root / f"{plate}.ome.zarr", mode="w", zarr_format=fmt.zarr_format)
        wells = [f"{w[0]}/{int(w[1:])}" for w in WELLS]
        write_plate_metadata(
            group,
            ["A", "B"],
            ["1", "2", "3", "4"],
            wells,
            fmt=fmt,
            name=None if plate == "PL3" else plate,
        )
        for well, path in zip(WELLS, wells):
            well_group = group.require_group(path)
            write_well_metadata(well_group, [{"path": str(k)} for k in range(FIELDS)], fmt=fmt)
            for k in range(FIELDS):
                pixels = rendered[(plate, well, k)]
                if planes > 1:
                    offsets = (
                        rng.integers(0, 2, (planes, SIZE, SIZE)) * np.arange(planes)[:, None, None]
                    )
                    pixels = pixels[:, None] + (1000 * offsets).astype(np.uint16)
                written[(plate, well, k)] = pixels
                order = [CHANNELS.index(c) for c in LABELS]
                axes = "cyx" if planes == 1 else "czyx"
                write_field(well_group.require_group(str(k)), pixels[order], fmt, axes)
    pd.DataFrame(
        [(w, c, x) for w, (c, x) in WELLS.items()], columns=["well", "compound", "concentration"]
    ).to_csv(root / "plate_map.csv", index=False)
    pd.DataFrame(list(PLATES.items()), columns=["plate", "cell_type"]).to_csv(
        root / "plates.csv", index=False
    )
    return written


@pytest.fixture(scope="module")
def template(tmp_path_factory, rendered):
    root = tmp_path_factory.mktemp("plates")
    write_plates(root, rendered)
    return root


@pytest.fixture
def plates(template, tmp_path):
    shutil.copytree(template, tmp_path / "in")
    return tmp_path / "in"


def config_of(root, **ingest):
    return validate(
        {
            "grid": {"cell_types": ["lung"], "seeds": [0]},
            "data": {
                "source": "ingest",
                "dir": str(root / "stores"),
                "splits": {"train": 12, "val": 4, "test": 8},
                "test_plates": 1,
                "ingest": {
                    "ome_zarr": [str(root / f"{p}.ome.zarr") for p in PLATES],
                    "plate_map": str(root / "plate_map.csv"),
                    "plate_cell_types": str(root / "plates.csv"),
                    **ingest,
                },
            },
        }
    )


def stored(out):
    """Every file of every store, byte for byte."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_round_trip_gives_back_every_field_written(plates, rendered):
    paths = ingest(config_of(plates), plates / "stores", progress=False)
    assert sorted(p.name for p in paths) == ["lung-nontoxic.zarr", "lung-toxic.zarr"]
    seen = 0
    for path in paths:
        store = open_store(path)
        provenance = store.attrs["provenance"]
        assert provenance["ome_zarr"] == [str(plates / f"{p}.ome.zarr") for p in PLATES]
        assert provenance["z"] is None and "load_data" not in provenance
        assert store.attrs["saturation"] == 65535 and not store.has_masks
        assert store.attrs["pixel_size_um"] == PIXEL_UM  # the plates' own, none configured
        assert store.attrs["channel_labels"] == {p: LABELS for p in set(store.metadata["plate"])}
        for split in ("train", "val", "test"):
            meta, images = store.split_metadata(split), store.images(split)[:]
            assert len(meta) == len(images) == {"train": 12, "val": 4, "test": 8}[split]
            assert set(meta["plate"]) <= ({"PL3"} if split == "test" else {"PL1", "PL2"})
            for row, image in zip(meta.itertuples(), images):
                assert row.ome_zarr == str(plates / f"{row.plate}.ome.zarr")
                assert row.image == f"{row.well[0]}/{int(row.well[1:])}/{row.field}"
                assert (row.compound, row.concentration) == WELLS[row.well]
                written = rendered[(row.plate, row.well, row.field)]
                assert image.dtype == np.uint16 and image.tobytes() == written.tobytes()
                seen += 1
    assert seen == 2 * 24


@pytest.mark.parametrize("z, expected", [("max", lambda s: s.max(axis=1)), (2, lambda s: s[:, 2])])
def test_a_z_stack_becomes_the_chosen_plane(tmp_path, rendered, z, expected):
    written = write_plates(tmp_path, rendered, planes=3)
    path = ingest(config_of(tmp_path, z=z), tmp_path / "stores", progress=False)[0]
    store = open_store(path)
    meta, images = store.split_metadata("train"), store.images("train")[:]
    for row, image in zip(meta.itertuples(), images):
        stack = written[(row.plate, row.well, row.field)]
        assert np.array_equal(image, expected(stack))
        assert not np.array_equal(image, stack[:, 0])  # the planes differ: the choice is seen
    with pytest.raises(VsgridError, match="has 3 planes on axis z; set data.ingest.z"):
        ingest(config_of(tmp_path), tmp_path / "stores", progress=False)
    with pytest.raises(VsgridError, match="has 3 z planes; data.ingest.z 3 is not one of them"):
        ingest(config_of(tmp_path, z=3), tmp_path / "stores", progress=False)


def rewrite(plates, plate, well, field, pixels, **options):
    """Field ``field`` of ``well`` written anew (ome-zarr's writer does not overwrite arrays)."""
    folder = plates / f"{plate}.ome.zarr" / well / str(field)
    shutil.rmtree(folder)
    group = zarr.open_group(folder, mode="w", zarr_format=FORMATS[plate].zarr_format)
    write_field(group, pixels, FORMATS[plate], **options)


def attrs_file(plates, plate, inner=""):
    folder = plates / f"{plate}.ome.zarr" / inner
    return folder / (".zattrs" if FORMATS[plate].version == "0.4" else "zarr.json")


def edit_attrs(path, change):
    attrs = json.loads(path.read_text())
    change(attrs.get("attributes", attrs))  # zarr.json holds a group's attributes under that key
    path.write_text(json.dumps(attrs))


def missing_plate(plates):
    shutil.rmtree(plates / "PL2.ome.zarr")
    return "OME-Zarr plate .*PL2.ome.zarr does not exist"


def not_a_plate(plates):
    edit_attrs(attrs_file(plates, "PL1"), lambda a: a.pop("plate"))
    return "PL1.ome.zarr is not an HCS plate: its attributes have no plate metadata"


def missing_well(plates):
    shutil.rmtree(plates / "PL2.ome.zarr" / "B" / "3")
    return "PL2.ome.zarr well B03 is listed in the plate metadata but .*B/3 is missing"


def missing_field(plates):
    shutil.rmtree(plates / "PL1.ome.zarr" / "A" / "2" / "1")
    return "PL1.ome.zarr well A02 field 1 is listed in its well's image list but .*A/2/1 is missing"


def unknown_label(plates):
    labels = ["DAPI", "Brightfield", "Cy5", "GFP"]
    rewrite(plates, "PL3", "B/4", 0, np.zeros((4, SIZE, SIZE), np.uint16), labels=labels)
    return (
        "PL3.ome.zarr well B04 field 0: data.ingest.channels.fitc is 'FITC', not among its omero "
        r"channel labels \(DAPI, Brightfield, Cy5, GFP\)"
    )


def other_shape(plates):
    rewrite(plates, "PL1", "A/3", 1, np.zeros((4, SIZE, 60), np.uint16))
    return r"PL1.ome.zarr well A03 field 1 is \(64, 60\) uint16 but .* is \(64, 64\) uint16"


def other_dtype(plates):
    rewrite(plates, "PL2", "A/1", 0, np.zeros((4, SIZE, SIZE), np.uint8))
    return r"PL2.ome.zarr well A01 field 0 is \(64, 64\) uint8 but .* is \(64, 64\) uint16"


def timepoints(plates):
    rewrite(plates, "PL1", "B/1", 0, np.zeros((2, 4, SIZE, SIZE), np.uint16), axes="tcyx")
    return "PL1.ome.zarr well B01 field 0 has 2 timepoints; vsgrid reads one per field"


def missing_chunk(plates):
    (plates / "PL3.ome.zarr" / "B" / "2" / "0" / "s0" / "c" / "0" / "0" / "0").unlink()
    return "PL3.ome.zarr well B02 field 0: chunk B/2/0/s0/c/0/0/0 is missing"


def missing_chunk_of_zarr_v2(plates):
    (plates / "PL1.ome.zarr" / "A" / "3" / "1" / "s0" / "0" / "0" / "0").unlink()
    return "PL1.ome.zarr well A03 field 1: chunk A/3/1/s0/0/0/0 is missing"


def damaged_chunk(plates):
    level = plates / "PL3.ome.zarr" / "A" / "4" / "1" / "s0"
    (chunk,) = [p for p in level.rglob("*") if p.is_file() and p.name != "zarr.json"]
    chunk.write_bytes(b"\x28\xb5\x2f\xfd garbage" * 50)
    return "PL3.ome.zarr well A04 field 1: array .*s0 cannot be read"


def well_not_in_plate_map(plates):
    table = pd.read_csv(plates / "plate_map.csv")
    table[table["well"] != "B02"].to_csv(plates / "plate_map.csv", index=False)
    return r"plate_map.csv has no entry for plate PL1 well B02 \(6 fields of the 3 OME-Zarr"


def unsupported_version(plates):
    edit_attrs(attrs_file(plates, "PL1"), lambda a: a["plate"].update(version="0.3"))
    return "PL1.ome.zarr is NGFF version 0.3; vsgrid reads 0.4 and 0.5"


def two_plates_of_one_name(plates):
    edit_attrs(attrs_file(plates, "PL2"), lambda a: a["ome"]["plate"].update(name="PL1"))
    return "OME-Zarr plates .*PL1.ome.zarr and .*PL2.ome.zarr are both named 'PL1'"


def plate_name_climbing_out(plates):
    edit_attrs(attrs_file(plates, "PL2"), lambda a: a["ome"]["plate"].update(name="../../../evil"))
    return r"PL2.ome.zarr is named '../../../evil', not a plate name \(letters, digits"


def plate_name_with_a_newline(plates):
    edit_attrs(attrs_file(plates, "PL1"), lambda a: a["plate"].update(name="PL1\n"))
    return r"PL1.ome.zarr is named 'PL1\\n', not a plate name"


def plates_of_two_pixel_sizes(plates):
    rewrite(plates, "PL2", "B/2", 1, np.zeros((4, SIZE, SIZE), np.uint16), pixel_um=1.3)
    return (
        "PL1.ome.zarr well A01 field 0 has 0.65 um pixels but .*PL2.ome.zarr well B02 field 1 has "
        "1.3 um; set data.ingest.pixel_size_um"
    )


def no_pixel_size(plates):
    rewrite(plates, "PL3", "A/2", 0, np.zeros((4, SIZE, SIZE), np.uint16), pixel_um=None)
    return "PL3.ome.zarr well A02 field 0 declares no pixel size .*; set data.ingest.pixel_size_um"


def invalid_well_metadata(plates):
    edit_attrs(attrs_file(plates, "PL1", "A/4"), lambda a: a["well"].pop("images"))
    return "PL1.ome.zarr well A04: invalid NGFF metadata at well.images: Field required"


@pytest.mark.parametrize(
    "damage",
    [
        missing_plate,
        not_a_plate,
        missing_well,
        missing_field,
        unknown_label,
        other_shape,
        other_dtype,
        timepoints,
        missing_chunk,
        missing_chunk_of_zarr_v2,
        damaged_chunk,
        well_not_in_plate_map,
        unsupported_version,
        two_plates_of_one_name,
        plate_name_climbing_out,
        plate_name_with_a_newline,
        plates_of_two_pixel_sizes,
        no_pixel_size,
        invalid_well_metadata,
    ],
)
def test_bad_input_is_named_in_one_line_and_the_stores_stay_as_they_were(plates, damage):
    config = config_of(plates)
    out = plates / "stores"
    ingest(config, out, progress=False)
    before = stored(out)

    reason = damage(plates)
    with pytest.raises(VsgridError, match=reason) as error:
        ingest(config, out, progress=False)
    assert "\n" not in str(error.value)
    assert stored(out) == before


def test_load_data_and_ome_zarr_together_stop_the_command_line(plates, capsys):
    config = config_of(plates)
    main(["ingest", "--config", str(write_config(plates, config)), "--quiet", "--no-summary"])
    before = stored(plates / "stores")
    config["data"]["ingest"]["load_data"] = str(plates / "plate_map.csv")  # any file: not read
    command = ["ingest", "--config", str(write_config(plates, config)), "--quiet"]
    assert main(command) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"vsgrid ingest: error: {plates / 'config.yaml'}: invalid configuration: set exactly one "
        "of data.ingest.load_data (a LoadData CSV of TIFFs) and data.ingest.ome_zarr (OME-Zarr "
        "plates); both are set"
    )
    assert stored(plates / "stores") == before


def test_a_damaged_plate_exits_2_through_the_command_line(plates, capsys):
    missing_field(plates)
    assert (
        main(["ingest", "--config", str(write_config(plates, config_of(plates))), "--quiet"]) == 2
    )
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("vsgrid ingest: error: OME-Zarr plate ") and "well A02 field 1" in line
    assert not (plates / "stores").exists()


def write_config(root, config):
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def field_attrs(plates):
    """The attributes file of every field of every plate."""
    return [
        path
        for p in PLATES
        for path in (plates / f"{p}.ome.zarr").glob(f"*/*/*/{attrs_file(plates, p).name}")
    ]


def in_nanometers(multiscale):
    for axis in multiscale["axes"][1:]:
        axis["unit"] = "nanometer"
    for dataset in multiscale["datasets"]:
        scale = dataset["coordinateTransformations"][0]["scale"]
        scale[1:] = [1000 * v for v in scale[1:]]


def at_both_levels(multiscale):
    """Half the size on the full-resolution dataset, doubled by the multiscale's own scale."""
    multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] = [1, 0.325, 0.325]
    multiscale["coordinateTransformations"] = [{"type": "scale", "scale": [1, 2, 2]}]


def as_iohub_writes(multiscale):
    """iohub: axes T, C, Z, Y, X by their upper-case names, an identity at the multiscale level."""
    for axis in multiscale["axes"]:
        axis["name"] = axis["name"].upper()
    multiscale["coordinateTransformations"] = [{"type": "identity"}]


@pytest.mark.parametrize("declare", [in_nanometers, at_both_levels, as_iohub_writes])
def test_the_pixel_size_is_the_plates_own(plates, rendered, declare):
    for path in field_attrs(plates):
        edit_attrs(path, lambda a: declare(a.get("ome", a)["multiscales"][0]))
    for path in ingest(config_of(plates), plates / "stores", progress=False):
        store = open_store(path)
        assert store.attrs["pixel_size_um"] == PIXEL_UM
        meta, images = store.split_metadata("test"), store.images("test")[:]
        for row, image in zip(meta.itertuples(), images):
            assert np.array_equal(image, rendered[(row.plate, row.well, row.field)])


def test_a_configured_pixel_size_must_be_the_plates_own(plates):
    out = plates / "stores"
    with pytest.raises(VsgridError) as error:
        ingest(config_of(plates, pixel_size_um=1.3), out, progress=False)
    assert str(error.value).endswith(
        "PL1.ome.zarr well A01 field 0 declares 0.65 um pixels but data.ingest.pixel_size_um is 1.3"
    )
    assert not out.exists()
    path = ingest(config_of(plates, pixel_size_um=0.655), out, progress=False)[0]
    assert open_store(path).attrs["pixel_size_um"] == 0.655  # within 1 %: the configured one


def test_two_channels_of_one_label_are_refused(plates):
    with pytest.raises(
        VsgridError,
        match=("data.ingest.channels.dapi and data.ingest.channels.fitc are both 'DAPI'; "),
    ):
        config_of(plates, channels={**LABELS, "fitc": "DAPI"})
    own = {"path": str(plates / "PL3.ome.zarr"), "channels": {**LABELS, "cy5": "Brightfield"}}
    with pytest.raises(
        VsgridError,
        match=(
            r"data.ingest.ome_zarr\[2\].channels.bf and data.ingest.ome_zarr\[2\].channels.cy5 are both"
        ),
    ):
        config_of(plates, ome_zarr=[str(plates / f"{p}.ome.zarr") for p in ("PL1", "PL2")] + [own])


def test_a_plate_of_other_labels_has_a_channel_map_of_its_own(plates):
    for path in field_attrs(plates):
        if "PL3" in str(path):
            edit_attrs(path, lambda a: a["ome"]["omero"]["channels"][3].update(label="GFP"))
    paths = [str(plates / f"{p}.ome.zarr") for p in PLATES]
    with pytest.raises(VsgridError, match="fitc is 'FITC', not among its omero channel labels"):
        ingest(config_of(plates), plates / "stores", progress=False)
    own = {"path": paths[2], "channels": {**LABELS, "fitc": "EGFP"}}
    with pytest.raises(VsgridError, match=r"ome_zarr\[2\].channels.fitc is 'EGFP', not among"):
        ingest(config_of(plates, ome_zarr=[*paths[:2], own]), plates / "stores", progress=False)
    own["channels"]["fitc"] = "GFP"
    config = config_of(plates, ome_zarr=[*paths[:2], own])
    for path in ingest(config, plates / "stores", progress=False):
        labels = open_store(path).attrs["channel_labels"]
        assert labels == {"PL1": LABELS, "PL2": LABELS, "PL3": own["channels"]}


def test_ngff_05_plates_ingest_without_warnings(plates):
    for plate in ("PL2", "PL3"):  # 0.5 puts the version beside the plate metadata, not in it
        edit_attrs(attrs_file(plates, plate), lambda a: a["ome"]["plate"].pop("version"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ingest(config_of(plates), plates / "stores", progress=False)
    assert [w.message for w in seen if issubclass(w.category, ValidationWarning)] == []


# The plate tests/data/iohub/make_plate.py wrote with iohub 0.2 (VisCy's OME-Zarr library): its
# labels, in another order than vsgrid's, and the formula of its pixels.
IOHUB_PLATE = Path(__file__).parent / "data" / "iohub" / "viscy_plate.zarr"
IOHUB_LABELS = ["BF", "Phase3D", "GFP", "DAPI", "Cy5"]
VISCY = {"bf": "BF", "dapi": "DAPI", "fitc": "GFP", "cy5": "Cy5"}


def iohub_value(well, field, channel, z, y, x):
    return y * 64 + x + 4096 * channel + 331 * z + 17 * (2 * well + field)


def test_a_plate_written_by_iohub_is_read_by_label_plane_and_scale():
    entry = {"path": str(IOHUB_PLATE), "channels": VISCY, "z": 1}
    ingest_cfg = {"ome_zarr": [entry], "channels": LABELS, "z": None, "pixel_size_um": None}
    fields, read = read_plates(ingest_cfg)
    assert fields[["plate", "well", "field"]].values.tolist() == [
        ["viscy_plate", w, f] for w in ("A01", "B02") for f in (0, 1)
    ]
    assert read.pixel_size_um == 0.65 and read.labels("viscy_plate") == VISCY
    y, x = np.ogrid[:64, :64]
    channels = [IOHUB_LABELS.index(VISCY[c]) for c in CHANNELS]
    for k, field in enumerate(fields.to_dict("records")):
        expected = [iohub_value(k // 2, k % 2, c, 1, y, x) for c in channels]
        assert np.array_equal(read(field), np.array(expected, np.uint16))
    with pytest.raises(VsgridError, match=r"3 z planes; data.ingest.ome_zarr\[0\].z 3 is not"):
        read_plates({**ingest_cfg, "ome_zarr": [{**entry, "z": 3}]})
    with pytest.raises(
        VsgridError, match="viscy_plate.zarr well A01 field 0 has 3 planes on axis z"
    ):
        read_plates({**ingest_cfg, "ome_zarr": [str(IOHUB_PLATE)], "channels": VISCY})
