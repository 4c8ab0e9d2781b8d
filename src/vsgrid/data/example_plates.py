"""Example plates of your own: synthetic lung plates written as OME-Zarr HCS plates.

``vsgrid example-plates --config F --out DIR`` writes three lung plates of the synthetic generator
as F sets it up (field size, pixel size, seed; two plates to train on, the last held out) as
OME-Zarr 0.5 HCS plates, by vsgrid's writer (:mod:`vsgrid.data.ome_zarr_writer`, metadata by the
ome-zarr library), as a microscope's exporter would: every field at its well, channels named by
``omero`` labels, the pixel size in the ``scale`` of y and x (in micrometers; the TIFFs' is in the
config, as TIFFs declare none). Beside them: the plate map, the plates' cell types and a config
that ingests them and runs a small grid with level 4, so that the walkthrough of the README's
"Your own plates" runs before any plate of yours exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml
from tqdm import tqdm

from vsgrid.data.ome_zarr_writer import (
    FORMATS,
    create_plate,
    place_fields,
    pyramid_factors,
    write_field,
)
from vsgrid.data.plates import INTENSITY_COLUMNS, synthetic_layout, well_position
from vsgrid.data.store import CHANNELS, U16_MAX
from vsgrid.data.synthetic import Field, Optics, Profile, field_table, render_one
from vsgrid.files import atomic_path
from vsgrid.layout import plate_path

CELL_TYPE = "lung"
LABELS = {"bf": "Brightfield", "dapi": "DAPI", "fitc": "FITC", "cy5": "Cy5"}
OMERO = {
    "channels": [
        {
            "label": LABELS[c],
            "color": "FFFFFF",
            "window": {"start": 0, "end": U16_MAX, "min": 0, "max": U16_MAX},
        }
        for c in CHANNELS
    ]
}
# DMSO (1-2), the first compound (3-4) and the positive controls (23-24): a screen in little.
KEPT_COLUMNS = (1, 2, 3, 4, 23, 24)
# Four fields a well, as config/quick.yaml images its lung screen: about 60 cells a DMSO well, enough
# for the real stain's phenotype score to pass as an assay (one field leaves its Z' CI below 0.5).
FIELDS_PER_WELL = 4
SETTINGS = {  # a grid that runs on a laptop in minutes (config/quick.yaml's small network)
    "grid": {"cell_types": [CELL_TYPE], "stains": ["dapi"], "seeds": [0]},
    "network": {
        "ngf": 8,
        "n_downsample": 2,
        "n_blocks": 2,
        "ndf": 8,
        "n_layers_D": 2,
        "lambda_l1": 100,
    },
    "train": {
        "batch_size": 2,
        "crop_size": 48,
        "lr": 0.001,
        "max_epochs": 8,
        "lr_decay_start": 4,
        "patience": 4,
        "workers": 0,
    },
    "segmentation": {"backend": "classical"},
    "features": {"workers": 1, "accelerator": "none"},
    "evaluation": {"screen": {"enabled": True, "stains": ["dapi"], "bootstrap_resamples": 50}},
}


def write_example_plates(
    config: dict, out: str | Path, *, tiff: bool = False, progress: bool = True
) -> Path:
    """Write the example plates of ``config``'s synthetic generator (OME-Zarr HCS plates, or with
    ``tiff`` one TIFF per field and channel and a LoadData CSV), their CSVs and ``config.yaml``
    into ``out`` (a new folder, written beside it and moved into place), paths in the config
    relative to the current folder."""
    out, data = Path(out), config["data"]
    synthetic = {**data["synthetic"], "plates_per_cell_type": 3, "fields_per_well": FIELDS_PER_WELL}
    config = {**config, "data": {**data, "synthetic": synthetic}}
    table = field_table(CELL_TYPE, config)
    table = table[[well_position(w)[1] + 1 in KEPT_COLUMNS for w in table["well"]]]
    with atomic_path(out) as tmp:
        plates = (_TiffPlates if tiff else _OmeZarrPlates)(tmp, table, synthetic["pixel_size_um"])
        for _, in_well in tqdm(
            table.groupby(["plate", "well"], sort=True), disable=not progress, unit="well"
        ):
            plates.add_well(in_well, [_render(config, row) for row in in_well.itertuples()])
        synthetic_layout().to_csv(tmp / "plate_map.csv", index=False)
        names = sorted(table["plate"].unique())
        pd.DataFrame({"plate": names, "cell_type": CELL_TYPE}).to_csv(
            tmp / "plate_cell_types.csv", index=False
        )
        (tmp / "config.yaml").write_text(
            yaml.safe_dump(_config(out, plates.inputs(out, names)), sort_keys=False)
        )
    return out


def _render(config: dict, row) -> np.ndarray:
    """One field of ``field_table``'s ``row``, (4, H, W) uint16, as the synthetic stores hold it."""
    synthetic = config["data"]["synthetic"]
    field = Field(
        None,
        "test",
        0,
        row.plate,
        row.well,
        row.field,
        row.compound,
        row.toxicity,
        row.density_factor,
        tuple(getattr(row, c) for c in INTENSITY_COLUMNS),
    )
    profile = Profile(**synthetic["cell_types"][CELL_TYPE])
    shape = (synthetic["field_size"],) * 2
    return render_one(
        field,
        config["data"]["seed"],
        CELL_TYPE,
        profile,
        shape,
        synthetic["pixel_size_um"],
        Optics(),
    )[0]


class _OmeZarrPlates:
    """OME-Zarr 0.5 HCS plates, one per plate."""

    def __init__(self, folder: Path, table: pd.DataFrame, pixel_size_um: float):
        self.fmt, self.pixel_size_um = FORMATS["0.5"], pixel_size_um
        self.fields = place_fields(table)
        self.plates = {
            plate: create_plate(plate_path(folder, plate), plate, fields, self.fmt)
            for plate, fields in self.fields.groupby("plate")
        }

    def add_well(self, fields: pd.DataFrame, images: list[np.ndarray]) -> None:
        """A well's ``fields`` (rows of the table) and their (4, H, W) ``images``."""
        factors = pyramid_factors(images[0].shape[-2:])
        placed = self.fields.loc[fields.index]
        for plate, path, image in zip(placed["plate"], placed["path"], images):
            group = self.plates[plate].require_group(path)
            write_field(
                group,
                image[None, :, None],
                fmt=self.fmt,
                size=self.pixel_size_um,
                factors=factors,
                omero=OMERO,
            )

    def inputs(self, out: Path, plates: list[str]) -> dict:
        """data.ingest's keys for the plates: their paths; their pixel size is their own."""
        return {"ome_zarr": [str(plate_path(out, p)) for p in plates]}


class _TiffPlates:
    """One TIFF per field and channel and the CellProfiler LoadData CSV that lists them."""

    def __init__(self, folder: Path, table: pd.DataFrame, pixel_size_um: float):
        self.folder, self.rows, self.pixel_size_um = folder, [], pixel_size_um

    def add_well(self, fields: pd.DataFrame, images: list[np.ndarray]) -> None:
        (self.folder / "images").mkdir(parents=True, exist_ok=True)
        plate, well = fields["plate"].iloc[0], fields["well"].iloc[0]
        for site, image in enumerate(images, start=1):
            row = {"Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Site": site}
            for channel, plane in zip(CHANNELS, image):
                name = f"{plate}_{well}_s{site}_{LABELS[channel]}.tif"
                tifffile.imwrite(self.folder / "images" / name, plane)
                row |= {
                    f"FileName_{LABELS[channel]}": name,
                    f"PathName_{LABELS[channel]}": "images",
                }
            self.rows.append(row)
        pd.DataFrame(self.rows).to_csv(self.folder / "load_data.csv", index=False)

    def inputs(self, out: Path, plates: list[str]) -> dict:
        """data.ingest's keys for the TIFFs: the LoadData CSV and the pixel size they lack."""
        return {"load_data": str(out / "load_data.csv"), "pixel_size_um": self.pixel_size_um}


def _config(out: Path, inputs: dict) -> dict:
    """A config that ingests the example plates (``inputs``: their keys of data.ingest, paths
    under ``out``) and runs a small grid."""
    data = {
        "source": "ingest",
        "dir": str(out / "stores"),
        "splits": {"train": 48, "val": 16, "test": 16},
        "test_plates": 1,
        "ingest": {
            **inputs,
            "plate_map": str(out / "plate_map.csv"),
            "plate_cell_types": str(out / "plate_cell_types.csv"),
            "channels": LABELS,
        },
    }
    return {**SETTINGS, "data": data, "results": {"dir": str(Path("results") / out.name)}}
