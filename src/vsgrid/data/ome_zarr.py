"""OME-Zarr HCS plates as ingest input: the fields table and reader of
:func:`vsgrid.data.ingest.read_fields` for ``data.ingest.ome_zarr``.

A plate (NGFF 0.4 on Zarr v2, or 0.5 on Zarr v3) lists its wells, a well its fields (images), a
field its resolution levels; vsgrid reads each field's full-resolution level, the first dataset
of its first multiscales.

- plate: the plate metadata's ``name``, else the folder's name less ``.zarr`` and ``.ome``
  (``/data/P1.ome.zarr`` -> ``P1``); two plates of one name are an error;
- well: the well's row and column names (``A/1`` -> ``A01``);
- field: the field's position in its well's image list, from 0; the ``image`` column keeps its
  path in the plate (``A/1/0``) and ``ome_zarr`` the plate's path;
- channels: ``data.ingest.channels`` names each of bf, dapi, fitc, cy5 by its ``omero`` channel
  label, looked up in every field;
- z: a single plane is read as it is; a z-stack needs ``data.ingest.z``, a plane index or
  ``max`` (maximum projection): no one projection suits both bright-field and fluorescence, so
  vsgrid does not choose one;
- t: one timepoint; a time axis of more is refused.

How it reads: each group's NGFF attributes are read with zarr and validated with ome-zarr-models
(the spec's models, 0.4 and 0.5), and pixels are read with zarr. ome-zarr's reader
(``ome_zarr.reader``) is built for viewers: it stitches a plate or a well into one lazy array,
takes every field's metadata from the first one's, and fills a missing well or field with zeros,
where an ingest must name what is missing. ome-zarr's writer makes the plates of the tests and of
``bench/ingest.py``.

Every plate, well and field and every field's array metadata is checked when the table is built,
before any pixel is decoded; a chunk that cannot be decoded is an error when its field is read.
A chunk absent from the store is, in Zarr, the array's fill value (writers leave out empty
chunks), so it reads as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import zarr
from ome_zarr_models.v04.hcs import HCSAttrs as PlateV04
from ome_zarr_models.v04.image import ImageAttrs as ImageV04
from ome_zarr_models.v04.well import WellAttrs as WellV04
from ome_zarr_models.v05.hcs import HCSAttrs as PlateV05
from ome_zarr_models.v05.image import ImageAttrs as ImageV05
from ome_zarr_models.v05.well import WellAttrs as WellV05

from vsgrid.data.ingest import FieldPlanes
from vsgrid.data.plates import normalize_well
from vsgrid.data.store import CHANNELS
from vsgrid.errors import VsgridError

# NGFF version -> the models of its plate, well and image attributes.
MODELS = {"0.4": (PlateV04, WellV04, ImageV04), "0.5": (PlateV05, WellV05, ImageV05)}


@dataclass(frozen=True)
class _Field:
    array: zarr.Array  # the full-resolution level
    selection: tuple  # per axis: the index, channel list or slice that reads the field
    project: bool  # the selection keeps the z axis (after c), to take its maximum


class OmeZarrReader:
    """Reads a field (a row of the fields table) from its OME-Zarr plate: the four channels, one
    plane each, as (4, H, W) uint16."""

    locators = ("ome_zarr", "image")

    def __init__(self):
        self.planes = FieldPlanes()
        self.fields: dict[tuple[str, str], _Field] = {}

    @property
    def saturation(self) -> int:
        return self.planes.saturation

    def __call__(self, field: Mapping) -> np.ndarray:
        plan = self.fields[(field["ome_zarr"], field["image"])]
        where = _where(field["ome_zarr"], field["well"], field["field"])
        try:
            pixels = plan.array.oindex[plan.selection]
        except Exception as exc:  # the codecs raise many types for a damaged chunk
            raise VsgridError(
                f"{where}: array {plan.array.path} cannot be read: {_one_line(exc)}"
            ) from None
        if plan.project:
            pixels = pixels.max(axis=1)
        return self.planes.to_uint16(pixels, where)


def read_plates(
    paths: list[str], channels: dict[str, str], z: int | str | None
) -> tuple[pd.DataFrame, OmeZarrReader]:
    """The fields of ``paths`` (plate, well, field, ome_zarr, image) and the reader of their pixels.

    ``channels`` and ``z`` are ``data.ingest.channels`` and ``data.ingest.z``.
    """
    reader, rows, names = OmeZarrReader(), [], {}
    for path in map(str, paths):
        plate, version, name = _open_plate(path)
        if name in names:
            raise VsgridError(
                f"OME-Zarr plates {names[name]} and {path} are both named {name!r}; "
                "plates need distinct names"
            )
        names[name] = path
        for well_path in (w.path for w in plate.plate.wells):
            well = _well_name(path, well_path)
            for k, image in enumerate(_images(path, version, well_path, well)):
                where = _where(path, well, k)
                group = _child(path, f"{well_path}/{image}", where, "its well's image list")
                field = _field(group, version, where, channels, z)
                reader.planes.declared(where, _plane_shape(field), field.array.dtype)
                reader.fields[(path, f"{well_path}/{image}")] = field
                rows.append((name, well, k, path, f"{well_path}/{image}"))
    return (
        pd.DataFrame(rows, columns=["plate", "well", "field", *OmeZarrReader.locators]),
        reader,
    )


def _open_plate(path: str):
    """A plate's validated metadata, NGFF version and name."""
    if not Path(path).exists():
        raise VsgridError(f"OME-Zarr plate {path} does not exist")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is no Zarr group
        raise VsgridError(f"OME-Zarr plate {path} is not a Zarr group: {_one_line(exc)}") from None
    attrs = group.attrs.asdict()
    meta = attrs.get("ome", attrs)
    if "plate" not in meta:
        raise VsgridError(
            f"OME-Zarr plate {path} is not an HCS plate: its attributes have no plate metadata "
            f"(keys: {', '.join(meta) or 'none'})"
        )
    version = meta.get("version") or meta["plate"].get("version")
    if version is None and group.metadata.zarr_format == 2:
        version = "0.4"  # a version is optional in 0.4's plate metadata; 0.5 requires one
    if version not in MODELS:
        raise VsgridError(
            f"OME-Zarr plate {path} is NGFF version {version}; vsgrid reads 0.4 and 0.5"
        )
    plate = _validated(MODELS[version][0], meta, f"OME-Zarr plate {path}")
    name = plate.plate.name or Path(path).name.removesuffix(".zarr").removesuffix(".ome")
    return plate, version, name


def _images(path: str, version: str, well_path: str, well: str) -> list[str]:
    """The image paths a well lists."""
    where = f"OME-Zarr plate {path} well {well}"
    group = _child(path, well_path, where, "the plate metadata")
    well_meta = _validated(MODELS[version][1], _ngff(group), where)
    return [image.path for image in well_meta.well.images]


def _field(
    group: zarr.Group, version: str, where: str, channels: dict[str, str], z: int | str | None
) -> _Field:
    """How to read one field: its full-resolution array and the selection of the four channels."""
    meta = _ngff(group)
    image = _validated(MODELS[version][2], meta, where)
    multiscale = image.multiscales[0]
    dataset = multiscale.datasets[0].path
    array = group.get(dataset)
    if not isinstance(array, zarr.Array):
        raise VsgridError(f"{where}: its full-resolution array {dataset} is missing")
    axes = [axis.name for axis in multiscale.axes]
    if array.ndim != len(axes) or not {"c", "y", "x"} <= set(axes):
        raise VsgridError(
            f"{where}: array {dataset} has shape {array.shape} on axes {', '.join(axes)}; "
            "vsgrid reads images with axes c, y and x (and optionally t, z)"
        )
    sizes = dict(zip(axes, array.shape))
    if sizes.get("t", 1) > 1:
        raise VsgridError(f"{where} has {sizes['t']} timepoints; vsgrid reads one per field")
    index = _channel_index(meta, sizes["c"], where, channels)
    selection = tuple(
        index
        if axis == "c"
        else slice(None)
        if axis in ("y", "x")
        else _plane(axis, size, where, z)
        for axis, size in sizes.items()
    )
    return _Field(array, selection, project="z" in sizes and z == "max")


def _plane(axis: str, size: int, where: str, z: int | str | None) -> int | slice:
    """The selection along an axis other than c, y and x."""
    if axis == "z" and z == "max":
        return slice(None)
    if axis == "z" and z is not None:
        if z >= size:
            raise VsgridError(f"{where} has {size} z planes; data.ingest.z {z} is not one of them")
        return z
    if size > 1:
        reason = "set data.ingest.z to a plane index or max" if axis == "z" else "vsgrid reads one"
        raise VsgridError(f"{where} has {size} planes on axis {axis}; {reason}")
    return 0


def _channel_index(meta: dict, n: int, where: str, channels: dict[str, str]) -> list[int]:
    """The position on axis c of each of ``CHANNELS``, by omero channel label."""
    labels = [c.get("label") for c in (meta.get("omero") or {}).get("channels", [])]
    if len(labels) != n:
        raise VsgridError(
            f"{where} has {len(labels)} omero channel labels for {n} channels; "
            "data.ingest.channels names channels by label"
        )
    for channel in CHANNELS:
        if channels[channel] not in labels:
            raise VsgridError(
                f"{where}: data.ingest.channels.{channel} is {channels[channel]!r}, not among its "
                f"omero channel labels ({', '.join(map(str, labels))})"
            )
    return [labels.index(channels[c]) for c in CHANNELS]


def _plane_shape(field: _Field) -> tuple[int, ...]:
    axes = zip(field.array.shape, field.selection)
    return tuple(n for n, s in axes if isinstance(s, slice))[-2:]


def _child(path: str, child: str, where: str, listed_in: str) -> zarr.Group:
    try:
        group = zarr.open_group(Path(path) / child, mode="r")
    except Exception:  # zarr raises several types for a missing or damaged group
        raise VsgridError(
            f"{where} is listed in {listed_in} but {path}/{child} is missing"
        ) from None
    return group


def _ngff(group: zarr.Group) -> dict:
    """A group's NGFF attributes: under ``ome`` from 0.5 on, at the top before."""
    attrs = group.attrs.asdict()
    return attrs.get("ome", attrs)


def _validated(model: type[pydantic.BaseModel], meta: dict, where: str):
    try:
        return model.model_validate(meta)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(map(str, error["loc"]))
        raise VsgridError(f"{where}: invalid NGFF metadata at {key}: {error['msg']}") from None


def _well_name(path: str, well_path: str) -> str:
    try:
        return normalize_well("".join(well_path.split("/")))
    except ValueError as exc:
        raise VsgridError(f"OME-Zarr plate {path}: well {well_path}: {exc}") from None


def _where(path: str, well: str, field: int) -> str:
    return f"OME-Zarr plate {path} well {well} field {field}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
