"""The image stacks of a test set that the evaluation reads and writes, a block at a time.

A test set's real stain is one channel of its store's ``test`` split. A prediction is the Zarr
group a model's inference job wrote: ``image`` (N, H, W) uint16, aligned index for index with
the test split, for segmented stains ``labels``, the prediction's own masks, and what the model
says of it (:mod:`vsgrid.model.uncertainty`): ``tta_spread`` and ``dropout_spread`` (N, H, W)
float32, ``ood`` (N,). Label stacks are
(N, H, W) int32 arrays, one image per chunk. Every step reads these in blocks of
``evaluation.block_images`` images, so its memory does not grow with the test set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from vsgrid import arrays
from vsgrid.data.store import Store, open_store
from vsgrid.errors import VsgridError
from vsgrid.layout import Layout


def blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive blocks of at most ``size`` images."""
    for start in range(0, n, size):
        yield start, min(start + size, n)


def test_store(config: dict, test_set: str) -> Store:
    return open_store(Layout.of(config).store(test_set))


@dataclass(frozen=True)
class StainView:
    """One channel of a store's test split, read on demand: ``view[a:b]`` decodes that channel only."""

    images: arrays.Stack
    channel: int

    @property
    def shape(self) -> tuple[int, ...]:
        n, _, height, width = self.images.shape
        return (n, height, width)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, selection):
        return self.images[selection, self.channel]


def real_stain(store: Store, stain: str, *, split: str = "test") -> StainView:
    """The real stain of a split's images (the test images unless said), (N, H, W) uint16, read
    a block at a time."""
    return StainView(store.images(split), store.channel_index(stain))


def read_stack(path: str | Path) -> arrays.Stack:
    """A label stack, opened for checked reading."""
    return arrays.open_array(path)


def create_labels(
    where: zarr.Group | str | Path,
    shape: tuple[int, int, int],
    attrs: dict | None = None,
    name: str | None = None,
) -> zarr.Array:
    """An empty label stack (N, H, W) int32, one image per chunk, to fill block by block."""
    labels = arrays.create(where, shape, chunks=(1, *shape[1:]), dtype="int32", name=name)
    labels.attrs.update(attrs or {})
    return labels


@dataclass(frozen=True)
class Prediction:
    """A prediction's image, its own masks (dapi, fitc), its spreads over test-time augmentation
    (``infer.tta``) and MC dropout (``infer.mc_dropout``), its fields' OOD scores and the first
    passes of its test-time augmentation (``infer.feature_samples``; None where the prediction
    has none, as one of an older vsgrid)."""

    path: Path
    image: arrays.Stack
    labels: arrays.Stack | None
    attrs: dict
    tta_spread: arrays.Stack | None = None
    dropout_spread: arrays.Stack | None = None
    ood: np.ndarray | None = None
    tta_samples: arrays.Stack | None = None


def read_prediction(
    path: str | Path, store: Store, stain: str, model: str | None = None
) -> Prediction:
    """A prediction, which must be of ``stain`` (and ``model``) on the test split of ``store`` as
    it is now: a prediction of another build of the store would be scored against other images."""
    path = Path(path)
    if not (path / "image" / "zarr.json").is_file():
        raise VsgridError(
            f"{path} is not a prediction (no image array); the inference that writes it did not finish"
        )
    group = arrays.open_group(path)
    attrs = dict(group.attrs)
    expected = {
        "stain": stain,
        "test_set": store.attrs["data_set"],
        "store_id": store.store_id,
        "model": model,
    }
    wrong = [
        f"{key} {attrs.get(key)!r}, not {value!r}"
        for key, value in expected.items()
        if value is not None and attrs.get(key) != value
    ]
    if wrong:
        raise VsgridError(
            f"prediction {path} is not the one asked for: {'; '.join(wrong)} "
            "(store_id differs when the store was rebuilt since)"
        )
    image = arrays.member(group, "image", path)
    if image.shape[0] != store.images("test").shape[0]:
        raise VsgridError(
            f"prediction {path} has {image.shape[0]} images but the test split of {store.path} "
            f"has {store.images('test').shape[0]}"
        )
    optional = {
        name: arrays.member(group, name, path) if name in group else None
        for name in ("labels", "tta_spread", "dropout_spread", "ood", "tta_samples")
    }
    for name, array in optional.items():
        if array is not None and array.shape[0] != image.shape[0]:
            raise VsgridError(
                f"prediction {path}: {name} has {array.shape[0]} images, its image {image.shape[0]}"
            )
    ood = optional.pop("ood")
    return Prediction(
        path,
        image,
        attrs=attrs,
        **optional,
        ood=None if ood is None else np.asarray(ood[:], np.float64),
    )
