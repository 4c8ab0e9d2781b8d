"""The image stacks of a test set that the evaluation reads and writes.

A test set's real stain is one channel of its store's ``test`` split; a prediction is the
(N, H, W) uint16 Zarr array inference wrote, aligned index for index with it; label stacks are
(N, H, W) int32 Zarr arrays, one image per chunk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vsgrid import arrays
from vsgrid.data.store import Store, open_store
from vsgrid.files import atomic_path
from vsgrid.layout import Layout


def test_store(config: dict, test_set: str) -> Store:
    return open_store(Layout.of(config).store(test_set))


def real_stain(store: Store, stain: str) -> np.ndarray:
    """The real stain of every test image, (N, H, W) uint16."""
    return store.images("test")[:, store.channel_index(stain)]


def read_stack(path: str | Path) -> arrays.Stack:
    """A prediction or a label stack, opened for checked reading."""
    return arrays.open_array(path)


def write_labels(labels: np.ndarray, out: str | Path, attrs: dict) -> None:
    """A label stack (N, H, W) as int32 Zarr, one image per chunk, written atomically."""
    with atomic_path(Path(out)) as tmp:
        array = arrays.create(tmp, shape=labels.shape, chunks=(1, *labels.shape[1:]), dtype="int32")
        array[:] = labels
        array.attrs.update(attrs)
