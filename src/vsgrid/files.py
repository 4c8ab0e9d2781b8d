"""Writing a file or folder so that no reader ever sees half of it, and cleaning up after kills.

Everything vsgrid writes (stores, checkpoints, predictions, tables, figures) goes through
:func:`atomic_path` (or :func:`atomic_paths` for several results that must change together): it
is built under a temporary name beside its final path (the same file system, so the rename is
atomic) and renamed into place only when complete. A failure removes the temporary; an earlier
result at the final path stays intact until the new one replaces it.

A temporary is named after its host and process, ``.<name>.tmp-<host>-<pid>``. A process killed
outright (SIGKILL, a node failure) leaves its temporaries behind; the next write into the same
folder removes those of processes of this host that no longer exist.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from vsgrid.errors import VsgridError

if TYPE_CHECKING:
    import pandas as pd

HOST = socket.gethostname()
_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-(?P<host>.+)-(?P<pid>\d+)$")


def temporary_name(final: Path, kind: str = "tmp") -> Path:
    """The scratch path of ``final`` for this process: hidden, and named after host and process."""
    return final.with_name(f".{final.name}.{kind}-{HOST}-{os.getpid()}")


def remove(path: Path) -> None:
    """Remove a file or a folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` that dead processes of this host left; returns them."""
    stale = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _LEFTOVER.match(path.name)
        if match and match["host"] == HOST and not _alive(int(match["pid"])):
            remove(path)
            stale.append(path)
    return stale


def replace(tmp: Path, final: Path) -> None:
    """Move ``tmp`` (a file or a finished folder) to ``final``, replacing what was there.

    ``rename`` cannot replace a non-empty folder, so an old folder is renamed aside first and
    removed after; at no moment is a partial result at ``final``.
    """
    old = None
    if final.is_dir() and not final.is_symlink():
        old = temporary_name(final, "old")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_paths(finals: list[str | Path]) -> Iterator[list[Path]]:
    """Yield scratch paths to write ``finals`` to; rename them all into place when the block ends
    without error, remove them all when it does not (every earlier result then stays as it was)."""
    finals = [Path(f) for f in finals]
    tmps = [temporary_name(final) for final in finals]
    try:
        for final, tmp in zip(finals, tmps):
            final.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(final.parent)
            remove(tmp)
        yield tmps
        for tmp, final in zip(tmps, finals):
            replace(tmp, final)
    except OSError as exc:
        for tmp in tmps:
            remove(tmp)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            why = disk_full(finals[0]) if full else exc.strerror
            raise VsgridError(f"cannot write {', '.join(map(str, finals))}: {why}") from None
        raise
    except BaseException:
        for tmp in tmps:
            remove(tmp)
        raise


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a scratch path to write ``final`` to (a file or a folder); rename it into place when
    the block ends without error, remove it when it does not."""
    with atomic_paths([final]) as (tmp,):
        yield tmp


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` for this process, or fail at once naming its holder.

    Two processes writing one model folder (an orphaned trainer that outlived a killed Snakemake,
    and the trainer of the rerun) would interleave checkpoints; the second one stops instead.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        handle = stack.enter_context(open(folder / ".lock", "a+"))
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise VsgridError(
                f"{folder} is being {what} by {holder}; wait for it to end or stop it, then run again"
            ) from None
        handle.truncate(0)
        handle.write(f"process {os.getpid()} on {HOST}")
        handle.flush()
        stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        yield


def disk_full(path: Path) -> str:
    """What a write to ``path`` that found no room says: plainly, with the space left there."""
    free = shutil.disk_usage(path.parent).free / 2**30
    return f"the disk is full ({free:.2f} GiB free there)"


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


# Every file vsgrid writes that steers a result is checked on read against the SHA-256 it was
# written with, so that a flipped byte anywhere is an error naming the file, never other values:
#
# - a Parquet table carries the digest of the whole file in its footer's key-value metadata (the
#   digest's own 64 bytes read as zeros). Page checksums alone miss the page headers and the
#   footer: a row group skipped on damaged statistics, or a value read under a damaged type,
#   reads back as different values;
# - a file of another library's binary format whose readers ignore trailing bytes (a torch
#   checkpoint: a zip archive, found from its own end record) ends with a trailer
#   ``\nvsgrid.sha256 <digest>`` of the bytes before it;
# - a text table (TSV, CSV), which people and other programs read too, stays plain: its digest is
#   in a sidecar ``<name>.sha256`` in sha256sum's format (``sha256sum -c`` checks it), renamed into
#   place with the table. A store lists its Zarr metadata (every zarr.json) in such a file too.
_DIGEST_KEY = b"vsgrid.sha256"
_UNSEALED = b"0" * 64
_TRAILER = b"\nvsgrid.sha256 "
_TRAILER_SIZE = len(_TRAILER) + len(_UNSEALED)
CHECKSUMS = ".sha256"
_LISTED = re.compile(rb"([0-9a-f]{64})  ([^\n]+)\n")
_BLOCK = 1 << 20
_verified: set[tuple] = set()  # files already checked: a table read a block at a time hashes once


def identity(path: Path) -> tuple:
    """What changes when the file at ``path`` is rewritten, or replaced by a rename onto it."""
    status = path.stat()
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _damaged(what) -> VsgridError:
    return VsgridError(
        f"{what} is damaged (its bytes differ from the checksum it was written with); "
        "rerun the step that writes it"
    )


def _unchecked(what, missing: Path | None = None) -> VsgridError:
    where = f"no {missing.name}; " if missing else ""
    return VsgridError(
        f"{what} carries no vsgrid checksum ({where}written by another program or an older "
        "vsgrid); rerun the step that writes it"
    )


def _size(handle) -> int:
    return os.fstat(handle.fileno()).st_size


def _digest(handle, end: int, hole: int | None = None) -> bytes:
    """The SHA-256, hex, of a file's first ``end`` bytes, the 64 at ``hole`` taken as
    :data:`_UNSEALED` (where the digest itself is written)."""
    digest = hashlib.sha256()
    handle.seek(0)
    position = 0
    while position < end:
        if position == hole:
            digest.update(_UNSEALED)
            position = handle.seek(len(_UNSEALED), os.SEEK_CUR)
            continue
        stop = hole if hole is not None and position < hole else end
        block = handle.read(min(_BLOCK, stop - position))
        if not block:  # truncated while being read
            break
        digest.update(block)
        position += len(block)
    return digest.hexdigest().encode()


def _footer(handle) -> tuple[int, bytes]:
    """Where a Parquet file's footer starts, and its bytes."""
    size = handle.seek(0, os.SEEK_END)
    if size < 12:
        raise ValueError("too short to be a Parquet file")
    handle.seek(size - 8)
    tail = handle.read(8)
    start = size - 8 - int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1" or start < 4:
        raise ValueError("no Parquet footer")
    handle.seek(start)
    return start, handle.read(size - 8 - start)


def _seal(path: Path) -> None:
    """Write the digest of a just-written Parquet file into the placeholder of its footer."""
    with open(path, "r+b") as handle:
        start, footer = _footer(handle)
        hole = start + footer.rindex(_UNSEALED)
        digest = _digest(handle, _size(handle), hole)
        handle.seek(hole)
        handle.write(digest)


def _verify(path: Path) -> None:
    """A Parquet table must hold the digest it was sealed with; raises naming it otherwise."""
    import pyarrow.parquet as pq

    key = (str(path.resolve()), *identity(path))
    if key in _verified:
        return
    with open(path, "rb") as handle:
        start, footer = _footer(handle)
        sealed = (pq.read_metadata(handle).metadata or {}).get(_DIGEST_KEY)
        if sealed is None:
            raise _unchecked(path)
        where = footer.rfind(sealed)
        if (
            len(sealed) != len(_UNSEALED)
            or where < 0
            or _digest(handle, _size(handle), start + where) != sealed
        ):
            raise _damaged(path)
    _verified.add(key)


@contextmanager
def sealed_path(final: str | Path) -> Iterator[Path]:
    """As :func:`atomic_path`, for a file in a binary format whose readers ignore trailing bytes
    (a torch checkpoint): it gets the trailer of its digest before it is renamed into place."""
    with atomic_path(final) as tmp:
        yield tmp
        with open(tmp, "r+b") as handle:
            digest = _digest(handle, _size(handle))
            handle.seek(0, os.SEEK_END)
            handle.write(_TRAILER + digest)


def _matches_trailer(handle) -> bool | None:
    """Whether a file's bytes match the digest of its trailer; None when it has none."""
    size = _size(handle)
    handle.seek(max(size - _TRAILER_SIZE, 0))
    tail = handle.read()
    if len(tail) != _TRAILER_SIZE or not tail.startswith(_TRAILER):
        return None
    return _digest(handle, size - _TRAILER_SIZE) == tail[len(_TRAILER) :]


def checksums_of(path: Path) -> Path:
    """The sidecar that holds the digest of a text table."""
    return path.with_name(path.name + CHECKSUMS)


def _listing(files: dict[str, Path]) -> str:
    """sha256sum's format: a line ``<digest>  <name>`` per file."""
    lines = []
    for name, path in files.items():
        with open(path, "rb") as handle:
            lines.append(f"{_digest(handle, _size(handle)).decode()}  {name}\n")
    return "".join(lines)


def write_checksums(listing: Path, names: list[str]) -> None:
    """Write ``listing``: the digests of ``names``, files under its folder named relative to it."""
    write_text(_listing({name: listing.parent / name for name in names}), listing)


def _listed(listing: Path, about: Path) -> dict[str, bytes]:
    """The digests of a listing by file name; a missing or damaged listing is an error naming
    ``about``, what it vouches for, or the listing."""
    try:
        lines = listing.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        raise _unchecked(about, listing) from None
    matches = [_LISTED.fullmatch(line) for line in lines]
    if not all(matches):
        raise _damaged(listing)
    return {m[2].decode(errors="replace"): m[1] for m in matches}


def verify_checksums(listing: Path, required: list[str], about: Path) -> None:
    """Every file that ``listing`` names, ``required`` among them, must hold the digest listed
    (``about`` is what the listing vouches for: a store, say)."""
    listed = _listed(listing, about)
    if not set(required) <= set(listed):
        raise _damaged(listing)
    for name, digest in listed.items():
        path = listing.parent / name
        if not path.is_file():  # a name damaged in the listing
            raise _damaged(listing)
        with open(path, "rb") as handle:
            if _digest(handle, _size(handle)) != digest:
                raise _damaged(path)


def _checked_text(path: Path) -> io.BytesIO:
    """A text table's bytes, once they match its sidecar: the very bytes that were checked."""
    raw = path.read_bytes()
    data = io.BytesIO(raw)
    listed = _listed(checksums_of(path), path)
    if listed.get(path.name) != _digest(data, len(raw)):
        raise _damaged(path)
    data.seek(0)
    return data


@contextmanager
def _reading_table(path: Path) -> Iterator[None]:
    """A missing or damaged table read inside the block is a :class:`VsgridError` naming it."""
    import pandas as pd
    import pyarrow

    try:
        if path.suffix == ".parquet":
            _verify(path)
        yield
    except FileNotFoundError:
        raise VsgridError(f"{path} does not exist; the step that writes it has not run") from None
    except (OSError, ValueError, pyarrow.ArrowException, pd.errors.ParserError) as exc:
        raise VsgridError(
            f"{path} cannot be read as a table ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            "it is damaged, rerun the step that writes it"
        ) from None


def read_table(path: str | Path, columns: list[str] | None = None, **options) -> pd.DataFrame:
    """A Parquet, TSV or CSV table that vsgrid wrote, by extension (``options`` go to pandas:
    ``filters`` for a Parquet table's row groups, say); a missing or damaged file, or one without
    its checksum, is a :class:`VsgridError`. Tables users write are read by their own readers."""
    import pandas as pd

    path = Path(path)
    with _reading_table(path):
        if path.suffix == ".parquet":
            return pd.read_parquet(path, columns=columns, **options)
        return pd.read_csv(_checked_text(path), sep=_separator(path), usecols=columns, **options)


def table_columns(path: str | Path) -> list[str]:
    """The columns of a Parquet table, read from its footer."""
    import pyarrow.parquet as pq

    with _reading_table(Path(path)):
        return pq.read_schema(path).names


def table_batches(path: str | Path, columns: list[str]) -> Iterator[pd.DataFrame]:
    """A Parquet table's ``columns``, a batch of rows at a time."""
    import pyarrow.parquet as pq

    with _reading_table(Path(path)):
        for batch in pq.ParquetFile(path).iter_batches(columns=columns):
            yield batch.to_pandas()


@contextmanager
def table_appender(path: str | Path) -> Iterator:
    """Yield ``append(frame)`` to stream frames of one schema into a Parquet table, a row group
    each (a reader can then skip row groups by their statistics); the table appears at ``path``
    when the block ends. Append at least one frame, if empty, so that the columns are known.

    Pages carry CRCs (for other Parquet readers) and the file its digest (what vsgrid checks)."""
    import pyarrow
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp, ExitStack() as stack:
        writer = None

        def append(frame: pd.DataFrame) -> None:
            nonlocal writer
            table = pyarrow.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = stack.enter_context(
                    pq.ParquetWriter(tmp, table.schema, write_page_checksum=True)
                )
            writer.write_table(table.cast(writer.schema))

        yield append
        if writer is None:
            raise ValueError(f"no rows nor columns were appended to {path}")
        writer.add_key_value_metadata({_DIGEST_KEY: _UNSEALED})
        writer.close()
        _seal(tmp)


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """A TSV, CSV or Parquet table, by the extension of ``path``; a text table with its sidecar."""
    path = Path(path)
    if path.suffix == ".parquet":
        with table_appender(path) as append:
            append(table)
        return
    with atomic_paths([path, checksums_of(path)]) as (tmp, listing):
        table.to_csv(tmp, sep=_separator(path), index=False)
        listing.write_text(_listing({path.name: tmp}))


def _separator(path: Path) -> str:
    return "\t" if path.suffix == ".tsv" else ","


def read_weights(path: str | Path, what: str, expected: str, sealed: bool = False):
    """What torch saved at ``path`` (a checkpoint, a network's weights), read as tensors only: a
    pickle payload, which would run code, is refused. A missing, damaged or refused file is a
    :class:`VsgridError` naming it as ``what`` (e.g. "checkpoint"), of which ``expected`` says
    what it should be (e.g. "a vsgrid checkpoint"). A ``sealed`` file (written through
    :func:`sealed_path`: vsgrid's own) must match its digest before torch reads it."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise VsgridError(f"{what} {path} does not exist")
    with open(path, "rb") as handle:
        if sealed:
            matches = _matches_trailer(handle)
            if matches is None:
                raise VsgridError(
                    f"{what} {path} cannot be read: it is truncated, damaged or not {expected} "
                    "(it carries no vsgrid checksum; if an older vsgrid wrote it, rerun the step "
                    "that writes it)"
                )
            if not matches:
                raise _damaged(f"{what} {path}")
            handle.seek(0)
        try:  # the handle read is the file checked, even if another replaces it meanwhile
            return torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types, with advice that does not apply
            payload = isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc)
    if payload:
        raise VsgridError(
            f"{what} {path} holds pickled Python objects, not only weights: refused without running "
            f"them (it is not {expected}, or was saved from another program's objects)"
        )
    raise VsgridError(f"{what} {path} cannot be read: it is truncated, damaged or not {expected}")
