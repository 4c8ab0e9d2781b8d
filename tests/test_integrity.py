"""Nothing a user has is silently changed: a flipped byte in a checkpoint, a text table or a store's
side files is an error naming the file, and a store rebuilt under a reader stops the reader."""

import numpy as np
import pandas as pd
import pytest
import torch

from vsgrid import arrays
from vsgrid.data.store import create_store, open_store
from vsgrid.errors import VsgridError
from vsgrid.files import read_table, write_table
from vsgrid.grid import DataSet, Model
from vsgrid.model import checkpoint
from vsgrid.model.network import GlobalGenerator, NetworkConfig

SMALL = NetworkConfig(ngf=2, n_downsample=1, n_blocks=1, ndf=2, num_D=1, n_layers_D=1)


def flipped(path, read, positions: int = 20) -> list[int]:
    """Flip one byte of ``path`` at ``positions`` places spread over it, one at a time, and return
    the places where ``read()`` did not fail with a one-line VsgridError naming the file."""
    clean = path.read_bytes()
    missed = []
    for n, offset in enumerate(np.unique(np.linspace(0, len(clean) - 1, positions).astype(int))):
        mask = (0x01, 0x10, 0x80)[n % 3]
        path.write_bytes(clean[:offset] + bytes([clean[offset] ^ mask]) + clean[offset + 1 :])
        try:
            read()
            missed.append(int(offset))
        except VsgridError as error:
            if str(path.parent) not in str(error) or "\n" in str(error):
                missed.append(int(offset))
    path.write_bytes(clean)
    read()  # the file restored reads again
    return missed


@pytest.fixture
def saved(tmp_path):
    generator = GlobalGenerator(SMALL)
    model = Model(DataSet("lung", "toxic"), "dapi", 0)
    made = checkpoint.payload("generator", SMALL, model, {"bf": [0.0, 1.0]}, generator, epoch=1)
    checkpoint.save(made, tmp_path / "best.pt")
    return tmp_path / "best.pt", made


def test_a_checkpoint_reads_back_and_a_flipped_byte_anywhere_is_an_error(saved):
    path, made = saved
    loaded = checkpoint.load(path, kind="generator")
    assert all(torch.equal(loaded["generator"][k], v) for k, v in made["generator"].items())
    assert flipped(path, lambda: checkpoint.load(path), positions=30) == []
    with pytest.raises(VsgridError, match=f"checkpoint {path} is damaged .*rerun the step"):
        path.write_bytes(path.read_bytes()[:100] + b"\xff" + path.read_bytes()[101:])
        checkpoint.load(path)


def test_a_checkpoint_without_a_vsgrid_checksum_is_refused(saved, tmp_path):
    path, made = saved
    torch.save(made, tmp_path / "older.pt")  # as vsgrid wrote checkpoints before
    with pytest.raises(VsgridError, match="older.pt cannot be read: .*carries no vsgrid checksum"):
        checkpoint.load(tmp_path / "older.pt")


@pytest.mark.parametrize(
    "said",
    [
        "[enforce fail at inline_container.cc:664] . unexpected pos 123 vs 456",
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
        "data/0: file write failed",
    ],
)
def test_torchs_words_for_a_full_disk_say_the_disk_is_full(saved, tmp_path, monkeypatch, said):
    _, made = saved

    def full(obj, path):
        path.write_bytes(b"half")
        raise RuntimeError(said)

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "full"
    with pytest.raises(
        VsgridError,
        match=r"cannot write checkpoint .*best.pt: the disk is full \(.* GiB free there\)$",
    ):
        checkpoint.save(made, out / "best.pt")
    assert list(out.iterdir()) == []


def test_a_flipped_byte_in_a_text_table_or_its_checksum_is_an_error(tmp_path):
    path = tmp_path / "lung.dapi.tsv"  # as the feature ranking is written and read
    ranking = pd.DataFrame(
        {"feature": [f"Intensity_{i}" for i in range(12)], "rank": range(1, 13)}
    ).assign(selected=lambda t: t["rank"] <= 5, stability=np.linspace(1, 0, 12))
    write_table(ranking, path)
    pd.testing.assert_frame_equal(read_table(path), ranking)
    assert pd.read_csv(path, sep="\t").equals(read_table(path))  # a plain TSV for other programs
    assert flipped(path, lambda: read_table(path)) == []
    sidecar = tmp_path / "lung.dapi.tsv.sha256"
    assert flipped(sidecar, lambda: read_table(path)) == []
    sidecar.unlink()
    with pytest.raises(VsgridError, match=f"{path} carries no vsgrid checksum"):
        read_table(path)


def build(path, seed: int, n: int = 4):
    """A small store as vsgrid builds one, its images drawn from ``seed``."""
    metadata = pd.DataFrame(
        {
            "split": "train",
            "index": range(n),
            "plate": "P1",
            "well": [f"A0{i + 1}" for i in range(n)],
            "field": 1,
            "compound": ["DMSO", "taxol"] * (n // 2),
            "concentration": [0.0, 1.5] * (n // 2),
            "phenotype": "toxic",
        }
    )
    attrs = {"data_set": "lung-toxic", "cell_type": "lung", "pixel_size_um": 0.65}
    images = np.random.default_rng(seed).integers(0, 4000, (n, 4, 8, 8), dtype=np.uint16)
    with create_store(path, {"train": n}, (8, 8), metadata, attrs, with_masks=False) as group:
        group["train"][:] = images
    return images


def test_a_store_reads_back_and_a_flipped_byte_in_a_side_file_is_an_error(tmp_path):
    path = tmp_path / "lung-toxic.zarr"
    images = build(path, 0)
    store = open_store(path)
    assert np.array_equal(store.images("train")[:], images)
    assert store.attrs["pixel_size_um"] == 0.65 and store.metadata["well"].iloc[0] == "A01"
    for name in ("metadata.tsv", "zarr.json", "train/zarr.json", "zarr.sha256"):
        assert flipped(path / name, lambda: open_store(path)) == [], name
    (path / "zarr.sha256").unlink()  # a store of an older vsgrid
    with pytest.raises(VsgridError, match=f"{path} carries no vsgrid checksum .*zarr.sha256"):
        open_store(path)


def test_a_store_rebuilt_while_read_stops_the_reader(tmp_path):
    path = tmp_path / "lung-toxic.zarr"
    first = build(path, 0)
    images = open_store(path).images("train")
    assert np.array_equal(images[0:2], first[0:2])
    build(path, 1)  # `vsgrid synthesize` or `vsgrid ingest` again, at the same path
    with pytest.raises(VsgridError, match=f"{path} was rebuilt while being read") as error:
        images[2:4]
    assert "\n" not in str(error.value)
    assert open_store(path).images("train")[2] is not None  # opened again, the new build reads


def test_a_store_reopened_as_the_build_read_before_must_still_be_it(tmp_path):
    path = tmp_path / "lung-toxic.zarr"
    build(path, 0)
    first = open_store(path)
    assert open_store(path, first.build).images("train")[0] is not None  # a worker's reopen
    build(path, 1)
    with pytest.raises(VsgridError, match=f"{path} was rebuilt while being read"):
        open_store(path, first.build)


def test_a_read_that_straddles_a_rebuild_is_an_error(tmp_path):
    path = tmp_path / "lung-toxic.zarr"
    build(path, 0)
    images = open_store(path).images("train")
    array = images.array

    class Straddled:  # the store is rebuilt after the read's first chunks came from the old one
        def __getitem__(self, selection):
            values = array[selection]
            build(path, 1)
            return values

    images.array = Straddled()
    with pytest.raises(VsgridError, match=f"{path} was rebuilt while being read"):
        images[0:4]


def test_a_chunk_error_names_the_images_read(tmp_path):
    path = tmp_path / "prediction.zarr"
    stack = arrays.create(path, shape=(4, 8, 8), chunks=(1, 8, 8), dtype="uint16")
    stack[:] = 7
    chunk = path / "c" / "3" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-1])
    opened = arrays.open_array(path)
    for selection, said in (
        (slice(None), "0..3"),
        (slice(2, None), "2..3"),
        (slice(-1, None), "3"),
        (3, "3"),
    ):
        with pytest.raises(VsgridError, match=f"a chunk of images {said} cannot be decoded"):
            opened[selection]
