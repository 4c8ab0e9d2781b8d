"""Real plates into stores: the fields of a CellProfiler LoadData CSV of TIFFs, or of OME-Zarr
HCS plates (:mod:`vsgrid.data.ome_zarr`), with a plate map and the plates' cell types.

Inputs (paths in ``data.ingest`` of the config):

- either a LoadData CSV: one row per field with ``Metadata_Plate``, ``Metadata_Well``,
  ``Metadata_Site`` and, per channel ``<Ch>``, ``FileName_<Ch>`` and ``PathName_<Ch>`` (relative
  paths are taken from the CSV's folder),
- or ``ome_zarr``: a list of OME-Zarr HCS plates (see :mod:`vsgrid.data.ome_zarr`);
- plate map CSV: ``well``, ``compound``, ``concentration``, and optionally ``plate`` when plates
  differ in layout;
- plate -> cell type CSV: ``plate``, ``cell_type``, and optionally ``test`` (true for the
  held-out test plates; without it the last ``data.test_plates`` plates per cell type by name);
- ``data.ingest.channels``: which ``<Ch>`` (or omero channel label) is bf, dapi, fitc and cy5;
- ``data.ingest.pixel_size_um``: required for TIFFs; OME-Zarr plates declare their own.

Every plate name must fit :data:`~vsgrid.data.plates.PLATE_NAME`: it becomes part of file names.

Either source gives the same two things (:func:`read_fields`): the fields table and a reader
that turns one row of it into a (4, H, W) uint16 field in :data:`~vsgrid.data.store.CHANNELS`
order. Every field's plane must have the same shape and dtype as the first one's
(:class:`vsgrid.data.planes.FieldPlanes`); uint8 and uint16 are kept as they are, float images
must be finite and within 0..65535.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import tifffile
from tqdm import tqdm

from vsgrid import __version__
from vsgrid.data.ome_zarr import read_plates
from vsgrid.data.planes import FieldPlanes
from vsgrid.data.plates import PLATE_NAME_RULE, is_plate_name, label_phenotypes, normalize_well
from vsgrid.data.splits import held_out_plates, sample_splits, screen_splits
from vsgrid.data.store import CHANNELS, create_store
from vsgrid.errors import VsgridError
from vsgrid.files import atomic_paths
from vsgrid.grid import data_sets
from vsgrid.layout import screen_data_set, screen_store_path, store_path


def _read_csv(path: str | Path, role: str, required: list[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise VsgridError(f"{role} {path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise VsgridError(f"{role} {path} is not a readable CSV: {exc}") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise VsgridError(
            f"{role} {path} lacks column(s) {', '.join(missing)} (has: {', '.join(table.columns)})"
        )
    return table


def _as_float(
    values: pd.Series, path: Path, column: str, *, nonnegative: bool = False
) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    _refuse(numbers.isna() | ~np.isfinite(numbers), values, path, column, "not a finite number")
    if nonnegative:
        _refuse(numbers < 0, values, path, column, "negative")
    return numbers


def _refuse(bad: pd.Series, values: pd.Series, path: Path, column: str, what: str) -> None:
    """An error naming the first of ``values`` that is ``bad`` (its CSV row) and ``what`` it is."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise VsgridError(
            f"{path}: column {column!r} row {row + 2} is {values.iloc[row]!r}, {what}"
        )


def _load_data(ingest: dict) -> pd.DataFrame:
    """The LoadData CSV's fields: plate, well, field and one file per channel."""
    load_data_path = Path(ingest["load_data"])
    channels = ingest["channels"]
    file_columns = [f"{kind}_{channels[c]}" for c in CHANNELS for kind in ("FileName", "PathName")]
    fields = _read_csv(
        load_data_path,
        "LoadData CSV",
        ["Metadata_Plate", "Metadata_Well", "Metadata_Site", *file_columns],
    )
    fields["well"] = [_well(w, load_data_path) for w in fields["Metadata_Well"]]
    for row, plate in enumerate(fields["Metadata_Plate"], start=2):
        if not is_plate_name(plate):
            raise VsgridError(
                f"{load_data_path}: row {row}: plate {plate!r} is not a plate name ({PLATE_NAME_RULE})"
            )
    fields["plate"] = fields["Metadata_Plate"]
    fields["field"] = _as_whole(fields["Metadata_Site"], load_data_path, "Metadata_Site")
    _unique(fields, ["plate", "well", "field"], load_data_path, "plate {} well {} site {}")
    for channel in CHANNELS:
        folder, name = (
            fields[f"PathName_{channels[channel]}"],
            fields[f"FileName_{channels[channel]}"],
        )
        fields[f"file_{channel}"] = [
            str(_resolve(load_data_path.parent, d, n)) for d, n in zip(folder, name)
        ]
    return fields


def _with_plate_map(fields: pd.DataFrame, ingest: dict, rule: dict) -> pd.DataFrame:
    """``fields`` with each well's compound, concentration and phenotype from the plate map."""
    plate_map_path = Path(ingest["plate_map"])
    plate_map = _read_csv(plate_map_path, "plate map", ["well", "compound", "concentration"])
    plate_map["well"] = [_well(w, plate_map_path) for w in plate_map["well"]]
    plate_map["concentration"] = _as_float(
        plate_map["concentration"], plate_map_path, "concentration", nonnegative=True
    )
    plate_map["phenotype"] = label_phenotypes(
        plate_map["compound"], plate_map["concentration"], **rule
    )
    keys = ["plate", "well"] if "plate" in plate_map.columns else ["well"]
    _unique(plate_map, keys, plate_map_path, " ".join(f"{k} {{}}" for k in keys))
    fields = fields.merge(
        plate_map[[*keys, "compound", "concentration", "phenotype"]],
        on=keys,
        how="left",
        indicator=True,
    )
    unmapped = fields[fields["_merge"] == "left_only"]
    if len(unmapped):
        first = unmapped.iloc[0]
        raise VsgridError(
            f"plate map {plate_map_path} has no entry for plate {first['plate']} well "
            f"{first['well']} ({len(unmapped)} fields of {_source(ingest)} are unmapped)"
        )
    return fields.drop(columns="_merge")


def _with_cell_types(fields: pd.DataFrame, ingest: dict) -> pd.DataFrame:
    """``fields`` with each plate's cell type (and held-out flag, where given)."""
    cell_types_path = Path(ingest["plate_cell_types"])
    plate_cell_types = _read_csv(cell_types_path, "plate -> cell type CSV", ["plate", "cell_type"])
    for row, (plate, cell_type) in enumerate(
        zip(plate_cell_types["plate"], plate_cell_types["cell_type"]), start=2
    ):
        if not cell_type.strip():
            raise VsgridError(f"{cell_types_path}: row {row}: plate {plate} has no cell_type")
    _unique(plate_cell_types, ["plate"], cell_types_path, "plate {}")
    fields = fields.merge(plate_cell_types, on="plate", how="left")
    orphans = sorted(fields.loc[fields["cell_type"].isna(), "plate"].unique())
    if orphans:
        raise VsgridError(
            f"plate(s) {', '.join(orphans)} of {_source(ingest)} have no cell type in "
            f"{cell_types_path}"
        )
    return fields


class FieldReader(Protocol):
    """What reads one field's pixels for :func:`read_fields`, from either source."""

    #: The fields table's columns that say where a field's pixels are (kept in the stores).
    locators: tuple[str, ...]

    #: The fields' pixel size in um: data.ingest.pixel_size_um, or the one the plates declare.
    pixel_size_um: float

    @property
    def saturation(self) -> int:
        """The count a saturated pixel of these images holds."""

    def labels(self, plate: str) -> dict[str, str]:
        """The source's name of each of ``CHANNELS`` in ``plate``: its omero channel labels, or
        the LoadData CSV's channel names."""

    def __call__(self, field: Mapping) -> np.ndarray:
        """One row of the fields table -> its (4, H, W) uint16 pixels in ``CHANNELS`` order."""


def read_fields(ingest: dict, rule: dict) -> tuple[pd.DataFrame, FieldReader]:
    """Every field of the configured plates, and the reader of their pixels.

    Parameters
    ----------
    ingest
        The validated config's ``data.ingest`` (exactly one of ``load_data`` and ``ome_zarr``).
    rule
        ``data.phenotype_rule``.

    Returns
    -------
    fields
        One row per field: ``cell_type``, ``plate``, ``well`` (``A01``), ``field``, ``compound``,
        ``concentration``, ``phenotype``, the reader's ``locators`` (``file_<channel>`` for TIFFs;
        ``ome_zarr``, ``image`` for OME-Zarr plates) and, where the plate -> cell type CSV has it,
        ``test``.
    reader
        ``reader(row)``, for a row of ``fields`` (``fields.iloc[i]`` or a dict record), gives that
        field's (4, H, W) uint16 pixels; every field has the shape of the first one read.

    Every table, and every OME-Zarr plate's metadata down to each field's array, is checked here;
    only the reader decodes pixels.
    """
    if ingest["ome_zarr"]:
        fields, reader = read_plates(ingest)
    else:
        fields = _load_data(ingest)
        reader = TiffReader(channels=ingest["channels"], pixel_size_um=ingest["pixel_size_um"])
    fields = _with_cell_types(_with_plate_map(fields, ingest, rule), ingest)
    columns = [
        "cell_type",
        "plate",
        "well",
        "field",
        "compound",
        "concentration",
        "phenotype",
        *reader.locators,
    ]
    if "test" in fields.columns:
        columns.append("test")
    return fields[columns], reader


def _source(ingest: dict) -> str:
    """The fields' source, as a message names it."""
    if ingest["ome_zarr"]:
        return f"the {len(ingest['ome_zarr'])} OME-Zarr plate(s)"
    return f"the LoadData CSV {Path(ingest['load_data'])}"


def _as_whole(values: pd.Series, path: Path, column: str) -> pd.Series:
    numbers = _as_float(values, path, column)
    _refuse(numbers != np.floor(numbers), values, path, column, "not a whole number")
    return numbers.astype(int)


def _unique(table: pd.DataFrame, keys: list[str], path: Path, naming: str) -> None:
    """Each combination of ``keys`` on one row only: a field or a well listed twice would land twice."""
    repeated = table.duplicated(keys, keep=False)
    if repeated.any():
        rows = np.flatnonzero(repeated)
        first = table.iloc[rows[0]]
        twin = next(r for r in rows[1:] if (table.iloc[r][keys] == first[keys]).all())
        raise VsgridError(
            f"{path}: {naming.format(*first[keys])} is listed twice (rows {rows[0] + 2} and {twin + 2})"
        )


def _well(well: str, path: Path) -> str:
    try:
        return normalize_well(well)
    except ValueError as exc:
        raise VsgridError(f"{path}: {exc}") from None


def _resolve(base: Path, folder: str, name: str) -> Path:
    path = Path(folder) / name
    return path if path.is_absolute() else base / path


class TiffReader:
    """Reads a field from its channels' single-plane TIFFs, the ``file_<channel>`` of its row."""

    locators = tuple(f"file_{c}" for c in CHANNELS)

    def __init__(self, *, channels: dict[str, str], pixel_size_um: float):
        self.planes, self.channels, self.pixel_size_um = FieldPlanes(), channels, pixel_size_um

    @property
    def saturation(self) -> int:
        return self.planes.saturation

    def labels(self, plate: str) -> dict[str, str]:
        return dict(self.channels)  # one LoadData CSV names the channels of all its plates

    def __call__(self, field: Mapping) -> np.ndarray:
        return np.stack([self.plane(field[f"file_{c}"]) for c in CHANNELS])

    def plane(self, path: str) -> np.ndarray:
        if not Path(path).is_file():
            raise VsgridError(f"image {path} does not exist")
        try:
            with tifffile.TiffFile(path) as tiff:
                series = tiff.series[0]
                shape = tuple(n for n in series.shape if n != 1)
                if 0 in shape:
                    raise VsgridError(
                        f"image {path} is not a readable TIFF: it holds no image data"
                    )
                self.planes.declared(f"image {path}", shape, series.dtype)
                plane = np.squeeze(tiff.asarray())
        except VsgridError:
            raise
        except Exception as exc:  # tifffile raises many types for damaged files
            raise VsgridError(f"image {path} is not a readable TIFF: {exc}") from None
        return self.planes.to_uint16(plane, f"image {path}")


def _test_plates(fields: pd.DataFrame, n_test: int) -> list[str]:
    if "test" in fields.columns:
        flagged = fields.loc[fields["test"].str.lower().isin(["true", "1", "yes"]), "plate"]
        return sorted(flagged.unique())
    return held_out_plates(fields["plate"], n_test)


def ingest(config: dict, out_dir: str | Path, progress: bool = True) -> list[Path]:
    """Build one store per (cell type, phenotype) of the grid from the configured real plates.

    Every table is checked and every split drawn before any TIFF is read; the stores are built
    beside their final paths and swapped in together, so a failure leaves every earlier store as
    it was.
    """
    data = config["data"]
    fields, read = read_fields(data["ingest"], data["phenotype_rule"])
    known = sorted(fields["cell_type"].unique())
    for cell_type in config["grid"]["cell_types"]:
        if cell_type not in known:
            raise VsgridError(
                f"grid.cell_types lists {cell_type!r} but {data['ingest']['plate_cell_types']} has no plate of it "
                f"(cell types there: {', '.join(known)})"
            )
    plans = {}
    for data_set in data_sets(config["grid"]):
        of_cell_type = fields[fields["cell_type"] == data_set.cell_type]
        test_plates = _test_plates(of_cell_type, data["test_plates"])
        candidates = of_cell_type[of_cell_type["phenotype"].isin(data_set.phenotypes)].drop(
            columns="test", errors="ignore"
        )
        plans[data_set] = sample_splits(
            candidates,
            data["splits"],
            test_plates,
            data["seed"],
            data_set.name,
            test_unit=data["test_sampling"],
        )
    paths = [store_path(out_dir, d.name) for d in plans]
    with atomic_paths(paths) as staged:
        for (data_set, splits), tmp in zip(plans.items(), staged):
            names = {
                "data_set": data_set.name,
                "cell_type": data_set.cell_type,
                "phenotype": data_set.phenotype,
            }
            _write(names, splits, read, config, tmp, progress)
    return paths


def build_screen_store(cell_type: str, config: dict, out_dir: str | Path, progress=True) -> Path:
    """A cell type's screen store (level 4) from the configured real plates: every field of every
    well of its held-out plates, and control wells of its other plates for the phenotype forest
    (:func:`vsgrid.data.splits.screen_splits`), each well's compound and concentration from the
    plate map. Real plates know no true EC50: the store records none."""
    data, screen = config["data"], config["evaluation"]["screen"]
    fields, read = read_fields(data["ingest"], data["phenotype_rule"])
    fields = fields[fields["cell_type"] == cell_type]
    if fields.empty:
        raise VsgridError(f"no plate of {_source(data['ingest'])} is of cell type {cell_type!r}")
    rule = data["phenotype_rule"]
    splits = screen_splits(
        fields.drop(columns="test", errors="ignore"),
        _test_plates(fields, data["test_plates"]),
        controls=[*rule["negative_controls"], *rule["positive_controls"]],
        compounds=screen["compounds"],
        forest_fields=screen["forest_fields"],
    )
    path = screen_store_path(out_dir, cell_type)
    names = {"data_set": screen_data_set(cell_type), "cell_type": cell_type, "phenotype": "screen"}
    _write(names, splits, read, config, path, progress)  # written beside it, then swapped in
    return path


def _write(
    names: dict,
    splits: dict[str, pd.DataFrame],
    read: FieldReader,
    config: dict,
    path: Path,
    progress: bool,
) -> None:
    """Write the fields of ``splits`` into a new store at ``path`` with the attributes ``names``
    (data_set, cell_type, phenotype) and the source's provenance."""
    first = next(frame for frame in splits.values() if len(frame))
    shape = read(first.iloc[0]).shape[1:]
    metadata = pd.concat(
        [frame.assign(split=split, index=np.arange(len(frame))) for split, frame in splits.items()]
    )
    metadata = metadata[["split", "index", *first.columns]]
    ingest_cfg = config["data"]["ingest"]
    attrs = {
        **names,
        "pixel_size_um": read.pixel_size_um,
        "saturation": read.saturation,
        # What each plate called the channels, for an export to label them as its source did.
        "channel_labels": {p: read.labels(p) for p in sorted(metadata["plate"].unique())},
        "provenance": {
            "source": "ingest",
            **_inputs(ingest_cfg),
            "plate_map": str(Path(ingest_cfg["plate_map"]).resolve()),
            "channels": ingest_cfg["channels"],
            "seed": config["data"]["seed"],
            "vsgrid": __version__,
        },
    }
    with create_store(
        path, {s: len(f) for s, f in splits.items()}, shape, metadata, attrs, with_masks=False
    ) as group:
        for split, frame in splits.items():
            images = group[split]
            for i, field in enumerate(
                tqdm(
                    frame.to_dict("records"),
                    total=len(frame),
                    desc=f"{names['data_set']} {split}",
                    disable=not progress,
                    unit="field",
                )
            ):
                images[i] = read(field)


def _inputs(ingest: dict) -> dict:
    """Where the fields came from, for a store's provenance."""
    if ingest["ome_zarr"]:
        return {"ome_zarr": [_resolved(entry) for entry in ingest["ome_zarr"]], "z": ingest["z"]}
    return {"load_data": str(Path(ingest["load_data"]).resolve())}


def _resolved(entry: str | dict) -> str | dict:
    """An entry of data.ingest.ome_zarr with its plate's absolute path."""
    if isinstance(entry, str):
        return str(Path(entry).resolve())
    return {**entry, "path": str(Path(entry["path"]).resolve())}
