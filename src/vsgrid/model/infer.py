"""Batched inference: a trained generator over a test set, written into a Zarr group.

A prediction is a Zarr v3 group whose ``image`` array, (N, H, W) uint16 in the stain's units, is
aligned index for index with the test split of the test set's store (one image per chunk); its
attributes name the model, the stain, the test set and the ``store_id`` of the store it was
predicted from. Beside it, when asked (:mod:`vsgrid.model.uncertainty`): ``tta_spread`` and
``dropout_spread`` (N, H, W) float32, each pixel's spread over test-time augmentation and over
Monte Carlo dropout in the stain's counts, and ``ood`` (N,), each field's out-of-distribution
score. (The evaluation adds the prediction's own masks, ``labels``.)

Images are padded to a multiple of 2 ** n_downsample and cropped back, never resized, so a test
set of another image size works. Reading the next batch and writing the last one run in threads
beside the forward pass, so a GPU does not wait on the file system.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import zarr
from tqdm import tqdm

from vsgrid import __version__, arrays
from vsgrid.data.pairs import count_scale, denormalize, iter_batches, normalize
from vsgrid.data.store import Store, as_uint16, open_store
from vsgrid.errors import VsgridError
from vsgrid.files import atomic_path
from vsgrid.grid import Model
from vsgrid.model import checkpoint
from vsgrid.model.device import Device
from vsgrid.model.network import GlobalGenerator, NetworkConfig, pad_to_multiple
from vsgrid.model.reference import OodReference
from vsgrid.model.uncertainty import (
    dropout_spread,
    fit_reference,
    pool,
    running_spread,
    split_generator,
    tta_passes,
)

log = logging.getLogger(__name__)


def load_generator(model_dir: str | Path, device: Device, net: NetworkConfig | None = None):
    """The best generator of a model folder and its checkpoint (stain, statistics, network).

    The checkpoint must be the model the folder is named after (when it is named like one) and,
    when ``net`` is given, have that network shape.
    """
    path = Path(model_dir) / "best.pt"
    saved = checkpoint.load(path, kind="generator")
    try:
        named = Model.parse(Path(model_dir).name)
    except ValueError:
        named = None  # a folder its user named: the checkpoint says what it is
    checkpoint.check_compatible(saved, path, net or NetworkConfig(**saved["network"]), named)
    generator = GlobalGenerator(NetworkConfig(**saved["network"]))
    try:
        generator.load_state_dict(saved["generator"])
    except RuntimeError as exc:
        raise VsgridError(f"{path}: weights do not fit the network it declares: {exc}") from None
    return device.prepare(generator).eval(), saved


def prefetched(items: Iterable, depth: int = 2) -> Iterator:
    """``items``, produced by a background thread up to ``depth`` ahead of the consumer."""
    buffer: queue.Queue = queue.Queue(depth)
    done = object()

    def produce():
        try:
            for item in items:
                buffer.put(item)
            buffer.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put(exc)

    threading.Thread(target=produce, daemon=True).start()
    while (item := buffer.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


class Predicted(NamedTuple):
    """A batch's prediction (B, H, W) uint16 and, when asked for, its spreads over test-time
    augmentation and over MC dropout (B, H, W) float32 in the stain's counts, its fields' OOD
    scores (B,) and the first passes of its test-time augmentation (B, K, H, W) uint16, the
    prediction itself first."""

    image: np.ndarray
    tta_spread: np.ndarray | None = None
    dropout_spread: np.ndarray | None = None
    ood: np.ndarray | None = None
    tta_samples: np.ndarray | None = None


class Predictor:
    """A model's generator, loaded once and kept on its device for every test set it predicts."""

    def __init__(
        self,
        model_dir: str | Path,
        device_settings: dict | None = None,
        network: dict | None = None,
    ):
        self.model_dir = Path(model_dir)
        self.device = Device.pick(device_settings)
        self.generator, self.saved = load_generator(
            model_dir, self.device, NetworkConfig.from_config(network) if network else None
        )
        self.net = NetworkConfig(**self.saved["network"])
        self.trunk, self.head, self.trunk_multiple = split_generator(self.generator)
        log.info(
            "%s on %s%s",
            self.model_dir.name,
            self.device,
            " (bf16 autocast)" if self.device.bf16 else "",
        )

    @property
    def stain(self) -> str:
        return self.saved["stain"]

    def ood_reference(
        self, train_store: Store, *, train_fields: int | None, batch_size: int
    ) -> OodReference:
        """The OOD reference of this generator on its train set's store."""
        return fit_reference(
            self.generator,
            self.device,
            train_store,
            self.saved["stats"]["bf"],
            train_fields=train_fields,
            batch_size=batch_size,
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (height, width) = pad_to_multiple(x, self.net.multiple)
        return self.generator(padded)[..., :height, :width]

    def predict(
        self,
        bf_counts: np.ndarray,
        *,
        tta: bool = False,
        mc_dropout: int = 0,
        reference: OodReference | None = None,
        samples: int = 0,
    ) -> Predicted:
        """A batch of BF fields (B, H, W) uint16 -> the stain (B, H, W) uint16, with the TTA
        spread when ``tta`` (and its first ``samples`` passes), the spread over ``mc_dropout``
        dropout passes when 2 or more, and the OOD scores against ``reference`` when given. The
        prediction is the untransformed, deterministic pass whatever is asked beside it; the
        trunk's output on the way is what the OOD score pools."""
        stats = self.saved["stats"]
        x = self.device.to(torch.from_numpy(normalize(bf_counts, stats["bf"])[:, None]))
        padded, (height, width) = pad_to_multiple(x, self.net.multiple)
        with torch.no_grad(), self.device.autocast():
            bottleneck = self.trunk(padded)
            fake = self.head(bottleneck)[..., :height, :width]
            ood = None
            if reference is not None:
                ood = reference.score(pool(bottleneck, height, width, self.trunk_multiple))
            passes = tta_passes(self._forward, x, first=fake) if tta else iter(())
            kept = list(islice(passes, samples))  # the samples stream through the spread too
            spreads = {
                "tta_spread": running_spread(chain(kept, passes)) if tta else None,
                "dropout_spread": dropout_spread(
                    self.generator, self._forward, x, samples=mc_dropout
                )
                if mc_dropout
                else None,
            }
        scale = count_scale(stats[self.stain])
        counts = {
            name: None if spread is None else (spread.cpu().numpy()[:, 0] * scale).astype("float32")
            for name, spread in spreads.items()
        }
        return Predicted(
            self._counts(fake),
            **counts,
            ood=ood,
            tta_samples=np.stack([self._counts(y) for y in kept], axis=1) if kept else None,
        )

    def _counts(self, output: torch.Tensor) -> np.ndarray:
        """The generator's (B, 1, H, W) output as the stain's (B, H, W) uint16 counts."""
        values = output.float().cpu().numpy()[:, 0]
        if not np.isfinite(values).all():
            raise VsgridError(
                "the generator produced NaN or infinite values; its weights are broken (retrain the model)"
            )
        return as_uint16(denormalize(values, self.saved["stats"][self.stain]))

    def attributes(self, store: Store) -> dict:
        return {
            "model": self.model_dir.name,
            "train_set": self.saved["train_set"],
            "stain": self.stain,
            "seed": self.saved["seed"],
            "test_set": store.attrs["data_set"],
            "test_store": str(store.path),
            "store_id": store.store_id,
            "device": str(self.device),
            "bf16": self.device.bf16,
            "vsgrid": __version__,
        }

    def _batches(self, store: Store, batch_size: int, progress: bool):
        """The test split's BF, read ahead in a thread, a batch at a time, with a progress bar."""
        n = store.images("test").shape[0]
        return tqdm(
            prefetched(iter_batches(store.path, "test", batch_size, channels=("bf",))),
            total=-(-n // batch_size),
            desc=f"{self.model_dir.name} on {store.path.stem}",
            disable=not progress,
            unit="batch",
        )

    def predict_test_set(
        self,
        store: Store,
        group: zarr.Group,
        batch_size: int,
        progress: bool = True,
        *,
        tta: bool = False,
        mc_dropout: int = 0,
        reference: OodReference | None = None,
        samples: int = 0,
    ) -> zarr.Array:
        """Predict the test split of ``store`` into ``group["image"]``; returns that array.

        With ``tta``, ``group["tta_spread"]`` (N, H, W) float32 holds each pixel's TTA spread in
        the stain's counts, and with ``samples`` ``group["tta_samples"]`` (N, samples, H, W)
        uint16 its first passes, the prediction first; with ``mc_dropout`` passes,
        ``group["dropout_spread"]`` its spread over them; with a ``reference``, ``group["ood"]``
        (N,) each field's OOD score.
        """
        if samples and not tta:
            raise VsgridError("infer.feature_samples draws TTA's passes: it needs infer.tta")
        n, _, height, width = store.images("test").shape
        self.net.check_size(height, width, f"the test images of {store.path}")
        options = {"tta": tta, "mc_dropout": mc_dropout, "samples": samples}
        written = _prediction_arrays(group, (n, height, width), **options)
        ood = np.full(n, np.nan)
        group.attrs.update(self.attributes(store))
        bar = self._batches(store, batch_size, progress)

        def write(rows: slice, predicted: Predicted) -> None:
            for name, array in written.items():
                array[rows] = getattr(predicted, name)

        with ThreadPoolExecutor(1) as writer:
            pending = None
            for indices, bf in bar:
                try:
                    predicted = self.predict(bf[:, 0], reference=reference, **options)
                except VsgridError as exc:
                    raise VsgridError(
                        f"{self.model_dir} on images {indices[0]}..{indices[-1]} of {store.path}: {exc}"
                    ) from None
                if reference is not None:
                    ood[indices] = predicted.ood
                if pending is not None:
                    pending.result()
                pending = writer.submit(write, slice(indices[0], indices[-1] + 1), predicted)
            if pending is not None:
                pending.result()
        if reference is not None:
            arrays.create(group, (n,), chunks=(max(n, 1),), dtype="float64", name="ood")[:] = ood
        return written["image"]


def _prediction_arrays(
    group: zarr.Group, shape: tuple[int, int, int], *, tta: bool, mc_dropout: int, samples: int
) -> dict[str, zarr.Array]:
    """The arrays of a prediction of (N, H, W) fields, one field per chunk, named as
    :class:`Predicted`'s fields: the uint16 stain, and as asked the float32 spreads and the TTA
    samples (N, samples, H, W) uint16."""
    n, *plane = shape
    asked = {"image": True, "tta_spread": tta, "dropout_spread": mc_dropout, "tta_samples": samples}
    layouts = {  # name: (the axes between the field index and the plane, dtype)
        "image": ((), "uint16"),
        "tta_spread": ((), "float32"),
        "dropout_spread": ((), "float32"),
        "tta_samples": ((samples,), "uint16"),
    }
    return {
        name: arrays.create(
            group, (n, *extra, *plane), chunks=(1, *extra, *plane), dtype=dtype, name=name
        )
        for name, (extra, dtype) in layouts.items()
        if asked[name]
    }


def infer(
    model_dir: str | Path,
    test_store: str | Path,
    out: str | Path,
    *,
    batch_size: int,
    device_settings: dict | None = None,
    network: dict | None = None,
    progress: bool = True,
) -> Path:
    """Write the prediction of the model in ``model_dir`` for the test split of ``test_store`` to
    the group ``out``, atomically. ``device_settings`` and ``network`` are the config's sections;
    a checkpoint of another network shape is refused."""
    predictor = Predictor(model_dir, device_settings, network)
    store = open_store(test_store)
    with atomic_path(out) as tmp:
        predictor.predict_test_set(
            store, zarr.open_group(tmp, mode="w", zarr_format=3), batch_size, progress
        )
    log.info("wrote %s (%d images)", out, store.images("test").shape[0])
    return Path(out)
