"""Write ``viscy_plate.zarr``: a tiny HCS plate written by iohub 0.2, the OME-Zarr library of
mehta-lab's VisCy virtual-staining stack, for tests/test_ome_zarr.py to ingest unchanged.

iohub 0.2 needs zarr < 3, so it lives outside vsgrid's environment. From the repository root::

    python -m venv .venv-iohub && .venv-iohub/bin/pip install 'iohub==0.2.*'
    .venv-iohub/bin/python tests/data/iohub/make_plate.py

Two wells of two fields, five channels (one vsgrid does not read), one timepoint, three z planes,
64 x 64 uint16 pixels of 0.65 um. Every pixel is :func:`value`, a formula the test recomputes.
"""

import shutil
from pathlib import Path

import numpy as np
from iohub.ngff import open_ome_zarr
from iohub.ngff.models import TransformationMeta

PLATE = Path(__file__).with_name("viscy_plate.zarr")
LABELS = ["BF", "Phase3D", "GFP", "DAPI", "Cy5"]  # not vsgrid's order: labels must steer
WELLS = [("A", "1"), ("B", "2")]
FIELDS, PLANES, SIZE = 2, 3, 64
PIXEL_UM, Z_STEP_UM = 0.65, 2.0


def value(well: int, field: int, channel, z, y, x):
    """A pixel (arrays broadcast): each well, field, channel and plane differs."""
    return y * SIZE + x + 4096 * channel + 331 * z + 17 * (FIELDS * well + field)


def main() -> None:
    shutil.rmtree(PLATE, ignore_errors=True)
    c, z, y, x = np.ogrid[: len(LABELS), :PLANES, :SIZE, :SIZE]
    scale = TransformationMeta(type="scale", scale=[1.0, 1.0, Z_STEP_UM, PIXEL_UM, PIXEL_UM])
    with open_ome_zarr(PLATE, layout="hcs", mode="w", channel_names=LABELS) as plate:
        for w, (row, column) in enumerate(WELLS):
            for f in range(FIELDS):
                position = plate.create_position(row, column, str(f))
                pixels = value(w, f, c, z, y, x).astype(np.uint16)[None]  # T, C, Z, Y, X
                position.create_image("0", pixels, transform=[scale])


if __name__ == "__main__":
    main()
