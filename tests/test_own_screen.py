"""A team's own screen, end to end: OME-Zarr HCS plates written by the ome-zarr library (not
vsgrid), ingested, level 4 run on them through Snakemake, and a virtual-stain plate
exported and read back by the ome-zarr library."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata
from shared import ROOT, snakemake

from vsgrid.config import validate
from vsgrid.data.plates import synthetic_layout, well_position
from vsgrid.data.store import CHANNELS, open_store
from vsgrid.data.synthetic import build_screen_store

LABELS = {"bf": "Brightfield", "dapi": "DAPI", "fitc": "FITC", "cy5": "Cy5"}
# Minutes each (a Snakemake run, or two ingests): the slow tier.
pytestmark = pytest.mark.slow

ROWS, COLUMNS = [chr(ord("A") + r) for r in range(16)], [str(c) for c in range(1, 25)]


def source_fields(work: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic lung plates as a screen lays them out (two plates, one field a well, 64 x 64):
    the held-out plate's DMSO, positive-control and first compound's wells, and the other
    plate's control wells, with their pixels."""
    config = validate(
        {
            "grid": {"cell_types": ["lung"], "stains": ["dapi"], "seeds": [0]},
            "data": {
                "test_plates": 1,
                "synthetic": {
                    "plates_per_cell_type": 2,
                    "field_size": 64,
                    "pixel_size_um": 1.3,
                    "workers": 1,
                },
            },
            "evaluation": {
                "screen": {
                    "enabled": True,
                    "fields_per_well": 1,
                    "compounds": 1,
                    "forest_fields": 200,
                }
            },
        }
    )
    store = open_store(build_screen_store("lung", config, work, progress=False))
    fields = pd.concat([store.split_metadata(s) for s in ("train", "test")], ignore_index=True)
    return fields, np.concatenate([store.images(s)[:] for s in ("train", "test")])


def write_plates(root: Path, fields: pd.DataFrame, images: np.ndarray) -> list[Path]:
    """Each plate as an OME-Zarr 0.5 HCS plate, by ome-zarr's writer; the plate map and cell types."""
    fmt, paths = FormatV05(), []
    omero = {
        "channels": [
            {
                "label": LABELS[c],
                "color": "FFFFFF",
                "window": {"start": 0, "end": 65535, "min": 0, "max": 65535},
            }
            for c in CHANNELS
        ]
    }
    for plate, wells in fields.groupby("plate"):
        path = root / f"{plate}.ome.zarr"
        group = zarr.open_group(path, mode="w", zarr_format=fmt.zarr_format)
        places = [f"{ROWS[r]}/{COLUMNS[c]}" for r, c in (well_position(w) for w in wells["well"])]
        write_plate_metadata(group, ROWS, COLUMNS, places, fmt=fmt, name=plate)
        for place, index in zip(places, wells.index):
            well = group.require_group(place)
            write_well_metadata(well, [{"path": "0"}], fmt=fmt)
            write_image(
                images[index],
                well.require_group("0"),
                scale_factors=[2],
                fmt=fmt,
                axes="cyx",
                omero=omero,
            )
        paths.append(path)
    synthetic_layout().to_csv(root / "plate_map.csv", index=False)
    pd.DataFrame({"plate": sorted(fields["plate"].unique()), "cell_type": "lung"}).to_csv(
        root / "plate_cell_types.csv", index=False
    )
    return paths


@pytest.fixture(scope="module")
def own_screen(tmp_path_factory):
    """The .test grid's settings on the ingested plates: lung, DAPI, level 4 on, run up to the
    screen tables. Levels 1-3's tables and figures of an ingested grid claim nothing more than the
    synthetic .test grid's (tests/test_workflow.py): leaving them out spares a training, its
    inferences, the evaluations and the figures."""
    work = tmp_path_factory.mktemp("own screen")
    plates = write_plates(work, *source_fields(work / "source"))
    config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    config["grid"].update(cell_types=["lung"], stains=["dapi"])
    config["data"] = {
        "dir": "data",
        "source": "ingest",
        "seed": 0,
        "test_plates": 1,
        "splits": {"train": 16, "val": 8, "test": 8},
        "ingest": {
            "ome_zarr": [str(p) for p in plates],
            "channels": LABELS,
            "plate_map": str(work / "plate_map.csv"),
            "plate_cell_types": str(work / "plate_cell_types.csv"),
            "pixel_size_um": 1.3,
        },
    }
    config["evaluation"]["screen"].update(compounds=None, forest_fields=200)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(work, "screen_tables")
    return work


def test_level_4_runs_on_ingested_plates_and_says_there_is_no_truth(own_screen):
    tables = own_screen / "results" / "tables"
    screen = pd.read_csv(tables / "screen.csv")
    assert set(screen["cell_type"]) == {"lung"}
    # the non-toxic-trained model, the one trained on both phenotypes of the ingested training
    # plates (its store ingested as lung-both), and level 4's three controls, made from the
    # ingested plates' real stain
    controls = screen["control"].fillna("")
    assert set(screen.loc[controls == "", "model"]) == {
        "lung-nontoxic.dapi.s0",
        "lung-both.dapi.s0",
    }
    assert set(controls) == {"", "oracle", "degraded", "affine"}
    assert (screen["value"].notna() | screen["reason"].notna()).all()
    # the real stain's wells, from the plate map: the .test grid's two-epoch model segments too
    # little for most metrics, and each of those says why (above)
    real = pd.read_parquet(own_screen / "results/screen/reference/lung/dapi.wells.parquet")
    assert set(real["compound"]) == {"DMSO", "etoposide", "staurosporine", "CPD-01"}
    assert (real.loc[real["compound"] == "DMSO", "cell_count"] > 0).all()
    assert {"activity_map", "retrieval_map"} <= set(
        screen.loc[screen["readout"] == "profile", "metric"]
    )
    verdicts = pd.read_csv(tables / "screen_verdicts.csv")
    assert len(verdicts) == 3 + 2 and set(verdicts["verdict"]) <= {  # controls, models
        "replaceable",
        "not replaceable",
        "undecided",
    }
    truth = pd.read_csv(tables / "screen_truth.csv")
    assert truth["true_log_ec50"].isna().all()
    assert truth["reason"].str.contains("no true EC50 is known").all()
    outcome = (tables / "screen_outcome.txt").read_text()
    assert "no true EC50 is known" in outcome and "nan" not in outcome
    store = open_store(own_screen / "data" / "screen" / "lung.zarr")
    assert store.attrs["provenance"]["source"] == "ingest" and "true_ec50_um" not in store.attrs
    both = open_store(
        own_screen / "data" / "lung-both.zarr"
    )  # drawn from wells of either phenotype
    assert set(both.split_metadata("train")["phenotype"]) == {"nontoxic", "toxic"}


def test_a_virtual_stain_exported_as_a_plate_reads_back_with_ome_zarr(own_screen):
    """The screen run's virtual DAPI beside the real channels, one OME-Zarr plate per plate of
    the screen, read back by the ome-zarr library: the real channels are the store's pixels."""
    model = "lung-nontoxic.dapi.s0"
    folder = own_screen / "results" / "export" / model / "lung-screen"
    # by its folder: export_all would also train and export the grid's other runs (test_export.py
    # checks that export_all plans every run's and screen run's export)
    snakemake(own_screen, str(folder.relative_to(own_screen)))
    store = open_store(own_screen / "data" / "screen" / "lung.zarr")
    meta = store.split_metadata("test")
    exported = sorted(folder.glob("*.ome.zarr"))
    assert [p.name for p in exported] == [f"{p}.ome.zarr" for p in sorted(meta["plate"].unique())]
    first = meta.iloc[0]
    row, column = well_position(first["well"])
    where = exported[0] / ROWS[row] / COLUMNS[column] / "0"  # its well's first field
    field = next(Reader(parse_url(str(where)))())
    pixels = np.asarray(field.data[0])  # (t, c, z, y, x): one time point, one plane
    assert pixels.shape[:3] == (1, 5, 1)
    assert (pixels[0, :4, 0] == store.images("test")[0]).all()
    assert field.metadata["channel_names"][4] == f"DAPI (virtual, {model})"
