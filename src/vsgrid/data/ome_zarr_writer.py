"""OME-Zarr HCS plates as vsgrid writes them: ``vsgrid export``'s (:mod:`vsgrid.report.export`)
and the example plates' (:mod:`vsgrid.data.example_plates`).

A plate is OME-Zarr 0.5 (Zarr v3), or 0.4 (Zarr v2) for readers that know no other (iohub 0.2,
and VisCy through it), its metadata written by ``ome-zarr``, its pixels by zarr. Every field is
(t, c, z, y, x), one time point and one plane, with its levels named ``0``, ``1``, ...: the layout
iohub and VisCy index. Each field carries a small pyramid, so that a viewer showing the whole
plate reads a thumbnail per field, and one chunk per channel and level, compressed and
checksummed as vsgrid's own arrays. Which channels a field has and how they show (``omero``) is
the caller's.
"""

from __future__ import annotations

import string
from pathlib import Path

import numcodecs
import numpy as np
import pandas as pd
import zarr
from ome_zarr import writer
from ome_zarr.format import Format, FormatV04, FormatV05
from skimage.transform import downscale_local_mean

from vsgrid import arrays
from vsgrid.data.plates import well_position

# A plate view shows the coarsest level of every field: halve down to about this many pixels.
THUMBNAIL_PX = 64
# The NGFF versions vsgrid writes: 0.5 (Zarr v3), and 0.4 (Zarr v2) for iohub 0.2 and VisCy.
FORMATS: dict[str, Format] = {"0.5": FormatV05(), "0.4": FormatV04()}
# iohub reads any array as (t, c, z, y, x), padding a shorter shape on the left: a (c, y, x) field
# would read as five planes of one channel.
AXES = ["t", "c", "z", "y", "x"]
# Zstd with its checksum, as vsgrid's own arrays, in each Zarr format's terms: numcodecs' codec for
# Zarr v2 (what zarr-python 2, under iohub 0.2, decodes), and the "/" chunk keys of NGFF 0.4.
ARRAY_OPTIONS = {
    3: {"compressors": arrays.COMPRESSORS, "dimension_names": AXES},
    2: {
        "compressors": numcodecs.Zstd(level=3, checksum=True),
        "chunk_key_encoding": {"name": "v2", "separator": "/"},
    },
}


def place_fields(fields: pd.DataFrame) -> pd.DataFrame:
    """Where each field goes in its plate. ``fields`` has a row per field with its ``plate``,
    ``well`` (``A01``) and ``field`` (any numbers, unique in a well); the result adds ``row``
    (A..P), ``column`` (1..24) and ``image`` (the field's number in its well, ``0``, ``1``, ...
    in the order of ``field``), and replaces ``well`` by its path in the plate (``A/1``) and adds
    ``path``, the field's (``A/1/0``). A well that is no well raises ValueError."""
    positions = [well_position(well) for well in fields["well"]]
    fields = fields.assign(
        plate=fields["plate"].astype(str),
        row=[string.ascii_uppercase[r] for r, _ in positions],
        column=[str(c + 1) for _, c in positions],
    )
    fields["well"] = fields["row"] + "/" + fields["column"]
    number = fields.groupby(["plate", "well"])["field"].rank(method="first").astype(int) - 1
    fields["image"] = number.astype(str)
    fields["path"] = fields["well"] + "/" + fields["image"]
    return fields


def create_plate(path: Path, name: str, fields: pd.DataFrame, fmt: Format) -> zarr.Group:
    """A plate's group with its NGFF plate and well metadata, for ``fields`` placed by
    :func:`place_fields` (its own)."""
    root = zarr.open_group(path, mode="w", zarr_format=fmt.zarr_format)
    rows = string.ascii_uppercase[: string.ascii_uppercase.index(fields["row"].max()) + 1]
    columns = [str(c) for c in range(1, fields["column"].astype(int).max() + 1)]
    wells = sorted(fields["well"].unique(), key=lambda w: (w[0], int(w[2:])))
    per_well = fields.groupby("well")["image"].apply(lambda images: sorted(images, key=int))
    writer.write_plate_metadata(
        root,
        list(rows),
        columns,
        wells,
        name=name,
        field_count=int(per_well.map(len).max()),
        fmt=fmt,
    )
    for well in wells:
        images = [{"path": image} for image in per_well[well]]
        writer.write_well_metadata(root.require_group(well), images, fmt=fmt)
    return root


def pyramid_factors(shape: tuple[int, int]) -> tuple[int, ...]:
    """Downsampling factors 2, 4, ... while the field's short side stays at least
    :data:`THUMBNAIL_PX` (none for a field already that small)."""
    levels = int(np.log2(max(min(shape) / THUMBNAIL_PX, 1)))
    return tuple(2**k for k in range(1, levels + 1))


def downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Each ``factor`` x ``factor`` block's mean; a margin that fills no block is left out, so
    that a level's pixel is exactly ``factor`` times the field's."""
    height, width = (n - n % factor for n in image.shape[-2:])
    blocks = (1,) * (image.ndim - 2) + (factor, factor)
    return downscale_local_mean(image[..., :height, :width], blocks).round().astype(image.dtype)


def write_field(
    group: zarr.Group, image: np.ndarray, *, fmt: Format, size: float, factors, omero: dict
) -> None:
    """One field (t, c, z, y, x) as a multiscale image of pixel ``size`` um, downscaled by
    ``factors`` (:func:`pyramid_factors`): a chunk per channel and level, the levels named 0, 1,
    ... (iohub's and VisCy's full resolution is the array "0")."""
    datasets = []
    levels = [image, *(downscale(image, factor) for factor in factors)]
    for level, (factor, data) in enumerate(zip((1, *factors), levels)):
        group.create_array(
            str(level),
            shape=data.shape,
            dtype=data.dtype,
            chunks=(1, 1, 1, *data.shape[-2:]),
            config=arrays.ALWAYS_WRITE,
            **ARRAY_OPTIONS[fmt.zarr_format],
        )[...] = data
        scale = [1.0, 1.0, 1.0, size * factor, size * factor]
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    units = {"y": "micrometer", "x": "micrometer"}
    writer.write_multiscales_metadata(
        group, datasets, fmt=fmt, axes=AXES, axes_units=units, name="image"
    )
    writer.add_metadata(group, {"omero": omero}, fmt=fmt)
