"""Writing a file or folder so that no reader ever sees half of it.

Everything vsgrid writes (stores, checkpoints, predictions, tables, figures) goes through
:func:`atomic_path`: it is built under a temporary name beside its final path (the same file
system, so the rename is atomic) and renamed into place only when complete. A failure removes the
temporary; an earlier result at the final path stays intact until the new one replaces it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from vsgrid.errors import VsgridError

if TYPE_CHECKING:
    import pandas as pd


def temporary_name(final: Path) -> Path:
    """The scratch path of ``final`` for this process: hidden, and named after the process."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def remove(path: Path) -> None:
    """Remove a file or a folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace(tmp: Path, final: Path) -> None:
    """Move ``tmp`` (a file or a finished folder) to ``final``, replacing what was there.

    ``rename`` cannot replace a non-empty folder, so an old folder is renamed aside first and
    removed after; at no moment is a partial result at ``final``.
    """
    old = None
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a scratch path to write ``final`` to (a file or a folder); rename it into place when
    the block ends without error, remove it when it does not."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    remove(tmp)
    try:
        yield tmp
        replace(tmp, final)
    except BaseException:
        remove(tmp)
        raise


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_table(path: str | Path, columns: list[str] | None = None, **options) -> "pd.DataFrame":
    """A Parquet, TSV or CSV table, by extension; a missing or damaged file is a :class:`VsgridError`."""
    import pandas as pd
    import pyarrow

    path = Path(path)
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path, columns=columns, **options)
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", usecols=columns, **options)
    except FileNotFoundError:
        raise VsgridError(f"{path} does not exist; the step that writes it has not run") from None
    except (OSError, ValueError, pyarrow.ArrowException, pd.errors.ParserError) as exc:
        raise VsgridError(f"{path} cannot be read as a table ({type(exc).__name__}: {str(exc)[:200]}); it is damaged, rerun the step that writes it") from None


def write_table(table: "pd.DataFrame", path: str | Path) -> None:
    """A TSV, CSV or Parquet table, by the extension of ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, sep="\t" if path.suffix == ".tsv" else ",", index=False)
