"""What a generator can say about its own predictions, without the real stain.

- **Test-time augmentation (TTA).** The generator is run on the 8 flips and 90-degree rotations
  of a field (the dihedral group of the square), each output turned back; the per-pixel standard
  deviation of the 8 is the prediction's *spread*. Cells have no orientation, so a model that has
  learnt the stain and not its training fields' accidents agrees with itself; reflection padding
  and strided convolutions make even a perfect Pix2PixHD only nearly equivariant, and a model
  that is unsure of a field tells it apart by much more than that. The prediction itself stays
  the untransformed pass.
- **Monte Carlo dropout** (``infer.mc_dropout``, off by default): where the generator was
  trained with dropout in its residual blocks (``network.dropout``, pix2pixHD's
  ``use_dropout``), the per-pixel standard deviation of passes with dropout left sampling. A
  model trained without dropout has none to sample; asking for it is an error.
- **Out-of-distribution (OOD) score.** A field's *bottleneck features* are the mean and standard
  deviation over space of each channel at the end of the generator's residual trunk (before
  upsampling). Its OOD score is the Mahalanobis distance of those features to the features of
  (up to a number of, evenly spaced) fields of the training split of the model's train set, with
  a Ledoit-Wolf shrinkage covariance: a few hundred fields estimate a covariance of thousands of
  features only with shrinkage. The trunk is the first part of the generator's own pass, so a
  prediction's OOD score costs no second pass.

Both run beside inference (:mod:`vsgrid.model.infer`), which writes them into each prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from vsgrid.data.pairs import normalize
from vsgrid.data.store import Store
from vsgrid.errors import VsgridError
from vsgrid.model.device import Device
from vsgrid.model.network import ResnetBlock, pad_to_multiple
from vsgrid.model.reference import OodReference, evenly_spaced

# The dihedral group of the square, identity first: (quarter turns, mirrored first).
DIHEDRAL = tuple((turns, mirror) for mirror in (False, True) for turns in range(4))


# --------------------------------------------------------------------------- test-time augmentation


def transform(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    """(..., H, W) mirrored left-right (when ``mirror``), then turned ``turns`` quarter turns."""
    x = torch.flip(x, (-1,)) if mirror else x
    return torch.rot90(x, turns, (-2, -1))


def untransform(y: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    """The inverse of :func:`transform`."""
    y = torch.rot90(y, -turns, (-2, -1))
    return torch.flip(y, (-1,)) if mirror else y


def running_spread(outputs: Iterable[torch.Tensor], *, ddof: int = 0) -> torch.Tensor:
    """The per-element standard deviation of ``outputs`` (two or more tensors of one shape),
    accumulated one at a time (Welford: memory two tensors, no cancellation however close)."""
    count, mean, squares = 0, None, None
    for y in outputs:
        y = y.float()
        count += 1
        if mean is None:
            mean, squares = y.clone(), torch.zeros_like(y)
            continue
        step = y - mean
        mean += step / count
        squares += step * (y - mean)
    return torch.sqrt(squares / (count - ddof))


def tta_passes(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    first: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """``forward`` of each of the 8 dihedral transforms of ``x``, turned back, in
    :data:`DIHEDRAL`'s order: ``forward(x)`` first (``first``, when the caller has it already, is
    not computed again), then the 4 quarter turns' others, then the mirrored ones.

    ``forward`` maps (B, C, H, W) to (B, C', H, W) for any H and W (a quarter turn swaps them).
    """
    yield forward(x) if first is None else first
    for t in DIHEDRAL[1:]:
        yield untransform(forward(transform(x, *t)), *t)


def tta_spread(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    first: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``forward(x)`` and the per-pixel standard deviation (ddof 0: the 8 are the whole group) of
    the 8 :func:`tta_passes`."""
    first = forward(x) if first is None else first
    return first, running_spread(tta_passes(forward, x, first=first))


@contextmanager
def dropout_on(generator: nn.Module) -> Iterator[None]:
    """The generator's dropout layers sampling (train mode), the rest as they were."""
    layers = [m for m in generator.modules() if isinstance(m, nn.Dropout)]
    modes = [m.training for m in layers]
    try:
        for m in layers:
            m.train()
        yield
    finally:
        for m, mode in zip(layers, modes):
            m.train(mode)


def dropout_spread(
    generator: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    samples: int,
) -> torch.Tensor:
    """Monte Carlo dropout: the per-pixel standard deviation (ddof 1: the passes are a sample) of
    ``samples`` passes of ``forward`` with the generator's dropout sampling. A generator without
    dropout (``network.dropout`` 0) has nothing to sample: an error, not a spread of 0."""
    if not any(isinstance(m, nn.Dropout) for m in generator.modules()):
        raise VsgridError(
            "infer.mc_dropout needs a generator trained with dropout (network.dropout > 0)"
        )
    if samples < 2:
        raise VsgridError(f"infer.mc_dropout is {samples}: a spread needs 2 passes or more")
    with dropout_on(generator):
        return running_spread((forward(x) for _ in range(samples)), ddof=1)


# --------------------------------------------------------------------------- the bottleneck


def split_generator(generator: nn.Module) -> tuple[nn.Sequential, nn.Sequential, int]:
    """The generator's trunk (its layers up to its last residual block), the rest, and the factor
    the trunk downsamples by: ``rest(trunk(x))`` is ``generator(x)``, the same layers in order."""
    layers = generator.model
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, ResnetBlock))
    strided = [m for m in layers[:last] if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    return layers[: last + 1], layers[last + 1 :], 2 ** len(strided)


def pool(bottleneck: torch.Tensor, height: int, width: int, multiple: int) -> np.ndarray:
    """Each channel's mean, then its standard deviation, over the bottleneck pixels that cover a
    (height x width) field, not its padding: (B, 2 x channels) float64."""
    x = bottleneck[..., : -(-height // multiple), : -(-width // multiple)].float()
    return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1).cpu().numpy().astype(np.float64)


def bottleneck_features(
    generator: nn.Module, device: Device, bf_batches: Iterable[np.ndarray]
) -> np.ndarray:
    """Bottleneck features (:func:`pool`) of normalised BF fields, batch by batch, the generator
    in eval mode.

    Parameters
    ----------
    bf_batches
        (B, H, W) float32 arrays, normalised as in training (:func:`vsgrid.data.pairs.normalize`).
    """
    trunk, _, multiple = split_generator(generator.eval())
    pooled = []
    with torch.no_grad(), device.autocast():
        for batch in bf_batches:
            x = device.to(torch.from_numpy(np.asarray(batch, np.float32))[:, None])
            padded, (height, width) = pad_to_multiple(x, multiple)
            pooled.append(pool(trunk(padded), height, width, multiple))
    return np.concatenate(pooled) if pooled else np.empty((0, 0))


def bf_batches(
    store: Store, split: str, picks: np.ndarray, stats: dict, batch_size: int
) -> Iterator[np.ndarray]:
    """The normalised BF of the picked fields of a split, ``batch_size`` at a time (memory stays
    one batch, whatever the split)."""
    images, bf = store.images(split), store.channel_index("bf")
    for start in range(0, len(picks), batch_size):
        chosen = picks[start : start + batch_size]
        yield normalize(np.stack([images[int(i), bf] for i in chosen]), stats)


def fit_reference(
    generator: nn.Module,
    device: Device,
    train_store: Store,
    stats: dict,
    *,
    train_fields: int | None,
    batch_size: int,
) -> OodReference:
    """The OOD reference of a generator: (up to ``train_fields`` of) the training split of the
    model's train set, normalised with the checkpoint's BF statistics ``stats``."""
    if train_fields is not None and train_fields < 2:
        raise VsgridError(f"train_fields is {train_fields}: a reference needs 2 fields or more")
    picks = evenly_spaced(train_store.images("train").shape[0], train_fields)
    batches = bf_batches(train_store, "train", picks, stats, batch_size)
    return OodReference.fit(bottleneck_features(generator, device, batches))
