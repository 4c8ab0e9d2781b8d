"""Checkpoints of a model folder: one format, one builder, one loader, one compatibility check.

Two kinds share the format:

- ``training`` (``last.pt``): everything needed to resume: both networks, both optimisers and the
  trainer's state;
- ``generator`` (``best.pt``): the generator with the lowest validation L1, what inference loads.

Both carry the network settings (:class:`~vsgrid.model.network.NetworkConfig`), the model (train
set, stain, seed) and the training set's normalisation statistics, so a checkpoint says by itself
what it is and how to feed it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vsgrid.errors import VsgridError
from vsgrid.files import disk_full, read_weights, sealed_path
from vsgrid.grid import Model
from vsgrid.model.network import NetworkConfig

FORMAT = 1
FILES = {"training": "last.pt", "generator": "best.pt"}


def payload(
    kind: str, net: NetworkConfig, model: Model, stats: dict, generator: torch.nn.Module, **extra
) -> dict:
    """The checkpoint dictionary of ``kind`` (``training`` or ``generator``); the generator's
    weights are copied to the CPU, so a payload kept in memory stays what it was when made."""
    return {
        "format": FORMAT,
        "kind": kind,
        "network": net.as_dict(),
        "train_set": model.train_set.name,
        "stain": model.stain,
        "seed": model.seed,
        "stats": stats,
        "generator": {
            k: v.detach().to("cpu", copy=True) for k, v in generator.state_dict().items()
        },
        **extra,
    }


# What torch says when it cannot write a checkpoint's bytes: a short write ("unexpected pos")
# or a failed one, the disk being full, which its C++ writer does not report by errno.
_TORCH_WRITE_FAILED = ("No space left", "file write failed", "unexpected pos")


def save(checkpoint: dict, path: Path) -> None:
    """torch.save through a temporary file and a rename (a kill never leaves half a checkpoint),
    sealed with its digest (a flipped byte is an error on load, not other weights)."""
    try:
        with sealed_path(path) as tmp:
            torch.save(checkpoint, tmp)
    except (RuntimeError, OSError) as exc:  # torch reports even a full disk as a RuntimeError
        full = any(s in str(exc) for s in _TORCH_WRITE_FAILED)
        why = disk_full(path) if full else str(exc).splitlines()[0][:200]
        raise VsgridError(f"cannot write checkpoint {path}: {why}") from None


def load(path: str | Path, kind: str | None = None) -> dict:
    """Load a checkpoint (of ``kind``, if given); a missing, truncated, damaged, foreign or
    other-kind file is a :class:`VsgridError`."""
    path = Path(path)
    checkpoint = read_weights(path, "checkpoint", "a vsgrid checkpoint", sealed=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise VsgridError(f"checkpoint {path} is not a vsgrid checkpoint of format {FORMAT}")
    if kind is not None and checkpoint.get("kind") != kind:
        theirs = checkpoint.get("kind")
        raise VsgridError(
            f"checkpoint {path} is a {theirs} checkpoint (what {FILES.get(theirs, '?')} holds), "
            f"not a {kind} checkpoint ({FILES[kind]})"
        )
    return checkpoint


def check_compatible(
    checkpoint: dict, path: Path, net: NetworkConfig, model: Model | None = None
) -> None:
    """A checkpoint must be of the expected model (train set, stain, seed) and network shape."""
    if model is not None:
        if checkpoint["stain"] != model.stain:
            raise VsgridError(
                f"checkpoint {path} was trained for stain {checkpoint['stain']!r}, not {model.stain!r}"
            )
        if (checkpoint["train_set"], checkpoint["seed"]) != (model.train_set.name, model.seed):
            raise VsgridError(
                f"checkpoint {path} belongs to {checkpoint['train_set']} seed {checkpoint['seed']}, not {model.name}"
            )
    theirs = checkpoint["network"]
    differences = [
        f"{k} {theirs.get(k)} (config: {v})" for k, v in net.as_dict().items() if theirs.get(k) != v
    ]
    if differences:
        raise VsgridError(f"checkpoint {path} has another network shape: {', '.join(differences)}")
