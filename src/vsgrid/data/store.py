"""The per-(cell type, phenotype) Zarr store, written atomically.

Layout of ``<dir>/<cell type>-<phenotype>.zarr`` (Zarr v3 group)::

    train, val, test              (N, 4, H, W) uint16, channels bf, dapi, fitc, cy5
    train_masks, val_masks, ...   (N, 2, H, W) uint16 ground-truth nucleus and cell labels
                                  (synthetic data only)
    metadata.tsv                  one row per image: split, index, plate, well, field,
                                  compound, concentration, phenotype, ...

One file per field (a Zarr shard) holding one compressed, checksummed chunk per channel, so that a
step reading one channel decodes only that one. Group attributes hold the channel names, the pixel
size, the data set, the provenance and ``store_id``, drawn anew for every build: what a model
folder and a prediction record to know which store they came from. A store is built in a
temporary folder beside its final path and renamed into place only when complete, so a failed
build leaves any earlier store untouched.

The side files are checked on open like every table vsgrid writes: ``metadata.tsv.sha256`` holds
the digest of the metadata, ``zarr.sha256`` those of every ``zarr.json`` (the attributes and the
arrays' shapes), both in sha256sum's format; the chunks carry their own checksums. A reader sees
one build: its arrays fail once the store is rebuilt under it (see :class:`arrays.Build`).
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from vsgrid import arrays
from vsgrid.errors import VsgridError
from vsgrid.files import atomic_path, read_table, verify_checksums, write_checksums, write_table

CHANNELS = ("bf", "dapi", "fitc", "cy5")
MASKS = ("nucleus", "cell")
SPLITS = ("train", "val", "test")
METADATA = "metadata.tsv"
ZARR_CHECKSUMS = "zarr.sha256"  # written last, anew for every build: what marks a build
# Images are 16-bit counts; the camera saturates at the top of the range.
U16_MAX = 65535


@contextmanager
def create_store(
    path: str | Path,
    sizes: dict[str, int],
    field_shape: tuple[int, int],
    metadata: pd.DataFrame,
    attrs: dict,
    with_masks: bool,
):
    """Create a store with empty arrays and yield its group for the caller to fill.

    On normal exit the metadata table and the checksums are written and the store is renamed into
    place; on any exception the partial store is deleted and an existing store at ``path`` is left
    as it was.
    """
    path = Path(path)
    height, width = field_shape
    with atomic_path(path) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        for split in SPLITS:
            n = sizes.get(split, 0)
            for name, planes in (
                (split, CHANNELS),
                (f"{split}_masks", MASKS if with_masks else ()),
            ):
                if planes:
                    field = (1, len(planes), height, width)
                    arrays.create(
                        group,
                        (n, *field[1:]),
                        chunks=(1, 1, height, width),
                        shards=field,
                        dtype="uint16",
                        name=name,
                    )
        defaults = {
            "channels": list(CHANNELS),
            "masks": list(MASKS) if with_masks else [],
            "saturation": U16_MAX,
            "store_id": uuid.uuid4().hex,
        }
        group.attrs.update({**defaults, **attrs})
        yield group
        zarr_files = ["zarr.json", *(f"{name}/zarr.json" for name in sorted(group.array_keys()))]
        write_table(metadata, tmp / METADATA)
        write_checksums(tmp / ZARR_CHECKSUMS, zarr_files)


@dataclass
class Store:
    """An opened store: its Zarr group, per-image metadata and attributes."""

    path: Path
    group: zarr.Group
    metadata: pd.DataFrame
    build: arrays.Build

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def has_masks(self) -> bool:
        return bool(self.attrs.get("masks"))

    @property
    def store_id(self) -> str:
        if "store_id" not in self.attrs:
            raise VsgridError(
                f"{self.path}: no store_id; it was written by an older vsgrid, so build it again"
            )
        return self.attrs["store_id"]

    def images(self, split: str) -> arrays.Stack:
        return arrays.member(self.group, split, self.path, self.build)

    def masks(self, split: str) -> arrays.Stack:
        if not self.has_masks:
            raise VsgridError(
                f"{self.path} has no ground-truth masks (only synthetic stores have them)"
            )
        return arrays.member(self.group, f"{split}_masks", self.path, self.build)

    def split_metadata(self, split: str) -> pd.DataFrame:
        return (
            self.metadata[self.metadata["split"] == split]
            .sort_values("index")
            .reset_index(drop=True)
        )

    def channel_index(self, channel: str) -> int:
        try:
            return CHANNELS.index(channel)
        except ValueError:
            raise VsgridError(
                f"unknown channel {channel!r}; a store holds {', '.join(CHANNELS)}"
            ) from None


def open_store(path: str | Path, build: arrays.Build | None = None) -> Store:
    """Open a store for reading; a missing, incomplete or damaged store, or one rebuilt while it
    was being opened, is a :class:`VsgridError`. ``build``, that of an earlier open (a data-loader
    worker reopening the store of its parent, say), must still be the store's: reads stay in it."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise VsgridError(
            f"no data store at {path}: build it with `vsgrid synthesize` or `vsgrid ingest`"
        )
    if not (path / METADATA).exists():
        raise VsgridError(f"data store {path} has no {METADATA}; rebuild it")
    build = build or arrays.Build.of(path, ZARR_CHECKSUMS)
    verify_checksums(path / ZARR_CHECKSUMS, ["zarr.json"], about=path)
    group = arrays.open_group(path)
    metadata = read_table(path / METADATA, dtype={"well": str, "plate": str})
    build.check()
    return Store(path, group, metadata, build)


def split_sizes(store: Store) -> dict[str, int]:
    return {split: int(store.images(split).shape[0]) for split in SPLITS}


def as_uint16(array: np.ndarray) -> np.ndarray:
    """Clip and round float intensities into uint16 counts."""
    return np.clip(np.rint(array), 0, U16_MAX).astype(np.uint16)
