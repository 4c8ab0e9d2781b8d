"""Reading a store for training and inference: (BF, stain) pairs, normalisation, test-set batches.

Nothing here imports torch: :class:`StainPairs` is a map-style dataset (``len`` and indexing),
which ``torch.utils.data.DataLoader`` accepts as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vsgrid.data.store import CHANNELS, open_store
from vsgrid.errors import VsgridError

U16_LEVELS = 1 << 16


def normalization_stats(
    store_path: str | Path,
    split: str = "train",
    channels=CHANNELS,
    max_images: int = 512,
    low: float = 0.1,
    high: float = 99.9,
) -> dict[str, dict[str, float]]:
    """Per-channel statistics of a split, to normalise 16-bit images the same way everywhere.

    Exact percentiles from a 65,536-bin histogram of up to ``max_images`` evenly spaced images,
    accumulated one image at a time (memory does not grow with the split).

    Returns
    -------
    dict
        ``{channel: {"low": p_low, "high": p_high, "mean": m, "std": s}}``, in uint16 counts.
    """
    store = open_store(store_path)
    images = store.images(split)
    if images.shape[0] == 0:
        raise VsgridError(f"{store.path}: split {split!r} is empty; no normalisation statistics")
    picks = np.unique(
        np.linspace(0, images.shape[0] - 1, min(max_images, images.shape[0])).astype(int)
    )
    index = [store.channel_index(c) for c in channels]
    histograms = np.zeros((len(channels), U16_LEVELS), np.int64)
    for i in picks:
        field = images[int(i)]
        for k, c in enumerate(index):
            histograms[k] += np.bincount(field[c].ravel(), minlength=U16_LEVELS)
    levels = np.arange(U16_LEVELS, dtype=np.float64)
    stats = {}
    for channel, histogram in zip(channels, histograms):
        cdf = np.cumsum(histogram) / histogram.sum()
        mean = float((histogram * levels).sum() / histogram.sum())
        std = float(np.sqrt((histogram * (levels - mean) ** 2).sum() / histogram.sum()))
        p_low, p_high = (float(np.searchsorted(cdf, q / 100.0)) for q in (low, high))
        stats[channel] = {"low": p_low, "high": max(p_high, p_low + 1.0), "mean": mean, "std": std}
    return stats


def count_scale(stats: dict[str, float]) -> float:
    """Counts per unit of the normalised scale: what a spread of normalised values is multiplied
    by to be one in counts."""
    return (stats["high"] - stats["low"]) / 2.0


def normalize(counts: np.ndarray, stats: dict[str, float]) -> np.ndarray:
    """uint16 counts -> float32 with the low percentile at -1 and the high one at +1 (not clipped)."""
    scale = count_scale(stats)
    return ((np.asarray(counts, np.float32) - stats["low"]) / scale - 1.0).astype(np.float32)


def denormalize(values: np.ndarray, stats: dict[str, float]) -> np.ndarray:
    """Inverse of :func:`normalize`, back to float counts (round and clip to store as uint16)."""
    return (np.asarray(values, np.float64) + 1.0) * count_scale(stats) + stats["low"]


class StainPairs:
    """Random access to normalised (BF, stain) pairs of one split.

    ``pairs[i]`` is a tuple of two float32 arrays of shape (1, H, W). ``stats`` are the
    training-set statistics of :func:`normalization_stats` (they must cover ``bf`` and the stain).
    A split whose two channels take at most ``preload_mb`` is read into memory once (a training
    step then reads no store: a quick model trains 16 % faster on a CPU); a larger one is
    read field by field from a store opened lazily, so the object can be sent to data-loader
    worker processes.
    """

    def __init__(
        self, store_path: str | Path, split: str, stain: str, stats: dict, *, preload_mb: float = 0
    ):
        self.store_path, self.split, self.stain, self.stats = Path(store_path), split, stain, stats
        store = open_store(store_path)
        # Workers reopen the store: on the build this object was made on, or they stop.
        self._build = store.build
        self._channels = [store.channel_index("bf"), store.channel_index(stain)]
        images = store.images(split)
        self._length = int(images.shape[0])
        self._images = None
        self._fields = None
        if (
            self._length * 2 * images.shape[-2] * images.shape[-1] * images.dtype.itemsize
            <= preload_mb * 2**20
        ):
            self._fields = np.concatenate(
                [fields for _, fields in iter_batches(store_path, split, 64, ("bf", stain))]
            )

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i: int):
        if not -self._length <= i < self._length:
            raise IndexError(f"index {i} out of range for {self._length} images")
        if self._fields is not None:
            bf, target = self._fields[int(i)]
        else:
            if self._images is None:
                self._images = open_store(self.store_path, self._build).images(self.split)
            bf, target = self._images[int(i)][self._channels]
        return normalize(bf[None], self.stats["bf"]), normalize(
            target[None], self.stats[self.stain]
        )

    def __getstate__(self):
        return {**self.__dict__, "_images": None}


def iter_batches(
    store_path: str | Path, split: str, batch_size: int, channels=CHANNELS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream a split in order, ``batch_size`` fields at a time, never holding the whole split.

    Yields ``(indices, images)`` with ``images`` of shape (B, len(channels), H, W) uint16.
    """
    store = open_store(store_path)
    images = store.images(split)
    index = [store.channel_index(c) for c in channels]
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        yield np.arange(start, stop), np.stack([images[start:stop, c] for c in index], axis=1)
