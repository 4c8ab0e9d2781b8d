"""Damage and bad input that earlier probes found reported wrongly: each is one line naming the file."""

import numpy as np
import pandas as pd
import pytest

from vsgrid.errors import VsgridError
from vsgrid.files import read_table, table_appender, table_batches, table_columns, write_table


def _table() -> pd.DataFrame:
    """Integers, floats with a NaN, and repeated strings (dictionary pages) over three row groups."""
    n = 300
    return pd.DataFrame(
        {
            "image": np.arange(n) // 10,
            "ssim": np.linspace(0.5, 0.99, n),
            "psnr": np.where(np.arange(n) % 7 == 0, np.nan, np.arange(n) / 3.0),
            "feature": [f"Intensity_{i % 4}" for i in range(n)],
        }
    )


def _reads(path) -> list:
    return [
        read_table(path),
        read_table(path, columns=["image", "ssim"], filters=[("image", ">=", 12)]),
        pd.concat(table_batches(path, ["ssim", "feature"]), ignore_index=True),
        table_columns(path),
    ]


def test_a_flipped_byte_anywhere_in_a_parquet_table_is_an_error_naming_it(tmp_path):
    written = tmp_path / "clean.parquet"
    frame = _table()
    with table_appender(written) as append:
        for start in range(0, len(frame), 100):
            append(frame.iloc[start : start + 100])
    expected = _reads(written)
    pd.testing.assert_frame_equal(expected[0], frame)
    clean = written.read_bytes()
    for offset in [*range(0, len(clean), 97), len(clean) - 9, len(clean) - 1]:
        damaged = tmp_path / f"flipped-{offset}.parquet"  # a new file each: no cached verdict
        damaged.write_bytes(clean[:offset] + bytes([clean[offset] ^ 0x10]) + clean[offset + 1 :])
        try:
            reads = _reads(damaged)
        except VsgridError as error:
            assert str(damaged) in str(error) and "\n" not in str(error)
            continue
        for got, want in zip(reads, expected):  # what reads at all reads as written
            if isinstance(want, list):
                assert got == want, offset
            else:
                pd.testing.assert_frame_equal(got, want, obj=f"byte {offset}")


def test_a_parquet_table_without_vsgrid_checksum_is_refused(tmp_path):
    path = tmp_path / "images.parquet"
    _table().to_parquet(path)
    with pytest.raises(VsgridError, match=f"{path} carries no vsgrid checksum"):
        read_table(path)


def test_a_parquet_table_reads_back_as_pandas_writes_it(tmp_path):
    frame = _table().assign(flag="", n=pd.array([1, None] * 150, dtype="Int64"))
    write_table(frame, tmp_path / "t.parquet")
    frame.to_parquet(tmp_path / "pandas.parquet", index=False)
    pd.testing.assert_frame_equal(
        read_table(tmp_path / "t.parquet"), pd.read_parquet(tmp_path / "pandas.parquet")
    )
