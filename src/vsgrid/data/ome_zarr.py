"""OME-Zarr HCS plates as ingest input: the fields table and reader of
:func:`vsgrid.data.ingest.read_fields` for ``data.ingest.ome_zarr``.

A plate (NGFF 0.4 on Zarr v2, or 0.5 on Zarr v3) lists its wells, a well its fields (images), a
field its resolution levels; vsgrid reads each field's full-resolution level, the first dataset
of its first multiscales.

- plate: the plate metadata's ``name``, else the folder's name less ``.zarr`` and ``.ome``
  (``/data/P1.ome.zarr`` -> ``P1``); two plates of one name are an error, and so is a name that
  is no :data:`~vsgrid.data.plates.PLATE_NAME` (it becomes part of file names);
- well: the well's row and column names (``A/1`` -> ``A01``);
- field: the field's position in its well's image list, from 0; the ``image`` column keeps its
  path in the plate (``A/1/0``) and ``ome_zarr`` the plate's path;
- axes: t, c, z, y and x by name in any case (iohub, VisCy's library, writes ``T, C, Z, Y, X``),
  else by type (time, channel; the space axes by their place, z, y, x last as the spec orders
  them);
- channels: ``data.ingest.channels`` names each of bf, dapi, fitc, cy5 by its ``omero`` channel
  label, looked up in every field;
- z: a single plane is read as it is; a z-stack needs ``data.ingest.z``, a plane index or
  ``max`` (maximum projection): no one projection suits both bright-field and fluorescence, so
  vsgrid does not choose one;
- an entry of ``data.ingest.ome_zarr`` may be a mapping ``{path, channels, z}``: that plate's own
  channel map and z (plates of two instruments), in place of ``data.ingest.channels`` and ``z``;
- t: one timepoint; a time axis of more is refused;
- pixel size: the full-resolution dataset's ``scale`` on y and x, times the multiscale's own
  scale where it has one, in the axes' unit (nanometer, micrometer or millimeter); a scale on
  axes without a unit declares no size. Every field must declare the size
  ``data.ingest.pixel_size_um`` sets, within 1 %; unset, the fields must agree with each other and
  their size is the stores'.

How it reads: each group's NGFF attributes are read with zarr and validated with ome-zarr-models
(the spec's models, 0.4 and 0.5; its warnings about metadata it repairs are not shown), and pixels
are read with zarr. ome-zarr's reader
(``ome_zarr.reader``) is built for viewers: it stitches a plate or a well into one lazy array,
takes every field's metadata from the first one's, and fills a missing well or field with zeros,
where an ingest must name what is missing. ome-zarr's writer makes the plates of the tests and of
``bench/ingest.py``.

Every plate, well and field and every field's array metadata is checked when the table is built,
before any pixel is decoded; a chunk that cannot be decoded is an error when its field is read.
So is a chunk absent from the store: Zarr would read it as the fill value (writers may leave out
a chunk that is all fill), but a camera's field is never all zeros, so at full resolution a
missing chunk is lost data (the plate is read through :func:`vsgrid.arrays.open_group`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import zarr
from ome_zarr_models.exceptions import ValidationWarning
from ome_zarr_models.v04.hcs import HCSAttrs as PlateV04
from ome_zarr_models.v04.image import ImageAttrs as ImageV04
from ome_zarr_models.v04.well import WellAttrs as WellV04
from ome_zarr_models.v05.hcs import HCSAttrs as PlateV05
from ome_zarr_models.v05.image import ImageAttrs as ImageV05
from ome_zarr_models.v05.well import WellAttrs as WellV05

from vsgrid import arrays
from vsgrid.data.planes import FieldPlanes
from vsgrid.data.plates import PLATE_NAME_RULE, is_plate_name, normalize_well
from vsgrid.data.store import CHANNELS
from vsgrid.errors import VsgridError

# NGFF version -> the models of its plate, well and image attributes.
MODELS = {"0.4": (PlateV04, WellV04, ImageV04), "0.5": (PlateV05, WellV05, ImageV05)}
AXES = ("t", "c", "z", "y", "x")
TYPED_AXES = {"time": "t", "channel": "c"}
IDENTITY = {"type": "identity"}
UNITS_PER_UM = {"nanometer": 1000.0, "micrometer": 1.0, "millimeter": 0.001}
# How far two pixel sizes may differ and still be one: rounding in a writer, not another objective.
PIXEL_SIZE_TOLERANCE = 0.01


@dataclass(frozen=True)
class _Field:
    array: zarr.Array  # the full-resolution level
    selection: tuple  # per axis: the index, channel list or slice that reads the field
    project: bool  # the selection keeps the z axis (after c), to take its maximum
    pixel_size_um: float | None  # as the field declares it; None: it declares none


@dataclass(frozen=True)
class _Settings:
    """How to read a plate's fields, and the config keys that say so (for messages)."""

    channels: dict[str, str]
    z: int | str | None
    channels_key: str  # data.ingest.channels, or the plate's own data.ingest.ome_zarr[k].channels
    z_key: str


class OmeZarrReader:
    """Reads a field (a row of the fields table) from its OME-Zarr plate: the four channels, one
    plane each, as (4, H, W) uint16."""

    locators = ("ome_zarr", "image")

    def __init__(self):
        self.planes = FieldPlanes()
        self.fields: dict[tuple[str, str], _Field] = {}
        self.channels: dict[str, dict[str, str]] = {}  # plate name -> its channel map
        self.pixel_size_um: float | None = None  # set once every field is known

    @property
    def saturation(self) -> int:
        return self.planes.saturation

    def labels(self, plate: str) -> dict[str, str]:
        return dict(self.channels[plate])

    def __call__(self, field: Mapping) -> np.ndarray:
        plan = self.fields[(field["ome_zarr"], field["image"])]
        where = _where(field["ome_zarr"], field["well"], field["field"])
        try:
            pixels = plan.array.oindex[plan.selection]
        except arrays.MissingChunk as missing:
            arrays.settle()
            raise VsgridError(
                f"{where}: chunk {missing.args[0]} is missing (the plate is damaged; vsgrid does "
                "not read lost data as zeros)"
            ) from None
        except Exception as exc:  # the codecs raise many types for a damaged chunk
            arrays.settle()
            raise VsgridError(
                f"{where}: array {plan.array.path} cannot be read: {_one_line(exc)}"
            ) from None
        if plan.project:
            pixels = pixels.max(axis=1)
        return self.planes.to_uint16(pixels, where)


def read_plates(ingest: dict) -> tuple[pd.DataFrame, OmeZarrReader]:
    """The fields of the plates of ``ingest`` (the config's ``data.ingest``) as a table (plate,
    well, field, ome_zarr, image) and the reader of their pixels."""
    reader, rows, names, sizes = OmeZarrReader(), [], {}, {}
    for path, settings in _plates(ingest):
        root, plate, version, name = _open_plate(path)
        if name in names:
            raise VsgridError(
                f"OME-Zarr plates {names[name]} and {path} are both named {name!r}; "
                "plates need distinct names"
            )
        names[name], reader.channels[name] = path, settings.channels
        for well_path in (w.path for w in plate.plate.wells):
            well = _well_name(path, well_path)
            for k, image in enumerate(_images(root, path, version, well_path, well)):
                where, image_path = _where(path, well, k), f"{well_path}/{image}"
                group = _child(root, path, image_path, where, "its well's image list")
                field = _field(group, version, where, settings)
                reader.planes.declared(where, _plane_shape(field), field.array.dtype)
                reader.fields[(path, image_path)] = field
                sizes[where] = field.pixel_size_um
                rows.append((name, well, k, path, image_path))
    reader.pixel_size_um = _pixel_size(sizes, ingest["pixel_size_um"])
    return (
        pd.DataFrame(rows, columns=["plate", "well", "field", *OmeZarrReader.locators]),
        reader,
    )


def _plates(ingest: dict) -> Iterator[tuple[str, _Settings]]:
    """Each plate of ``data.ingest.ome_zarr``, its path and settings: an entry's own channel map
    and z where it is a mapping that sets them, else ``data.ingest.channels`` and ``z``."""
    for k, entry in enumerate(ingest["ome_zarr"]):
        own = entry if isinstance(entry, Mapping) else {"path": entry}
        key = {
            s: f"data.ingest.ome_zarr[{k}].{s}" if s in own else f"data.ingest.{s}"
            for s in ("channels", "z")
        }
        channels, z = own.get("channels", ingest["channels"]), own.get("z", ingest["z"])
        yield str(own["path"]), _Settings(channels, z, key["channels"], key["z"])


def _pixel_size(declared: dict[str, float | None], configured: float | None) -> float:
    """The fields' pixel size: ``configured`` (data.ingest.pixel_size_um) where set, which every
    size a field declares must match; else the one every field declares."""
    if configured is not None:
        for where, size in declared.items():
            if size is not None and not _same_size(size, configured):
                raise VsgridError(
                    f"{where} declares {size:g} um pixels but data.ingest.pixel_size_um is "
                    f"{configured:g}"
                )
        return configured
    first, size = next(iter(declared.items()))
    for where, other in declared.items():
        if other is None:
            raise VsgridError(
                f"{where} declares no pixel size (its y and x axes have no unit); "
                "set data.ingest.pixel_size_um"
            )
        if not _same_size(other, size):
            raise VsgridError(
                f"{first} has {size:g} um pixels but {where} has {other:g} um; set "
                "data.ingest.pixel_size_um to ingest them together, if they are of one size"
            )
    return size


def _same_size(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=PIXEL_SIZE_TOLERANCE)


def _open_plate(path: str):
    """A plate's root group (read through :func:`vsgrid.arrays.open_group`, which refuses a
    missing chunk), its validated metadata, NGFF version and name."""
    if not Path(path).exists():
        raise VsgridError(f"OME-Zarr plate {path} does not exist")
    try:
        group = arrays.open_group(path)
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
    if not is_plate_name(name):
        raise VsgridError(
            f"OME-Zarr plate {path} is named {name!r}, not a plate name ({PLATE_NAME_RULE})"
        )
    return group, plate, version, name


def _images(root: zarr.Group, path: str, version: str, well_path: str, well: str) -> list[str]:
    """The image paths a well lists."""
    where = f"OME-Zarr plate {path} well {well}"
    group = _child(root, path, well_path, where, "the plate metadata")
    well_meta = _validated(MODELS[version][1], _ngff(group), where)
    return [image.path for image in well_meta.well.images]


def _field(group: zarr.Group, version: str, where: str, settings: _Settings) -> _Field:
    """How to read one field: its full-resolution array, the selection of the four channels and
    its pixel size."""
    meta = _ngff(group)
    image = _validated(MODELS[version][2], _without_identity(meta), where)
    multiscale = image.multiscales[0]
    dataset = multiscale.datasets[0].path
    array = group.get(dataset)
    if not isinstance(array, zarr.Array):
        raise VsgridError(f"{where}: its full-resolution array {dataset} is missing")
    axes = _axis_names(multiscale.axes)
    if array.ndim != len(axes) or not {"c", "y", "x"} <= set(axes) or len(set(axes)) < len(axes):
        raise VsgridError(
            f"{where}: array {dataset} has shape {array.shape} on axes "
            f"{', '.join(axis.name for axis in multiscale.axes)}; "
            "vsgrid reads images with axes c, y and x (and optionally t, z)"
        )
    sizes = dict(zip(axes, array.shape))
    if sizes.get("t", 1) > 1:
        raise VsgridError(f"{where} has {sizes['t']} timepoints; vsgrid reads one per field")
    index = _channel_index(meta, sizes["c"], where, settings)
    selection = tuple(
        index
        if axis == "c"
        else slice(None)
        if axis in ("y", "x")
        else _plane(axis, size, where, settings)
        for axis, size in sizes.items()
    )
    return _Field(
        array,
        selection,
        project="z" in sizes and settings.z == "max",
        pixel_size_um=_declared_pixel_size(multiscale, axes, where),
    )


def _without_identity(meta: dict) -> dict:
    """``meta`` less the identity transforms of each multiscale's own coordinateTransformations.

    iohub (the OME-Zarr library of VisCy) writes ``[{"type": "identity"}]`` there, which
    ome-zarr-models refuses (it allows a scale and a translation only); an identity changes no
    coordinate, so validating without it accepts those plates and loses nothing.
    """
    multiscales = meta.get("multiscales")
    if not isinstance(multiscales, list):
        return meta  # the validation names what is wrong
    return {**meta, "multiscales": [_less_identity(m) for m in multiscales]}


def _less_identity(multiscale):
    transforms = (
        multiscale.get("coordinateTransformations") if isinstance(multiscale, dict) else None
    )
    if not isinstance(transforms, list) or IDENTITY not in transforms:
        return multiscale
    kept = [t for t in transforms if t != IDENTITY]
    rest = {k: v for k, v in multiscale.items() if k != "coordinateTransformations"}
    return {**rest, "coordinateTransformations": kept} if kept else rest


def _axis_names(axes) -> list[str]:
    """Each axis as t, c, z, y or x: its name in any case, else its type (the space axes by their
    place: the spec puts them last, in the order z, y, x)."""
    space = [k for k, axis in enumerate(axes) if axis.type == "space"]
    by_place = dict(zip(reversed(space), "xyz"))
    names = []
    for k, axis in enumerate(axes):
        name = axis.name.lower()
        names.append(name if name in AXES else by_place.get(k) or TYPED_AXES.get(axis.type, name))
    return names


def _declared_pixel_size(multiscale, axes: list[str], where: str) -> float | None:
    """The full-resolution dataset's pixel size in um: its scale on y and x times the multiscale's
    own scale, where it has one. None where y or x has no unit: a scale in no unit is no size
    (ome-zarr writes scale 1 on axes without units when it is given none)."""
    places = [axes.index("y"), axes.index("x")]
    units = [multiscale.axes[k].unit for k in places]
    if None in units:
        return None
    scale = np.ones(len(axes))
    for transform in (
        *multiscale.datasets[0].coordinateTransformations,
        *(multiscale.coordinateTransformations or ()),
    ):
        if transform.type == "scale":
            if not hasattr(transform, "scale"):
                raise VsgridError(
                    f"{where}: its scale is in a file ({transform.path}); vsgrid reads a scale given in its metadata"
                )
            scale *= transform.scale
    # Rounded to 12 digits: a unit's conversion must not leave 0.65 as 0.6500000000000001.
    y, x = (round(float(scale[k]) / _per_um(unit, where), 12) for k, unit in zip(places, units))
    if not _same_size(y, x):
        raise VsgridError(
            f"{where} declares pixels of {y:g} x {x:g} um; vsgrid reads square pixels"
        )
    return y


def _per_um(unit: str, where: str) -> float:
    if unit not in UNITS_PER_UM:
        raise VsgridError(
            f"{where}: its y and x axes are in {unit}; vsgrid reads pixel sizes in "
            f"{', '.join(UNITS_PER_UM)}"
        )
    return UNITS_PER_UM[unit]


def _plane(axis: str, size: int, where: str, settings: _Settings) -> int | slice:
    """The selection along an axis other than c, y and x."""
    z, key = settings.z, settings.z_key
    if axis == "z" and z == "max":
        return slice(None)
    if axis == "z" and z is not None:
        if z >= size:
            raise VsgridError(f"{where} has {size} z planes; {key} {z} is not one of them")
        return z
    if size > 1:
        reason = f"set {key} to a plane index or max" if axis == "z" else "vsgrid reads one"
        raise VsgridError(f"{where} has {size} planes on axis {axis}; {reason}")
    return 0


def _channel_index(meta: dict, n: int, where: str, settings: _Settings) -> list[int]:
    """The position on axis c of each of ``CHANNELS``, by omero channel label."""
    channels, key = settings.channels, settings.channels_key
    labels = [c.get("label") for c in (meta.get("omero") or {}).get("channels", [])]
    if len(labels) != n:
        raise VsgridError(
            f"{where} has {len(labels)} omero channel labels for {n} channels; "
            f"{key} names channels by label"
        )
    for channel in CHANNELS:
        if channels[channel] not in labels:
            raise VsgridError(
                f"{where}: {key}.{channel} is {channels[channel]!r}, not among its "
                f"omero channel labels ({', '.join(map(str, labels))})"
            )
    return [labels.index(channels[c]) for c in CHANNELS]


def _plane_shape(field: _Field) -> tuple[int, ...]:
    axes = zip(field.array.shape, field.selection)
    return tuple(n for n, s in axes if isinstance(s, slice))[-2:]


def _child(root: zarr.Group, path: str, child: str, where: str, listed_in: str) -> zarr.Group:
    """The group ``child`` of the plate ``root`` (at ``path``)."""
    try:
        group = root[child]
    except Exception:  # zarr raises several types for a missing or damaged group
        group = None
    if not isinstance(group, zarr.Group):
        raise VsgridError(f"{where} is listed in {listed_in} but {path}/{child} is missing")
    return group


def _ngff(group: zarr.Group) -> dict:
    """A group's NGFF attributes: under ``ome`` from 0.5 on, at the top before."""
    attrs = group.attrs.asdict()
    return attrs.get("ome", attrs)


def _validated(model: type[pydantic.BaseModel], meta: dict, where: str):
    try:
        with warnings.catch_warnings():
            # ome-zarr-models warns where it repairs metadata (a 0.5 plate's version, which the
            # spec puts beside the plate, not in it); it reads the plate right, so a user would
            # see a raw pydantic warning about nothing to fix. The category is the library's own.
            warnings.filterwarnings("ignore", category=ValidationWarning)
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
