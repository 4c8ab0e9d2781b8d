"""Example plates of your own: synthetic lung plates written as OME-Zarr HCS plates.

``vsgrid example-plates --config F --out DIR`` writes, with the ome-zarr library, three lung plates
of the synthetic generator as F sets it up (field size, pixel size, seed; two plates to train on,
the last held out) as a microscope's exporter would: every
field at its well, channels named by ``omero`` labels. Beside them: the plate map, the plates'
cell types and a config that ingests them and runs a small grid with level 4, so that the
walkthrough of the README's "Your own plates" runs before any plate of yours exists.
"""

from __future__ import annotations

import string
from pathlib import Path

import pandas as pd
import yaml
import zarr
from tqdm import tqdm

from vsgrid.data.plates import INTENSITY_COLUMNS, synthetic_layout, well_position
from vsgrid.data.store import CHANNELS
from vsgrid.data.synthetic import Field, Optics, Profile, field_table, render_one
from vsgrid.files import atomic_path
from vsgrid.grid import COLUMNS, ROWS

CELL_TYPE = "lung"
LABELS = {"bf": "Brightfield", "dapi": "DAPI", "fitc": "FITC", "cy5": "Cy5"}
# DMSO (1-2), the first compound (3-4) and the positive controls (23-24): a screen in little.
KEPT_COLUMNS = (1, 2, 3, 4, 23, 24)
# Four fields a well, as config/quick.yaml images its lung screen: about 60 cells a DMSO well, enough
# for the real stain's phenotype score to pass as an assay (one field leaves its Z' CI below 0.5).
FIELDS_PER_WELL = 4
SETTINGS = {  # a grid that runs on a laptop in minutes (config/quick.yaml's small network)
    "grid": {"cell_types": [CELL_TYPE], "stains": ["dapi"], "seeds": [0]},
    "network": {"ngf": 8, "n_downsample": 2, "n_blocks": 2, "ndf": 8, "n_layers_D": 2,
                "lambda_l1": 100},
    "train": {"batch_size": 2, "crop_size": 48, "lr": 0.001, "max_epochs": 8, "lr_decay_start": 4,
              "patience": 4, "workers": 0},
    "segmentation": {"backend": "classical"},
    "features": {"workers": 1, "accelerator": "none"},
    "evaluation": {"screen": {"enabled": True, "stains": ["dapi"], "bootstrap_resamples": 50}},
}  # fmt: skip


def write_example_plates(config: dict, out: str | Path, *, progress: bool = True) -> Path:
    """Write the example plates of ``config``'s synthetic generator, their CSVs and
    ``config.yaml`` into ``out`` (a new folder, written beside it and moved into place), paths in
    the config relative to the current folder."""
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    out, data = Path(out), config["data"]
    synthetic = {**data["synthetic"], "plates_per_cell_type": 3, "fields_per_well": FIELDS_PER_WELL}
    config = {**config, "data": {**data, "synthetic": synthetic}}
    size = synthetic["field_size"]
    table = field_table(CELL_TYPE, config)
    table = table[[well_position(w)[1] + 1 in KEPT_COLUMNS for w in table["well"]]]
    profile = Profile(**config["data"]["synthetic"]["cell_types"][CELL_TYPE])
    omero = {"channels": [{"label": LABELS[c], "color": "FFFFFF",
                           "window": {"start": 0, "end": 65535, "min": 0, "max": 65535}}
                          for c in CHANNELS]}  # fmt: skip
    rows, columns = list(string.ascii_uppercase[:ROWS]), [str(c + 1) for c in range(COLUMNS)]
    fmt = FormatV05()
    with atomic_path(out) as tmp:
        for plate, fields in table.groupby("plate"):
            group = zarr.open_group(tmp / f"{plate}.ome.zarr", mode="w", zarr_format=3)
            wells = fields.groupby("well", sort=True)
            places = {w: f"{w[0]}/{int(w[1:])}" for w, _ in wells}
            write_plate_metadata(group, rows, columns, list(places.values()), fmt=fmt, name=plate)
            for well_name, in_well in tqdm(wells, desc=plate, disable=not progress, unit="well"):
                well = group.require_group(places[well_name])
                paths = [{"path": str(k)} for k in range(len(in_well))]
                write_well_metadata(well, paths, fmt=fmt)
                for k, row in enumerate(in_well.itertuples()):
                    field = Field(None, "test", 0, row.plate, row.well, row.field, row.compound,
                                  row.toxicity, row.density_factor,
                                  tuple(getattr(row, c) for c in INTENSITY_COLUMNS))  # fmt: skip
                    image, _ = render_one(field, config["data"]["seed"], CELL_TYPE, profile,
                                          (size, size), synthetic["pixel_size_um"], Optics())  # fmt: skip
                    write_image(image, well.require_group(str(k)), scale_factors=[2], fmt=fmt,
                                axes="cyx", omero=omero)  # fmt: skip
        synthetic_layout().to_csv(tmp / "plate_map.csv", index=False)
        plates = sorted(table["plate"].unique())
        pd.DataFrame({"plate": plates, "cell_type": CELL_TYPE}).to_csv(
            tmp / "plate_cell_types.csv", index=False
        )
        settings = _config(out, plates, synthetic["pixel_size_um"])
        (tmp / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return out


def _config(out: Path, plates: list[str], pixel_size_um: float) -> dict:
    """A config that ingests the example plates (paths under ``out``) and runs a small grid."""
    data = {
        "source": "ingest",
        "dir": str(out / "stores"),
        "splits": {"train": 48, "val": 16, "test": 16},
        "test_plates": 1,
        "ingest": {
            "ome_zarr": [str(out / f"{p}.ome.zarr") for p in plates],
            "plate_map": str(out / "plate_map.csv"),
            "plate_cell_types": str(out / "plate_cell_types.csv"),
            "channels": LABELS,
            "pixel_size_um": pixel_size_um,
        },
    }
    return {**SETTINGS, "data": data, "results": {"dir": str(Path("results") / out.name)}}
