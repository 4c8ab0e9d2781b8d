"""Batched inference: a trained generator over a test set, written as a Zarr array.

The prediction ``<out>`` is a Zarr v3 array of shape (N, H, W) uint16 in the stain's units,
aligned index for index with the test split of the test set's store (one image per chunk), with
the model, stain and test set in its attributes. Images are padded to a multiple of
2 ** n_downsample and cropped back, never resized, so a test set of another image size works.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vsgrid import __version__, arrays
from vsgrid.data.pairs import denormalize, iter_batches, normalize
from vsgrid.data.store import as_uint16, open_store
from vsgrid.errors import VsgridError
from vsgrid.grid import Model
from vsgrid.files import atomic_path
from vsgrid.model import checkpoint
from vsgrid.model.device import Device
from vsgrid.model.network import GlobalGenerator, NetworkConfig, pad_to_multiple

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


def predict(generator, bf_counts: np.ndarray, saved: dict, device: Device) -> np.ndarray:
    """Predict a batch of BF fields (B, H, W) uint16 -> stain (B, H, W) uint16."""
    x = torch.from_numpy(normalize(bf_counts, saved["stats"]["bf"])[:, None])
    padded, (height, width) = pad_to_multiple(device.to(x), NetworkConfig(**saved["network"]).multiple)
    with torch.no_grad(), device.autocast():
        fake = generator(padded)[..., :height, :width]
    values = fake.float().cpu().numpy()[:, 0]
    if not np.isfinite(values).all():
        raise VsgridError("the generator produced NaN or infinite values; its weights are broken (retrain the model)")
    return as_uint16(denormalize(values, saved["stats"][saved["stain"]]))


def infer(model_dir: str | Path, test_store: str | Path, out: str | Path, *, batch_size: int, device_settings: dict | None = None, network: dict | None = None, progress: bool = True) -> Path:
    """Write the predictions of the model in ``model_dir`` for the test split of ``test_store``.

    ``device_settings`` and ``network`` are the config's sections; a checkpoint of another network
    shape is refused.
    """
    device = Device.pick(device_settings)
    net = NetworkConfig.from_config(network) if network else None
    generator, saved = load_generator(model_dir, device, net)
    store = open_store(test_store)
    images = store.images("test")
    n, _, height, width = images.shape
    NetworkConfig(**saved["network"]).check_size(height, width, f"the test images of {store.path}")
    out = Path(out)
    with atomic_path(out) as tmp:
        prediction = arrays.create(tmp, shape=(n, height, width), chunks=(1, height, width), dtype="uint16")
        prediction.attrs.update(
            {
                "model": Path(model_dir).name,
                "train_set": saved["train_set"],
                "stain": saved["stain"],
                "seed": saved["seed"],
                "test_set": store.attrs.get("data_set", store.path.stem),
                "test_store": str(store.path),
                "store_id": store.store_id,
                "device": str(device.torch_device),
                "bf16": device.bf16,
                "vsgrid": __version__,
            }
        )
        batches = iter_batches(test_store, "test", batch_size, channels=("bf",))
        for indices, bf in tqdm(batches, total=-(-n // batch_size), desc=f"{Path(model_dir).name} on {store.path.stem}", disable=not progress, unit="batch"):
            try:
                prediction[indices[0] : indices[-1] + 1] = predict(generator, bf[:, 0], saved, device)
            except VsgridError as exc:
                raise VsgridError(f"{model_dir} on images {indices[0]}..{indices[-1]} of {store.path}: {exc}") from None
    log.info("wrote %s (%d images)", out, n)
    return out
