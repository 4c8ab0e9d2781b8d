"""A run's virtual stain out of vsgrid: OME-Zarr HCS plates that any NGFF viewer opens.

For a model and a test set (or a cell type's screen), every field of the store's test split is
written with its real channels (bf, dapi, fitc, cy5) and the model's prediction as a fifth,
named channel, at its plate, well and field: one plate per plate of the test split (a test set
spans ``data.test_plates`` plates, and NGFF's plate is one physical plate), each
``<plate>.ome.zarr`` (:func:`vsgrid.layout.plate_path`) in :meth:`vsgrid.layout.Layout.export`,
as :mod:`vsgrid.data.ome_zarr_writer` writes plates: OME-Zarr 0.5 (Zarr v3), or 0.4 (Zarr v2) for
readers that know no other (iohub 0.2, and VisCy through it), every field (t, c, z, y, x) with a
small pyramid. Each field carries its plate's channel labels (the plates' own where the store
carries them), colours and display windows, so that fields and plates compare at a glance. The
plates appear together when complete, or not at all, with :data:`MARKER`, which lists them: an
export replaces an earlier export, and never a folder holding anything it did not write.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from vsgrid.data.ome_zarr_writer import (
    FORMATS,
    create_plate,
    place_fields,
    pyramid_factors,
    write_field,
)
from vsgrid.data.plates import PLATE_NAME_RULE, is_plate_name
from vsgrid.data.store import CHANNELS, U16_MAX, Store, open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.stacks import read_prediction
from vsgrid.files import atomic_path
from vsgrid.grid import Model
from vsgrid.layout import Layout, plate_path

LABELS = {"bf": "BF", "dapi": "DAPI", "fitc": "FITC", "cy5": "Cy5"}
COLORS = {"bf": "FFFFFF", "dapi": "0000FF", "fitc": "00FF00", "cy5": "FF00FF"}
# Display windows: the 0.1 and 99.9 percentiles of every 4th pixel's row and column (a fraction
# of the memory, the same window) of up to 16 fields spread over the split.
WINDOW_FIELDS, WINDOW_STRIDE, WINDOW_PERCENTILES = 16, 4, (0.1, 99.9)
# What an export writes beside its plates: what they are, and which entries of the folder are its.
MARKER = "vsgrid-export.json"


def export_run(
    config: dict,
    model: str,
    *,
    test_set: str | None = None,
    screen: str | None = None,
    out: str | Path | None = None,
    ngff: str = "0.5",
    progress: bool = True,
) -> list[Path]:
    """Export a model's prediction of a test set, or of the screen of cell type ``screen``, to
    ``out`` (default :meth:`~vsgrid.layout.Layout.export`) as NGFF ``ngff`` (0.5 or 0.4);
    returns the plates written. The names become paths: ``vsgrid export`` has checked that they
    are the grid's (:func:`vsgrid.cli.options.check_names`)."""
    if (test_set is None) == (screen is None):
        raise VsgridError("export: name either a test set or a screen's cell type")
    layout = Layout.of(config)
    if screen is not None:
        store, prediction = layout.screen_store(screen), layout.screen_prediction(model, screen)
    else:
        store, prediction = layout.store(test_set), layout.prediction(model, test_set)
    opened = open_store(store)
    out = out or layout.export(model, opened.attrs["data_set"])
    return export_prediction(opened, prediction, out, model=model, ngff=ngff, progress=progress)


def export_prediction(
    store: Store,
    prediction: str | Path,
    out: str | Path,
    *,
    model: str,
    ngff: str = "0.5",
    progress: bool = True,
) -> list[Path]:
    """Write ``out/<plate>.ome.zarr`` (NGFF ``ngff``, 0.5 or 0.4) for every plate of ``store``'s
    test split, each field's real channels and ``model``'s prediction of it; returns the plates'
    paths.

    The prediction must be the model's of this build of the store, field for field; the test
    split's metadata must place every field (plate, well A01..P24, field). Nothing is left at
    ``out`` unless every plate was written.
    """
    try:
        stain = Model.parse(model).stain
    except ValueError as exc:
        raise VsgridError(f"export: {exc}") from None
    if ngff not in FORMATS:
        raise VsgridError(f"export: --ngff {ngff!r} is not one of {', '.join(FORMATS)}")
    fmt = FORMATS[ngff]
    pred = read_prediction(prediction, store, stain, model)
    real = store.images("test")
    if pred.image.shape[1:] != real.shape[2:]:
        raise VsgridError(
            f"prediction {pred.path} has images of {pred.image.shape[1:]} pixels but the test split "
            f"of {store.path} has {real.shape[2:]}"
        )
    out = Path(out)
    if out.is_symlink():  # a link to where the plates go: the rename below would replace the link
        out = out.resolve()
    check_out(out)
    fields = field_layout(store)
    size, factors = pixel_size(store), pyramid_factors(real.shape[2:])
    windows = display_windows(real, stain)
    labels = plate_labels(store, sorted(fields["plate"].unique()))
    with atomic_path(out) as tmp:
        tmp.mkdir()
        plates, displays = {}, {}
        for plate, wells in fields.groupby("plate", sort=True):
            plates[plate] = create_plate(plate_path(tmp, plate), plate, wells, fmt)
            plates[plate].attrs["vsgrid"] = provenance(pred.attrs)
            displays[plate] = omero(channel_labels(labels[plate], stain, model), windows, stain)
        where = zip(fields["index"], fields["plate"], fields["path"])
        for i, plate, path in tqdm(where, total=len(fields), disable=not progress, unit="field"):
            image = np.concatenate([real[i], pred.image[i][None]])[None, :, None]
            group = plates[plate].require_group(path)
            write_field(group, image, fmt=fmt, size=size, factors=factors, omero=displays[plate])
        names = [plate_path(tmp, plate).name for plate in plates]
        (tmp / MARKER).write_text(json.dumps(marker(pred.attrs, ngff, names), indent=2))
    return [plate_path(out, plate) for plate in plates]


def provenance(prediction: dict) -> dict:
    """The run a plate is the export of, from its prediction's attributes."""
    return {key: prediction.get(key) for key in ("model", "stain", "test_set", "store_id")}


def marker(prediction: dict, ngff: str, plates: list[str]) -> dict:
    """What :data:`MARKER` records: the run exported, in which format, and the entries of the
    folder it wrote."""
    return {**provenance(prediction), "ngff": ngff, "plates": plates}


def written_by_export(out: Path) -> set[str]:
    """The entries of ``out`` that an earlier export wrote, by its :data:`MARKER` (none without
    one, or with one that cannot be read)."""
    try:
        plates = json.loads((out / MARKER).read_text())["plates"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    if not isinstance(plates, list) or not all(isinstance(p, str) for p in plates):
        return set()
    return {MARKER, *plates}


def check_out(out: Path) -> None:
    """``out`` must be new, empty, or an earlier export and nothing else: the export replaces it
    whole, which would delete whatever else is there."""
    if not out.exists():
        return
    if not out.is_dir():
        raise VsgridError(f"export: --out {out} is a file, not a folder of plates; nothing written")
    ours = written_by_export(out)
    foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise VsgridError(
            f"export: --out {out} holds {shown}, which vsgrid export did not write; nothing was "
            "changed: export into a new or empty folder"
        )


def field_layout(store: Store) -> pd.DataFrame:
    """The test split's fields, in store order, placed in their plates
    (:func:`~vsgrid.data.ome_zarr_writer.place_fields`): ``index``, ``plate``, ``row``, ``column``,
    ``well`` (``A/1``), ``image`` and ``path`` (``A/1/0``)."""
    table = store.split_metadata("test")
    missing = [c for c in ("plate", "well", "field") if c not in table.columns]
    if missing:
        raise VsgridError(
            f"{store.path}: the test split's metadata has no {', '.join(missing)} column; "
            "an OME-Zarr plate places every field by plate, well and field"
        )
    bad = sorted({p for p in table["plate"].astype(str) if not is_plate_name(p)})
    if bad or table[["plate", "well", "field"]].isna().any().any():
        raise VsgridError(
            f"{store.path}: plate names must be {PLATE_NAME_RULE} and every field "
            f"must have a plate, well and field (found plates {bad[:3]})"
        )
    try:
        table = place_fields(table)
    except ValueError as exc:
        raise VsgridError(f"{store.path}: {exc}") from None
    if table.duplicated(["plate", "well", "field"]).any():
        first = table[table.duplicated(["plate", "well", "field"])].iloc[0]
        raise VsgridError(
            f"{store.path}: field {first['field']} of well {first['well']} of plate "
            f"{first['plate']} is in the test split twice"
        )
    return table[["index", "plate", "row", "column", "well", "image", "path"]]


def pixel_size(store: Store) -> float:
    """The store's pixel size in um (ingest's from the plates' NGFF scale)."""
    size = store.attrs.get("pixel_size_um")
    if not isinstance(size, int | float) or size <= 0:
        raise VsgridError(
            f"{store.path}: no pixel size (attribute pixel_size_um); rebuild the store"
        )
    return float(size)


def plate_labels(store: Store, plates: list[str]) -> dict[str, dict[str, str]]:
    """Each plate's labels of its real channels: the plates' own where the store carries them
    (attribute ``channel_labels``, plate -> channel -> label, which ingest takes from the plates'
    omero labels or LoadData channel names), else :data:`LABELS`."""
    given = store.attrs.get("channel_labels")
    if given is None:
        return dict.fromkeys(plates, LABELS)
    problem = labels_problem(given, plates)
    if problem:
        raise VsgridError(
            f"{store.path}: attribute channel_labels {problem}; it maps every plate to a label "
            f"for each of {', '.join(CHANNELS)}"
        )
    return {plate: given[plate] for plate in plates}


def labels_problem(given, plates: list[str]) -> str | None:
    """What is wrong with a store's ``channel_labels`` for ``plates``, or None."""
    if not isinstance(given, dict):
        return f"is a {type(given).__name__}, not a mapping of plates"
    for plate in plates:
        labels = given.get(plate)
        if labels is None:
            return f"has no labels for plate {plate}"
        if not isinstance(labels, dict) or sorted(labels) != sorted(CHANNELS):
            return f"of plate {plate} is {labels!r:.80}, not a label per channel"
        if not all(isinstance(label, str) and label.strip() for label in labels.values()):
            return f"of plate {plate} has an empty or non-text label: {labels!r:.80}"
        if len(set(labels.values())) < len(CHANNELS):  # a reader picks channels by label
            return f"of plate {plate} gives two channels one label: {labels!r:.80}"
    return None


def channel_labels(labels: dict[str, str], stain: str, model: str) -> list[str]:
    """A plate's channel labels: its real channels' ``labels``, then the model's virtual stain."""
    return [*(labels[c] for c in CHANNELS), f"{labels[stain]} (virtual, {model})"]


def display_windows(real, stain: str) -> list[tuple[float, float]]:
    """Each channel's display window, from the real images; the virtual stain's is its real
    stain's, so that both show alike."""
    n = real.shape[0]
    sample = np.unique(np.linspace(0, n - 1, min(n, WINDOW_FIELDS)).round().astype(int))
    step = WINDOW_STRIDE
    images = np.stack([real[int(i)][:, ::step, ::step] for i in sample], axis=1)  # (c, field, y, x)
    low, high = np.percentile(images.reshape(len(CHANNELS), -1), WINDOW_PERCENTILES, axis=1)
    windows = [(float(lo), float(hi)) for lo, hi in zip(low, high)]
    return [*windows, windows[CHANNELS.index(stain)]]


def omero(labels: list[str], windows: list[tuple[float, float]], stain: str) -> dict:
    """The channels' display: labels, colours and windows; the stain's two channels are shown,
    the others listed but hidden. iohub requires the default plane and time point."""
    colors = [*(COLORS[c] for c in CHANNELS), COLORS[stain]]
    shown = [c == stain for c in CHANNELS] + [True]
    return {
        "channels": [
            {
                "label": label,
                "color": color,
                "active": active,
                "window": {"min": 0, "max": U16_MAX, "start": lo, "end": hi},
            }
            for label, color, active, (lo, hi) in zip(labels, colors, shown, windows)
        ],
        "rdefs": {"model": "color", "defaultT": 0, "defaultZ": 0},
    }
