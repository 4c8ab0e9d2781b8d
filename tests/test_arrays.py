"""Every array vsgrid writes is verifiable: a missing, flipped or truncated chunk is an error naming it."""

import numpy as np
import pytest

from vsgrid import arrays
from vsgrid.errors import VsgridError


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "prediction.zarr"
    array = arrays.create(path, shape=(4, 32, 32), chunks=(1, 32, 32), dtype="uint16")
    array[:] = np.random.default_rng(0).integers(0, 3000, (4, 32, 32), dtype=np.uint16)
    array[2] = 0  # an all-zero image is written too, so that a missing chunk means damage
    return path, array[:]


def chunk(path, index):
    return path / "c" / str(index) / "0" / "0"


def test_a_sound_array_reads_back(stack):
    path, values = stack
    opened = arrays.open_array(path)
    assert np.array_equal(opened[:], values) and opened.shape == (4, 32, 32) and len(opened) == 4
    assert chunk(path, 2).is_file()


def test_a_missing_chunk_is_an_error_naming_the_array_and_chunk(stack):
    path, _ = stack
    chunk(path, 1).unlink()
    opened = arrays.open_array(path)
    assert np.array_equal(opened[0], stack[1][0])  # the other chunks still read
    with pytest.raises(VsgridError, match=r"prediction.zarr: chunk c/1/0/0 is missing"):
        opened[:]


def test_flipped_bytes_are_an_error(stack):
    path, _ = stack
    data = bytearray(chunk(path, 3).read_bytes())
    for k in range(4):
        data[len(data) // 2 + k] ^= 0xFF
    chunk(path, 3).write_bytes(bytes(data))
    with pytest.raises(
        VsgridError, match=r"prediction.zarr: a chunk of images 3 cannot be decoded"
    ):
        arrays.open_array(path)[3]


def test_a_truncated_chunk_names_the_file(stack):
    path, _ = stack
    data = chunk(path, 0).read_bytes()
    chunk(path, 0).write_bytes(data[: len(data) // 2])
    with pytest.raises(
        VsgridError, match=r"prediction.zarr: a chunk of images 0..3 cannot be decoded"
    ):
        arrays.open_array(path)[0:4]


def test_an_unfinished_array_is_an_error(tmp_path):
    (tmp_path / "half.zarr").mkdir()
    with pytest.raises(VsgridError, match="half.zarr is not a Zarr array"):
        arrays.open_array(tmp_path / "half.zarr")
