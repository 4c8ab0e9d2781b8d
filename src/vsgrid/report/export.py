"""A run's virtual stain out of vsgrid: OME-Zarr HCS plates that any NGFF viewer opens.

For a model and a test set (or a cell type's screen), every field of the store's test split is
written with its real channels (bf, dapi, fitc, cy5) and the model's prediction as a fifth,
named channel, at its plate, well and field: one plate per plate of the test split (a test set
spans ``data.test_plates`` plates, and NGFF's plate is one physical plate), each
``<plate>.ome.zarr`` in :meth:`vsgrid.layout.Layout.export`. The format is OME-Zarr 0.5 (Zarr v3),
or 0.4 (Zarr v2) for readers that know no other (iohub 0.2, and VisCy through it), its metadata
written by ``ome-zarr``. Every field is (t, c, z, y, x), one time point and one plane, with its
levels named ``0``, ``1``, ...: the layout iohub and VisCy index. Each field carries a small pyramid,
so that a viewer showing the whole plate reads a thumbnail per field, and its plate's channel
labels (the plates' own where the store carries them), colours and display windows, so that
fields and plates compare at a glance. The plates appear together when complete, or not at
all, with :data:`MARKER`, which lists them: an export replaces an earlier export, and never a
folder holding anything it did not write.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numcodecs
import numpy as np
import pandas as pd
import zarr
from ome_zarr import writer
from ome_zarr.format import Format, FormatV04, FormatV05
from skimage.transform import downscale_local_mean
from tqdm import tqdm

from vsgrid import arrays
from vsgrid.data.plates import PLATE_NAME_RULE, is_plate_name, well_position
from vsgrid.data.store import CHANNELS, U16_MAX, Store, open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.stacks import read_prediction
from vsgrid.files import atomic_path
from vsgrid.grid import Model
from vsgrid.layout import Layout

LABELS = {"bf": "BF", "dapi": "DAPI", "fitc": "FITC", "cy5": "Cy5"}
COLORS = {"bf": "FFFFFF", "dapi": "0000FF", "fitc": "00FF00", "cy5": "FF00FF"}
# A plate view shows the coarsest level of every field: halve down to about this many pixels.
THUMBNAIL_PX = 64
# Display windows: the 0.1 and 99.9 percentiles of every 4th pixel's row and column (a fraction
# of the memory, the same window) of up to 16 fields spread over the split.
WINDOW_FIELDS, WINDOW_STRIDE, WINDOW_PERCENTILES = 16, 4, (0.1, 99.9)
# The NGFF versions an export writes: 0.5 (Zarr v3), and 0.4 (Zarr v2) for iohub 0.2 and VisCy.
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
            plates[plate] = create_plate(tmp / f"{plate}.ome.zarr", wells, plate, pred.attrs, fmt)
            displays[plate] = omero(channel_labels(labels[plate], stain, model), windows, stain)
        where = zip(fields["index"], fields["plate"], fields["path"])
        for i, plate, path in tqdm(where, total=len(fields), disable=not progress, unit="field"):
            image = np.concatenate([real[i], pred.image[i][None]])[None, :, None]
            group = plates[plate].require_group(path)
            write_field(group, image, fmt=fmt, size=size, factors=factors, omero=displays[plate])
        names = [f"{plate}.ome.zarr" for plate in plates]
        (tmp / MARKER).write_text(json.dumps(marker(pred.attrs, ngff, names), indent=2))
    return [out / name for name in names]


def marker(provenance: dict, ngff: str, plates: list[str]) -> dict:
    """What :data:`MARKER` records: the run exported, in which format, and the entries of the
    folder it wrote."""
    return {
        **{key: provenance.get(key) for key in ("model", "stain", "test_set", "store_id")},
        "ngff": ngff,
        "plates": plates,
    }


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
    """The test split's fields, in store order: ``index``, ``plate``, ``row`` (A..P),
    ``column`` (1..24), ``well`` (the well's path in its plate, ``A/1``), ``image`` (the field's
    number in its well, ``0``, ``1``, ... in the order of the metadata's ``field``) and ``path``
    (the field's in its plate, ``A/1/0``)."""
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
        positions = [well_position(well) for well in table["well"]]
    except ValueError as exc:
        raise VsgridError(f"{store.path}: {exc}") from None
    table = table.assign(
        plate=table["plate"].astype(str),
        row=[string.ascii_uppercase[r] for r, _ in positions],
        column=[str(c + 1) for _, c in positions],
    )
    table["well"] = table["row"] + "/" + table["column"]
    if table.duplicated(["plate", "well", "field"]).any():
        first = table[table.duplicated(["plate", "well", "field"])].iloc[0]
        raise VsgridError(
            f"{store.path}: field {first['field']} of well {first['well']} of plate "
            f"{first['plate']} is in the test split twice"
        )
    number = table.groupby(["plate", "well"])["field"].rank(method="first").astype(int) - 1
    table["image"] = number.astype(str)
    table["path"] = table["well"] + "/" + table["image"]
    return table[["index", "plate", "row", "column", "well", "image", "path"]]


def pixel_size(store: Store) -> float:
    """The store's pixel size in um (ingest's from the plates' NGFF scale)."""
    size = store.attrs.get("pixel_size_um")
    if not isinstance(size, int | float) or size <= 0:
        raise VsgridError(
            f"{store.path}: no pixel size (attribute pixel_size_um); rebuild the store"
        )
    return float(size)


def pyramid_factors(shape: tuple[int, int]) -> tuple[int, ...]:
    """Downsampling factors 2, 4, ... while the field's short side stays at least
    :data:`THUMBNAIL_PX` (none for a field already that small)."""
    levels = int(np.log2(max(min(shape) / THUMBNAIL_PX, 1)))
    return tuple(2**k for k in range(1, levels + 1))


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


def create_plate(
    path: Path, fields: pd.DataFrame, name: str, provenance: dict, fmt: Format
) -> zarr.Group:
    """A plate's group with its NGFF plate and well metadata (``fields`` are its own)."""
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
    root.attrs["vsgrid"] = {
        key: provenance.get(key) for key in ("model", "stain", "test_set", "store_id")
    }
    return root


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
    ``factors``: a chunk per channel and level, the levels named 0, 1, ... (iohub's and VisCy's
    full resolution is the array "0")."""
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
