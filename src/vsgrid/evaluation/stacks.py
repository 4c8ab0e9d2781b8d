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
from vsgrid.errors import VsgridError
from vsgrid.files import atomic_path
from vsgrid.layout import Layout


def test_store(config: dict, test_set: str) -> Store:
    return open_store(Layout.of(config).store(test_set))


def real_stain(store: Store, stain: str) -> np.ndarray:
    """The real stain of every test image, (N, H, W) uint16."""
    return store.images("test")[:, store.channel_index(stain)]


def read_stack(path: str | Path) -> arrays.Stack:
    """A label stack, opened for checked reading."""
    return arrays.open_array(path)


def read_prediction(path: str | Path, store: Store, stain: str, model: str | None = None) -> arrays.Stack:
    """A prediction, which must be of ``stain`` (and ``model``) on the test split of ``store`` as
    it is now: a prediction of another build of the store would be scored against other images."""
    prediction = arrays.open_array(path)
    attrs = prediction.attrs
    expected = {"stain": stain, "test_set": store.attrs["data_set"], "store_id": store.store_id, "model": model}
    wrong = [f"{key} {attrs.get(key)!r}, not {value!r}" for key, value in expected.items() if value is not None and attrs.get(key) != value]
    if wrong:
        raise VsgridError(f"prediction {path} is not the one asked for: {'; '.join(wrong)} (store_id differs when the store was rebuilt since)")
    if prediction.shape[0] != store.images("test").shape[0]:
        raise VsgridError(f"prediction {path} has {prediction.shape[0]} images but the test split of {store.path} has {store.images('test').shape[0]}")
    return prediction


def write_labels(labels: np.ndarray, out: str | Path, attrs: dict) -> None:
    """A label stack (N, H, W) as int32 Zarr, one image per chunk, written atomically."""
    with atomic_path(Path(out)) as tmp:
        array = arrays.create(tmp, shape=labels.shape, chunks=(1, *labels.shape[1:]), dtype="int32")
        array[:] = labels
        array.attrs.update(attrs)
