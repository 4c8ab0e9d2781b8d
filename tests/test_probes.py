"""Damage and bad input that earlier probes found reported wrongly: each is one line naming the file."""

import copy
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr

from vsgrid import arrays
from vsgrid.data.store import open_store
from vsgrid.data.synthetic import synthesize
from vsgrid.errors import VsgridError
from vsgrid.files import read_table, table_appender, table_batches, table_columns, write_table
from vsgrid.grid import find_model, restrict
from vsgrid.layout import Layout
from vsgrid.model import checkpoint
from vsgrid.model.train import train


@pytest.fixture(scope="module")
def lung_store(quick_config, tmp_path_factory):
    """The quick grid's lung-toxic store alone (32 test images), and its config file."""
    config = copy.deepcopy(restrict(quick_config, ["lung-toxic"]))
    config["data"]["splits"] = {"train": 8, "val": 4, "test": 32}
    config["evaluation"]["block_images"] = 32  # a failed read leaves 31 chunk reads in flight
    out = tmp_path_factory.mktemp("probes")
    config["data"]["dir"] = str(out / "data")
    config["results"]["dir"] = str(out / "results")
    config["train"].update(max_epochs=2, lr_decay_start=2, crop_size=64)
    synthesize(config, out / "data", workers=1, progress=False)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return config, out


def vsgrid(out, *args) -> subprocess.CompletedProcess:
    """The command line in a process of its own: what it prints up to the interpreter's exit."""
    command = [sys.executable, "-m", "vsgrid.cli", args[0], "--config", str(out / "config.yaml")]
    return subprocess.run([*command, *args[1:]], capture_output=True, text=True, timeout=300)


def real_features(images) -> pd.DataFrame:
    """Rows of the one real instance (label 1) of each of ``images``."""
    images = list(images)
    return pd.DataFrame(
        {"image": images, "label": 1, "AreaShape_Area": 100.0 + np.arange(len(images))}
    )


def evaluation_inputs(out, where, images) -> dict:
    """In ``where``: a dapi prediction of lung-toxic (its real stain), real masks (one instance
    per image), the real features of ``images`` and a ranking that selects one feature."""
    store = open_store(out / "data" / "lung-toxic.zarr")
    real = store.images("test")[:, store.channel_index("dapi")]
    shape, chunks = real.shape, (1, *real.shape[1:])
    group = zarr.open_group(where / "pred.zarr", mode="w")
    arrays.create(group, shape, chunks=chunks, dtype="uint16", name="image")[:] = real
    labels = np.zeros(shape, np.int32)
    labels[:, 10:20, 10:20] = 1
    arrays.create(group, shape, chunks=chunks, dtype="int32", name="labels")[:] = labels
    group.attrs.update(
        {"stain": "dapi", "test_set": "lung-toxic", "store_id": store.store_id, "model": None}
    )
    arrays.create(where / "masks.zarr", shape, chunks=chunks, dtype="int32")[:] = labels
    write_table(real_features(images), where / "features.parquet")
    write_table(
        pd.DataFrame({"feature": ["AreaShape_Area"], "selected": [True]}), where / "ranking.tsv"
    )
    names = {
        "prediction": "pred.zarr",
        "real-masks": "masks.zarr",
        "real-features": "features.parquet",
    }
    options = [x for option, name in names.items() for x in (f"--{option}", str(where / name))]
    return [*options, "--ranking", str(where / "ranking.tsv"), "--out", str(where / "run")]


def evaluate(out, inputs) -> subprocess.CompletedProcess:
    return vsgrid(out, "evaluate", "--test-set", "lung-toxic", "--stain", "dapi", *inputs)


def test_a_damaged_prediction_is_one_line_and_nothing_after_it(lung_store, tmp_path):
    _, out = lung_store
    inputs = evaluation_inputs(out, tmp_path, range(32))
    chunk = tmp_path / "pred.zarr" / "image" / "c" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    done = evaluate(out, inputs)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"vsgrid evaluate: error: {tmp_path / 'pred.zarr' / 'image'}: a chunk of images 0..31 cannot "
        'be decoded (Zstd decompression error: b"Restored data doesn\'t match checksum"); the array '
        "is damaged, rebuild it"
    ]
    assert not list((tmp_path / "run").glob("*.parquet"))


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


def test_a_failed_read_leaves_no_chunk_read_running(tmp_path):
    import asyncio

    import zarr.core.sync

    stack = arrays.create(tmp_path / "a.zarr", (64, 64, 64), chunks=(1, 64, 64), dtype="uint16")
    stack[:] = np.random.default_rng(0).integers(0, 1000, stack.shape)
    chunk = tmp_path / "a.zarr" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\0")

    async def others() -> int:
        return len(asyncio.all_tasks()) - 1

    with pytest.raises(VsgridError, match="cannot be decoded"):
        arrays.open_array(tmp_path / "a.zarr")[:]
    assert zarr.core.sync.sync(others()) == 0


@pytest.mark.slow  # a training, then a `vsgrid train` process
def test_a_lost_best_checkpoint_is_rewritten_by_rerunning_training(lung_store, caplog):
    config, out = lung_store
    model = find_model(config, "lung-toxic", "dapi", 0)
    folder = Layout.of(config).model_dir(model)
    train(config, model, folder, progress=False)
    best = checkpoint.load(folder / "best.pt", kind="generator")
    (folder / "best.pt").unlink()  # by hand, or by Snakemake before a rerun of a failed job
    done = vsgrid(out, "train", "--train-set", "lung-toxic", "--stain", "dapi", "--seed", "0")
    assert done.returncode == 0, done.stderr
    assert f"{folder / 'best.pt'} was missing: rewritten from {folder / 'last.pt'}" in done.stderr
    rewritten = checkpoint.load(folder / "best.pt", kind="generator")
    assert rewritten["epoch"] == best["epoch"] and rewritten["val"] == best["val"]
    assert all(torch.equal(rewritten["generator"][k], v) for k, v in best["generator"].items())

    older = checkpoint.load(folder / "last.pt")  # a last.pt of a vsgrid that kept no copy
    del older["best"]
    checkpoint.save(older, folder / "last.pt")
    (folder / "best.pt").unlink()
    with pytest.raises(
        VsgridError, match=f"{folder / 'best.pt'} is missing .* delete {folder / 'last.pt'}"
    ):
        train(config, model, folder, progress=False)


class _Payload:
    def __reduce__(self):  # unpickling this would call print: a stand-in for running any code
        return (print, ("the payload ran",))


def test_a_weights_file_with_a_pickle_payload_is_one_line_naming_it(tmp_path, capfd):
    from vsgrid.evaluation.segment import load_cellpose
    from vsgrid.model.network import load_vgg19_features

    path = tmp_path / "weights.pt"
    checkpoint.save({"generator": _Payload()}, path)
    refused = f"{path} holds pickled Python objects, not only weights: refused without running them"
    for load in (checkpoint.load, load_vgg19_features, lambda p: load_cellpose(str(p), gpu=False)):
        with pytest.raises(VsgridError, match=refused) as error:
            load(path)
        assert "\n" not in str(error.value) and "weights_only" not in str(error.value)
    assert "the payload ran" not in capfd.readouterr().out


def test_a_real_feature_table_without_some_images_rows_is_one_line_naming_them(
    lung_store, tmp_path
):
    _, out = lung_store
    inputs = evaluation_inputs(out, tmp_path, [i for i in range(32) if i not in (3, 7, 20)])
    done = evaluate(out, inputs)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"vsgrid evaluate: error: {tmp_path / 'features.parquet'} has no rows for real instances of "
        "image(s) 3 (1 of its instances), 7 (1 of its instances), 20 (1 of its instances): it is "
        "incomplete or was measured in other masks; rerun the step that writes it"
    ]
    assert not list((tmp_path / "run").glob("*.parquet"))
    write_table(real_features(range(32)), tmp_path / "features.parquet")
    assert evaluate(out, inputs).returncode == 0  # the same inputs, complete


@pytest.mark.parametrize("train_set", ["../x-toxic", "kidney-toxic", "lung-nontoxic"])
def test_a_train_set_outside_the_grid_is_refused_naming_the_known_ones(
    lung_store, train_set, capsys
):
    from vsgrid.cli import main

    config, out = lung_store
    command = ["train", "--config", str(out / "config.yaml"), "--train-set", train_set]
    assert main([*command, "--stain", "dapi", "--seed", "0"]) == 2
    assert capsys.readouterr().err == (
        f"vsgrid train: error: --train-set {train_set!r} is not a data set of the grid "
        "(lung-toxic, lung-both)\n"  # and level 4's train set, the quick config's
    )
    assert not (out / "results" / "models" / f"{train_set}.dapi.s0").exists()
    assert not (out / "x-toxic.dapi.s0").exists()


@pytest.mark.parametrize("seed", ["7", str(2**64 + 1)])
def test_a_seed_outside_the_grid_is_refused_in_one_line(lung_store, seed, capsys):
    from vsgrid.cli import main

    _, out = lung_store
    command = ["train", "--config", str(out / "config.yaml"), "--train-set", "lung-toxic"]
    assert main([*command, "--stain", "dapi", "--seed", seed]) == 2
    assert capsys.readouterr().err == (
        f"vsgrid train: error: --seed {seed} is not one of dapi's seeds (0; grid.seeds, "
        "grid.stain_seeds)\n"
    )
