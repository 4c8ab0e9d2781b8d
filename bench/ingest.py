"""OME-Zarr ingest speed: wall and CPU seconds per field, at a field size.

    .venv/bin/python bench/ingest.py [--size 1080] [--fields 36] [--out /tmp/vsgrid-ingest]

Writes two OME-Zarr HCS plates (NGFF 0.5, ome-zarr's writer, its default chunks and codec) of
synthetic lung fields, 4 channels of uint16 each, half in DMSO wells and half in etoposide wells,
then times, in this process, building the fields table (every plate's, well's and field's
metadata read and checked) and the whole ingest into the two stores of one cell type (decoding,
checking, re-encoding and writing every field once). CPU seconds count every thread.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from measure import arguments
from ome_zarr.format import FormatV05
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

from vsgrid.config import load_config, validate
from vsgrid.data.ingest import ingest, read_fields
from vsgrid.data.store import CHANNELS
from vsgrid.data.synthetic import Profile, render_field, sample_cells
from vsgrid.seeds import rng_for

ROOT = Path(__file__).resolve().parents[1]
TINY = {"size": 64, "fields": 8}
WELLS = {"A/1": ("DMSO", 0), "A/2": ("Etoposide", 10)}
DISTINCT = 4  # fields rendered; the plates repeat them (rendering 1080 x 1080 is the slow part)


def rendered(size: int) -> list[np.ndarray]:
    config = load_config(ROOT / "config" / "config.yaml")
    lung = Profile(**config["data"]["synthetic"]["cell_types"]["lung"])
    fields = []
    for k in range(DISTINCT):
        rng = rng_for(0, "bench-ingest", size, k)
        cells = sample_cells(rng, lung, 0.0, (size, size), 0.65)
        fields.append(render_field(cells, (size, size), 0.65, rng)[0])
    return fields


def write_plates(out: Path, size: int, per_well: int) -> list[str]:
    fmt, fields, plates = FormatV05(), rendered(size), []
    window = {"start": 0, "end": 65535, "min": 0, "max": 65535}
    omero = {"channels": [{"label": c, "color": "FFFFFF", "window": window} for c in CHANNELS]}
    for plate in ("P1", "P2"):
        path = out / f"{plate}.ome.zarr"
        group = zarr.open_group(path, mode="w", zarr_format=fmt.zarr_format)
        write_plate_metadata(group, ["A"], ["1", "2"], list(WELLS), fmt=fmt, name=plate)
        for w, well in enumerate(WELLS):
            well_group = group.require_group(well)
            write_well_metadata(well_group, [{"path": str(k)} for k in range(per_well)], fmt=fmt)
            for k in range(per_well):
                pixels = fields[(w * per_well + k) % DISTINCT]
                write_image(
                    pixels,
                    well_group.require_group(str(k)),
                    scale_factors=[],
                    fmt=fmt,
                    axes="cyx",
                    omero=omero,
                )
        plates.append(str(path))
    return plates


def config_of(out: Path, plates: list[str], per_well: int) -> dict:
    pd.DataFrame(
        [(f"A0{w[-1]}", c, x) for w, (c, x) in WELLS.items()],
        columns=["well", "compound", "concentration"],
    ).to_csv(out / "plate_map.csv", index=False)
    pd.DataFrame({"plate": ["P1", "P2"], "cell_type": "lung", "test": [False, True]}).to_csv(
        out / "plates.csv", index=False
    )
    channels = {c: c for c in CHANNELS}
    return validate(
        {
            "grid": {"cell_types": ["lung"]},
            "data": {
                "source": "ingest",
                "splits": {"train": per_well - 1, "val": 1, "test": per_well},
                "ingest": {
                    "ome_zarr": plates,
                    "plate_map": str(out / "plate_map.csv"),
                    "plate_cell_types": str(out / "plates.csv"),
                    "channels": channels,
                    # ome-zarr writes its plates' scale without units: a size they do not declare
                    "pixel_size_um": 0.65,
                },
            },
        }
    )


def timed(function, *args, **kwargs) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1080, help="field side in pixels")
    parser.add_argument("--fields", type=int, default=36, help="fields in all (a multiple of 4)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/vsgrid-ingest"), help="scratch")
    args = arguments(parser, TINY)
    if args.fields < 8 or args.fields % 4:
        parser.error("--fields must be a multiple of 4, at least 8")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    per_well = args.fields // 4
    config = config_of(args.out, write_plates(args.out, args.size, per_well), per_well)
    data = config["data"]
    scan_wall, _ = timed(read_fields, data["ingest"], data["phenotype_rule"])
    wall, cpu = timed(ingest, config, args.out / "stores", progress=False)
    n = args.fields
    print(f"OME-Zarr ingest, {n} fields of {args.size} x {args.size} (4 channels, uint16):")
    print(
        f"fields table (every plate's, well's and field's metadata): {1e3 * scan_wall / n:.2f} ms per field"
    )
    print(
        f"whole ingest: {wall / n:.3f} s wall, {cpu / n:.3f} s CPU per field ({wall:.1f} s in all)"
    )
    shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
