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
from vsgrid.files import atomic_path
from vsgrid.grid import Model
from vsgrid.model.network import NetworkConfig

FORMAT = 1


def payload(kind: str, net: NetworkConfig, model: Model, stats: dict, generator: torch.nn.Module, **extra) -> dict:
    """The checkpoint dictionary of ``kind`` (``training`` or ``generator``)."""
    return {
        "format": FORMAT,
        "kind": kind,
        "network": net.as_dict(),
        "train_set": model.train_set.name,
        "stain": model.stain,
        "seed": model.seed,
        "stats": stats,
        "generator": generator.state_dict(),
        **extra,
    }


def save(checkpoint: dict, path: Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load(path: str | Path) -> dict:
    """Load a checkpoint; a missing, truncated or foreign file is a :class:`VsgridError`."""
    path = Path(path)
    if not path.is_file():
        raise VsgridError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise VsgridError(f"checkpoint {path} cannot be read (truncated or not a vsgrid checkpoint): {exc}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise VsgridError(f"checkpoint {path} is not a vsgrid checkpoint of format {FORMAT}")
    return checkpoint


def check_compatible(checkpoint: dict, path: Path, net: NetworkConfig, stain: str | None = None) -> None:
    """A checkpoint must be for the expected stain and network shape."""
    if stain is not None and checkpoint["stain"] != stain:
        raise VsgridError(f"checkpoint {path} was trained for stain {checkpoint['stain']!r}, not {stain!r}")
    theirs = checkpoint["network"]
    differences = [f"{k} {theirs.get(k)} (config: {v})" for k, v in net.as_dict().items() if theirs.get(k) != v]
    if differences:
        raise VsgridError(f"checkpoint {path} has another network shape: {', '.join(differences)}")
