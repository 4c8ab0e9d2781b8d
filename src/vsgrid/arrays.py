"""Zarr arrays that say when they are damaged.

Every array vsgrid writes (stores, predictions, label stacks) is created by :func:`create`: zstd
with its content checksum, so a flipped byte fails to decode, and every chunk written even when it
is all zeros, so a chunk file that is missing means damage, never "empty". Every array vsgrid reads
is opened through :func:`open_array` or :func:`open_group`, which return a :class:`Stack`: a
missing chunk, or one that fails to decode, is a :class:`~vsgrid.errors.VsgridError` naming the
array and the chunk instead of a silent block of zeros or a bare codec error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import zarr
import zarr.core.sync
from zarr.codecs import ZstdCodec
from zarr.storage import LocalStore, WrapperStore

from vsgrid.errors import VsgridError
from vsgrid.files import identity

COMPRESSORS = [ZstdCodec(level=3, checksum=True)]
ALWAYS_WRITE = {"write_empty_chunks": True}
# Per-array config does not survive reopening an array (it is not stored in its metadata), and a
# writer fills arrays it reopens from their group: every array of this process writes every chunk.
zarr.config.set({"array.write_empty_chunks": True})
# Every key of a store that is not metadata is a chunk: Zarr v3's ".../c/3/0/0/0" and Zarr v2's
# ".../3.0.0.0" or ".../3/0/0/0" (the OME-Zarr plates vsgrid ingests are of either).
_METADATA = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})


class MissingChunk(FileNotFoundError):
    pass


def _is_chunk(key: str) -> bool:
    return key.rsplit("/", 1)[-1] not in _METADATA


class _StrictStore(WrapperStore[LocalStore]):
    """A local store for which a missing chunk is an error, not the fill value."""

    async def get(self, key, prototype=None, byte_range=None):
        buffer = await self._store.get(key, prototype, byte_range)
        if buffer is None and _is_chunk(key):
            raise MissingChunk(key)
        return buffer

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        buffers = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), buffer in zip(key_ranges, buffers):
            if buffer is None and _is_chunk(key):
                raise MissingChunk(key)
        return buffers


@dataclass(frozen=True)
class Build:
    """Which build of a store a reader opened. A rebuild in place (``vsgrid ingest``, ``vsgrid
    synthesize``) renames a new folder over the old one, and Zarr reads chunks by path: a reader
    would go on in the new build. ``marker``, a file every build writes anew, then is another
    file, which :meth:`check` finds (one stat)."""

    store: Path
    marker: Path
    identity: tuple | None

    @classmethod
    def of(cls, store: Path, marker: str) -> Build:
        return cls(store, store / marker, cls._identity(store / marker))

    @staticmethod
    def _identity(marker: Path) -> tuple | None:
        try:
            return identity(marker)
        except FileNotFoundError:
            return None

    def check(self) -> None:
        """Raise if the store at the path is no longer the build opened."""
        if self._identity(self.marker) != self.identity:
            raise VsgridError(
                f"{self.store} was rebuilt while being read (what was read mixes two builds); "
                "run this step again"
            )


class Stack:
    """A Zarr array read through checks: ``stack[i]`` as with Zarr, errors naming file and chunk.

    An array of a store's ``build`` checks after each read that the store is still that build,
    so a read that straddles a rebuild, or comes after it, is an error."""

    def __init__(self, array: zarr.Array, path: Path, build: Build | None = None):
        self.array, self.path, self.build = array, Path(path), build

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    chunks = property(lambda self: self.array.chunks)
    ndim = property(lambda self: self.array.ndim)
    attrs = property(lambda self: self.array.attrs)

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, selection):
        try:
            values = self.array[selection]
        except MissingChunk as missing:
            settle()
            self._check_build()  # a chunk missing from a build removed meanwhile is no damage
            key = missing.args[0]
            raise VsgridError(
                f"{self.path}: chunk {key[key.rfind('c/') :]} is missing (the array is damaged; rebuild it)"
            ) from None
        except (RuntimeError, ValueError, OSError) as exc:
            settle()
            self._check_build()
            raise VsgridError(
                f"{self.path}: a chunk of images {self._describe(selection)} cannot be decoded "
                f"({' '.join(str(exc).split())}); the array is damaged, rebuild it"
            ) from None
        self._check_build()
        return values

    def _check_build(self) -> None:
        if self.build is not None:
            self.build.check()

    def _describe(self, selection) -> str:
        """The images of a selection, as a user counts them: "3", "0..31"."""
        first = selection[0] if isinstance(selection, tuple) else selection
        if isinstance(first, slice):
            images = range(len(self))[first]
            if len(images) > 1:
                return f"{images[0]}..{images[-1]}"
            first = images[0] if images else "none"
        return str(first)


def settle() -> None:
    """Wait for the chunk reads that a failed read leaves running on zarr's event loop: still
    pending when the interpreter exits, each would print a traceback after the one-line error."""

    async def others() -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        await asyncio.gather(*pending, return_exceptions=True)

    zarr.core.sync.sync(others())


def create(
    where: zarr.Group | str | Path, shape, chunks, dtype, name: str | None = None, shards=None
) -> zarr.Array:
    """A new array with checksums, every chunk written: ``name`` in a group, or an array at a path.

    ``shards`` groups chunks into one file each (a field's channels, say), so that reading one
    channel decodes one chunk while the file system holds one file per field.
    """
    options = {
        "shape": shape,
        "chunks": chunks,
        "shards": shards,
        "dtype": dtype,
        "compressors": COMPRESSORS,
        "config": ALWAYS_WRITE,
    }
    if isinstance(where, zarr.Group):
        return where.create_array(name, **options)
    return zarr.create_array(where, zarr_format=3, **options)


def _strict(path: Path) -> _StrictStore:
    return _StrictStore(LocalStore(path, read_only=True))


def open_array(path: str | Path) -> Stack:
    """An array written by :func:`create`, opened for checked reading."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise VsgridError(
            f"{path} is not a Zarr array (no zarr.json); the step that writes it did not finish"
        )
    try:
        return Stack(zarr.open_array(_strict(path), mode="r"), path)
    except (ValueError, OSError) as exc:
        raise VsgridError(f"{path} cannot be opened as a Zarr array: {exc}") from None


def open_group(path: str | Path) -> zarr.Group:
    """A group for checked reading: wrap its arrays with :func:`member`."""
    return zarr.open_group(_strict(Path(path)), mode="r")


def member(group: zarr.Group, name: str, path: Path, build: Build | None = None) -> Stack:
    return Stack(group[name], Path(path) / name, build)
