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
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise VsgridError(
                f"cannot write {', '.join(map(str, finals))}: {exc.strerror}"
            ) from None
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


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


# A Parquet table vsgrid writes carries the SHA-256 of the whole file in its footer's key-value
# metadata (the digest's own 64 bytes read as zeros), so a flipped byte anywhere (a data page, a
# page header, the footer's statistics or schema) is an error on read, as in vsgrid's Zarr
# arrays. Page checksums alone miss the page headers and the footer: a row group skipped on
# damaged statistics, or a value read under a damaged type, reads back as different values.
_DIGEST_KEY = b"vsgrid.sha256"
_UNSEALED = b"0" * 64
_BLOCK = 1 << 20
_verified: set[tuple] = set()  # files already checked: a table read a block at a time hashes once


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


def _digest(handle, hole: int) -> bytes:
    """The SHA-256 of a file, hex, the 64 bytes at ``hole`` taken as :data:`_UNSEALED`."""
    digest = hashlib.sha256()
    size = handle.seek(0, os.SEEK_END)
    for start, stop in ((0, hole), (hole + len(_UNSEALED), size)):
        handle.seek(start)
        while start < stop:
            block = handle.read(min(_BLOCK, stop - start))
            if not block:  # shorter than its footer says
                break
            digest.update(block)
            start += len(block)
        if stop == hole:
            digest.update(_UNSEALED)
    return digest.hexdigest().encode()


def _seal(path: Path) -> None:
    """Write the digest of a just-written Parquet file into the placeholder of its footer."""
    with open(path, "r+b") as handle:
        start, footer = _footer(handle)
        hole = start + footer.rindex(_UNSEALED)
        digest = _digest(handle, hole)
        handle.seek(hole)
        handle.write(digest)


def _verify(path: Path) -> None:
    """A Parquet table must hold the digest it was sealed with; raises naming it otherwise."""
    import pyarrow.parquet as pq

    status = path.stat()
    key = (str(path.resolve()), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    if key in _verified:
        return
    with open(path, "rb") as handle:
        start, footer = _footer(handle)
        sealed = (pq.read_metadata(handle).metadata or {}).get(_DIGEST_KEY)
        if sealed is None:
            raise VsgridError(
                f"{path} carries no vsgrid checksum (written by another program or an older vsgrid); "
                "rerun the step that writes it"
            )
        where = footer.rfind(sealed)
        if len(sealed) != len(_UNSEALED) or where < 0 or _digest(handle, start + where) != sealed:
            raise VsgridError(
                f"{path} is damaged (its bytes differ from the checksum it was written with); "
                "rerun the step that writes it"
            )
    _verified.add(key)


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
    """A Parquet, TSV or CSV table, by extension (``options`` go to pandas: ``filters`` for a
    Parquet table's row groups, say); a missing or damaged file is a :class:`VsgridError`."""
    import pandas as pd

    path = Path(path)
    with _reading_table(path):
        if path.suffix == ".parquet":
            return pd.read_parquet(path, columns=columns, **options)
        return pd.read_csv(
            path, sep="\t" if path.suffix == ".tsv" else ",", usecols=columns, **options
        )


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
    """A TSV, CSV or Parquet table, by the extension of ``path``."""
    path = Path(path)
    if path.suffix == ".parquet":
        with table_appender(path) as append:
            append(table)
        return
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t" if path.suffix == ".tsv" else ",", index=False)


def read_weights(path: str | Path, what: str, expected: str):
    """What torch saved at ``path`` (a checkpoint, a network's weights), read as tensors only: a
    pickle payload, which would run code, is refused. A missing, damaged or refused file is a
    :class:`VsgridError` naming it as ``what`` (e.g. "checkpoint"), of which ``expected`` says
    what it should be (e.g. "a vsgrid checkpoint")."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise VsgridError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types, with advice that does not apply
        payload = isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc)
    if payload:
        raise VsgridError(
            f"{what} {path} holds pickled Python objects, not only weights: refused without running "
            f"them (it is not {expected}, or was saved from another program's objects)"
        )
    raise VsgridError(f"{what} {path} cannot be read: it is truncated, damaged or not {expected}")
