"""Deterministic random streams named by what they are for."""

from __future__ import annotations

import zlib

import numpy as np


def stable_id(name: str) -> int:
    """A process-independent integer for a name (Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode())


def rng_for(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator seeded by ``seed`` and the keys: the same keys always give the same stream."""
    return np.random.default_rng([seed, *(k if isinstance(k, int) else stable_id(k) for k in keys)])
