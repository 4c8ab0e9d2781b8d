"""Real-plate ingest: a small plate set written by the test as TIFFs + LoadData CSV."""

import math
import subprocess
import sys
import zlib

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from shared import PLATES, WELLS

from vsgrid.cli import main
from vsgrid.config import validate
from vsgrid.data.ingest import ingest
from vsgrid.data.store import open_store
from vsgrid.data.summary import image_flag
from vsgrid.errors import VsgridError

CHANNEL_NAMES = {"bf": "Brightfield", "dapi": "DAPI", "fitc": "FITC", "cy5": "Cy5"}
SITES = (1, 2)
SHAPE = (24, 32)


class PlateSet:
    """Writes the plates and remembers every array it wrote, by (plate, well, site, channel)."""

    def __init__(self, root, dtype=np.uint16):
        self.root, self.images = root, {}
        rng = np.random.default_rng(0)
        rows = []
        for plate in PLATES:
            folder = root / "images" / plate
            folder.mkdir(parents=True)
            for well in WELLS:
                for site in SITES:
                    row = {"Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Site": site}
                    for channel, name in CHANNEL_NAMES.items():
                        array = rng.integers(0, 60000, SHAPE).astype(dtype)
                        file = f"{plate}_{well}_s{site}_{name}.tif"
                        tifffile.imwrite(folder / file, array)
                        self.images[(plate, well, site, channel)] = array
                        row[f"FileName_{name}"] = file
                        row[f"PathName_{name}"] = f"images/{plate}"
                    rows.append(row)
        pd.DataFrame(rows).to_csv(root / "load_data.csv", index=False)
        pd.DataFrame(
            [(w, c, x) for w, (c, x) in WELLS.items()],
            columns=["well", "compound", "concentration"],
        ).to_csv(root / "plate_map.csv", index=False)
        pd.DataFrame(list(PLATES.items()), columns=["plate", "cell_type"]).to_csv(
            root / "plates.csv", index=False
        )

    def config(self, **splits):
        return validate(
            {
                "grid": {"cell_types": ["lung"], "seeds": [0]},
                "data": {
                    "source": "ingest",
                    "dir": str(self.root / "stores"),
                    "splits": {"train": 12, "val": 4, "test": 8, **splits},
                    "test_plates": 1,
                    "ingest": {
                        k: str(self.root / f)
                        for k, f in (
                            ("load_data", "load_data.csv"),
                            ("plate_map", "plate_map.csv"),
                            ("plate_cell_types", "plates.csv"),
                        )
                    }
                    | {"pixel_size_um": 0.65},
                },
            }
        )

    def file(self, plate, well, site, channel):
        return self.root / "images" / plate / f"{plate}_{well}_s{site}_{CHANNEL_NAMES[channel]}.tif"


@pytest.fixture
def plates(tmp_path):
    return PlateSet(tmp_path)


def test_round_trip_gives_back_every_array_written(plates):
    config = plates.config()
    paths = ingest(config, plates.root / "stores", progress=False)
    assert sorted(p.name for p in paths) == ["lung-nontoxic.zarr", "lung-toxic.zarr"]
    seen = 0
    for path in paths:
        store = open_store(path)
        assert store.attrs["provenance"]["source"] == "ingest" and not store.has_masks
        assert store.attrs["pixel_size_um"] == 0.65
        assert store.attrs["channel_labels"] == {
            p: CHANNEL_NAMES for p in set(store.metadata["plate"])
        }
        for split in ("train", "val", "test"):
            meta, images = store.split_metadata(split), store.images(split)[:]
            assert len(meta) == len(images) == config["data"]["splits"][split]
            assert (
                set(meta["plate"]) == ({"PL3"} if split == "test" else {"PL1", "PL2"})
                or split == "val"
            )
            for row, image in zip(meta.itertuples(), images):
                for c, channel in enumerate(("bf", "dapi", "fitc", "cy5")):
                    assert np.array_equal(
                        image[c], plates.images[(row.plate, row.well, row.field, channel)]
                    )
                seen += 1
    assert seen == 2 * 24


def test_paper_phenotype_rule(plates):
    paths = ingest(plates.config(), plates.root / "stores", progress=False)
    for path in paths:
        meta = open_store(path).metadata
        wells = set(meta["well"])
        if path.name == "lung-nontoxic.zarr":
            assert wells == {"A01", "A02", "A03", "A04"}  # DMSO and the three lowest concentrations
        else:
            assert wells == {"B01", "B02", "B03", "B04"}  # three highest and the positive control


def test_float_tiffs_within_range_are_accepted(tmp_path):
    plates = PlateSet(tmp_path, dtype=np.float32)
    path = ingest(plates.config(), tmp_path / "stores", progress=False)[0]
    store = open_store(path)
    row = store.split_metadata("train").iloc[0]
    assert np.array_equal(
        store.images("train")[0][1],
        plates.images[(row.plate, row.well, row.field, "dapi")].astype(np.uint16),
    )


def garbage_tiff(plates):
    path = plates.file("PL1", "A01", 1, "dapi")
    path.write_bytes(b"II*\x00garbage" * 3)
    return path.name, "not a readable TIFF"


def truncated_tiff(plates):
    path = plates.file("PL2", "B02", 1, "fitc")
    path.write_bytes(path.read_bytes()[:1000])
    return path.name, "not a readable TIFF"


def missing_file(plates):
    path = plates.file("PL2", "A02", 2, "fitc")
    path.unlink()
    return path.name, "does not exist"


def other_shape(plates):
    path = plates.file("PL1", "A03", 1, "cy5")
    tifffile.imwrite(path, np.zeros((24, 31), np.uint16))
    return path.name, r"is \(24, 31\) uint16 but .* is \(24, 32\) uint16"


def other_dtype(plates):
    path = plates.file("PL1", "A04", 2, "bf")
    tifffile.imwrite(path, np.zeros(SHAPE, np.uint8))
    return path.name, "uint8 but"


def nan_in_float(plates):
    for key, array in plates.images.items():
        tifffile.imwrite(plates.file(*key), array.astype(np.float32))
    path = plates.file("PL2", "A01", 1, "dapi")
    bad = plates.images[("PL2", "A01", 1, "dapi")].astype(np.float32)
    bad[3, 4] = np.nan
    tifffile.imwrite(path, bad)
    return path.name, "1 NaN or infinite pixels"


def well_not_in_plate_map(plates):
    table = pd.read_csv(plates.root / "plate_map.csv")
    table[table["well"] != "A02"].to_csv(plates.root / "plate_map.csv", index=False)
    return "plate_map.csv", "no entry for plate PL1 well A02"


def plate_without_cell_type(plates):
    pd.DataFrame({"plate": ["PL1", "PL3"], "cell_type": ["lung", "lung"]}).to_csv(
        plates.root / "plates.csv", index=False
    )
    return "plates.csv", "plate\\(s\\) PL2 .* have no cell type"


def missing_column(plates):
    table = pd.read_csv(plates.root / "load_data.csv")
    table.drop(columns="PathName_Cy5").to_csv(plates.root / "load_data.csv", index=False)
    return "load_data.csv", "lacks column\\(s\\) PathName_Cy5"


def well_listed_twice(plates):
    table = pd.read_csv(plates.root / "plate_map.csv")
    pd.concat(
        [table, pd.DataFrame([{"well": "A2", "compound": "CPD-B", "concentration": 1}])]
    ).to_csv(plates.root / "plate_map.csv", index=False)
    return "plate_map.csv", "well A02 is listed twice \\(rows 3 and 10\\)"


def field_listed_twice(plates):
    table = pd.read_csv(plates.root / "load_data.csv")
    pd.concat([table, table.iloc[[5]]]).to_csv(plates.root / "load_data.csv", index=False)
    return "load_data.csv", "plate PL1 well A03 site 2 is listed twice \\(rows 7 and 50\\)"


def empty_cell_type(plates):
    pd.DataFrame({"plate": ["PL1", "PL2", "PL3"], "cell_type": ["lung", "", "lung"]}).to_csv(
        plates.root / "plates.csv", index=False
    )
    return "plates.csv", "row 3: plate PL2 has no cell_type"


def fractional_site(plates):
    table = pd.read_csv(plates.root / "load_data.csv")
    table["Metadata_Site"] = table["Metadata_Site"].astype(float)
    table.loc[3, "Metadata_Site"] = 1.5
    table.to_csv(plates.root / "load_data.csv", index=False)
    return "load_data.csv", "column 'Metadata_Site' row 5 is '1.5', not a whole number"


def edit_plate_map(plates, row, column, value):
    table = pd.read_csv(plates.root / "plate_map.csv", dtype=str)
    table.loc[row, column] = value
    table.to_csv(plates.root / "plate_map.csv", index=False)


def negative_concentration(plates):
    edit_plate_map(plates, 2, "concentration", "-0.03")
    return "plate_map.csv", "column 'concentration' row 4 is '-0.03', negative"


def infinite_concentration(plates):
    edit_plate_map(plates, 5, "concentration", "inf")
    return "plate_map.csv", "column 'concentration' row 7 is 'inf', not a finite number"


def plate_name_climbing_out(plates):
    table = pd.read_csv(plates.root / "load_data.csv")
    table["Metadata_Plate"] = table["Metadata_Plate"].replace("PL2", "../../../evil")
    table.to_csv(plates.root / "load_data.csv", index=False)
    return "load_data.csv", r"row 18: plate '../../../evil' is not a plate name \(letters, digits"


def plate_name_with_a_newline(plates):
    table = pd.read_csv(plates.root / "load_data.csv")
    table["Metadata_Plate"] = table["Metadata_Plate"].replace("PL3", "PL3\n")
    table.to_csv(plates.root / "load_data.csv", index=False)
    return "load_data.csv", r"row 34: plate 'PL3\\n' is not a plate name"


@pytest.mark.parametrize(
    "damage",
    [
        garbage_tiff,
        truncated_tiff,
        missing_file,
        other_shape,
        other_dtype,
        nan_in_float,
        well_not_in_plate_map,
        plate_without_cell_type,
        missing_column,
        well_listed_twice,
        field_listed_twice,
        empty_cell_type,
        fractional_site,
        negative_concentration,
        infinite_concentration,
        plate_name_climbing_out,
        plate_name_with_a_newline,
    ],
)
def test_bad_input_names_the_file_and_keeps_the_earlier_store(plates, damage):
    config = plates.config()  # every field of every plate, so every file is read
    out = plates.root / "stores"
    ingest(config, out, progress=False)
    before = {p.name: open_store(p).images("train")[:] for p in out.iterdir()}

    name, reason = damage(plates)
    with pytest.raises(VsgridError, match=reason) as error:
        ingest(config, out, progress=False)
    assert name in str(error.value)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        before
    )  # no temporary or partial store left
    for store_name, images in before.items():
        assert np.array_equal(open_store(out / store_name).images("train")[:], images)


def test_command_line_exit_status_and_message(plates, capsys):
    (plates.root / "config.yaml").write_text(
        "grid: {cell_types: [lung]}\n"
        "data:\n  source: ingest\n  splits: {train: 12, val: 4, test: 8}\n  test_plates: 1\n"
        f"  ingest: {{load_data: {plates.root}/load_data.csv, plate_map: {plates.root}/plate_map.csv, "
        f"plate_cell_types: {plates.root}/typo.csv, pixel_size_um: 0.65}}\n"
    )
    assert (
        main(
            [
                "ingest",
                "--config",
                str(plates.root / "config.yaml"),
                "--out",
                str(plates.root / "s"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "typo.csv does not exist" in capsys.readouterr().err
    assert not (plates.root / "s").exists()


def test_grid_cell_type_without_plates(plates):
    config = plates.config()
    config["grid"]["cell_types"] = ["lung", "breast"]
    with pytest.raises(VsgridError, match="'breast' but .*plates.csv has no plate of it"):
        ingest(config, plates.root / "stores", progress=False)


def test_a_failure_in_a_later_store_leaves_every_store_as_it_was(plates):
    """Stores are staged and swapped together: the first store is not rebuilt alone."""
    out = plates.root / "stores"
    ingest(plates.config(), out, progress=False)
    before = {p.name: open_store(p).images("test")[:] for p in out.iterdir()}
    garbage_tiff_in_toxic_well = plates.file(
        "PL3", "B02", 2, "cy5"
    )  # read by the second store only
    garbage_tiff_in_toxic_well.write_bytes(b"II*\x00garbage")
    reseeded = plates.config()
    reseeded["data"]["seed"] = 1  # other splits: a rebuilt first store would differ
    with pytest.raises(VsgridError, match="PL3_B02_s2_Cy5.tif is not a readable TIFF"):
        ingest(reseeded, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    for name, images in before.items():
        assert np.array_equal(open_store(out / name).images("test")[:], images)


def zlib_bomb(path, side=40_000, tile=4096):
    """A TIFF of side x side zeros in zlib tiles: 3 MB on disk, 3.2 GB once decoded."""
    encoded = zlib.compress(bytes(tile * tile * 2), 9)  # one tile of zeros, written for every tile
    tifffile.imwrite(
        path,
        (encoded for _ in range(math.ceil(side / tile) ** 2)),
        shape=(side, side),
        dtype=np.uint16,
        tile=(tile, tile),
        compression="zlib",
    )


def test_a_tiff_that_inflates_to_gigabytes_is_refused_from_its_header(plates):
    bomb = plates.file("PL2", "B01", 1, "dapi")
    zlib_bomb(bomb)
    (plates.root / "config.yaml").write_text(yaml.safe_dump(plates.config()))
    # The command, then its own peak memory in kB: VmHWM starts afresh at exec, where ru_maxrss
    # would carry over the forking parent's (pytest's) peak.
    measured = (
        "import re, sys; from vsgrid.cli import main; status = main(sys.argv[1:]); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); "
        "sys.exit(status)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            measured,
            "ingest",
            "--config",
            str(plates.root / "config.yaml"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"vsgrid ingest: error: image {bomb} declares 40000 x 40000 pixels, more than the 67,108,864 "
        "of any microscope field; it is damaged or not a field image"
    ]
    assert int(done.stdout.split()[-1]) < 400 * 1024  # the decoded image alone would be 3.2 GB


def test_tiffs_need_a_configured_pixel_size(plates):
    config = plates.config()
    del config["data"]["ingest"]["pixel_size_um"]
    with pytest.raises(
        VsgridError, match="^invalid configuration: data.ingest.pixel_size_um is not set"
    ):
        validate(config)


def test_an_image_at_saturation_everywhere_is_saturated_not_blank():
    thresholds = {"blank_range": 16, "saturated_fraction": 0.01}
    assert image_flag(np.full((32, 32), 65535, np.uint16), 65535, **thresholds) == "saturated"
    assert image_flag(np.full((32, 32), 255, np.uint8), 255, **thresholds) == "saturated"
    assert image_flag(np.full((32, 32), 7, np.uint16), 65535, **thresholds) == "blank"
