import pickle

import numpy as np
import pytest

from vsgrid.data.pairs import StainPairs, denormalize, iter_batches, normalization_stats, normalize
from vsgrid.data.store import open_store
from vsgrid.errors import VsgridError


def test_normalization_stats_are_exact_percentiles(quick_stores):
    path = quick_stores["lung-nontoxic"]
    stats = normalization_stats(path, channels=("bf", "cy5"))
    train = open_store(path).images("train")[:]
    for channel, index in (("bf", 0), ("cy5", 3)):
        values = train[:, index].ravel()
        assert stats[channel]["low"] == np.percentile(values, 0.1, method="inverted_cdf")
        assert stats[channel]["high"] == np.percentile(values, 99.9, method="inverted_cdf")
        assert stats[channel]["mean"] == pytest.approx(values.mean())
        assert stats[channel]["std"] == pytest.approx(values.std())


def test_normalize_round_trip():
    stats = {"low": 100.0, "high": 5100.0}
    counts = np.array([100, 2600, 5100, 65535], np.uint16)
    values = normalize(counts, stats)
    assert values.dtype == np.float32 and values[:3].tolist() == [-1.0, 0.0, 1.0]
    assert np.allclose(denormalize(values, stats), counts, atol=0.01)


@pytest.mark.parametrize("preload_mb", [0, 64], ids=["field by field", "preloaded"])
def test_stain_pairs_random_access(quick_stores, preload_mb):
    path = quick_stores["breast-toxic"]
    stats = normalization_stats(path)
    pairs = StainPairs(path, "val", "fitc", stats, preload_mb=preload_mb)
    assert (pairs._fields is not None) == (preload_mb > 0)
    raw = open_store(path).images("val")
    assert len(pairs) == raw.shape[0]
    for i in (0, len(pairs) - 1, -1, 5):
        bf, fitc = pairs[i]
        assert bf.shape == fitc.shape == (1, *raw.shape[2:]) and bf.dtype == np.float32
        assert np.array_equal(bf[0], normalize(raw[i][0], stats["bf"]))
        assert np.array_equal(fitc[0], normalize(raw[i][2], stats["fitc"]))
    with pytest.raises(IndexError):
        pairs[len(pairs)]
    clone = pickle.loads(pickle.dumps(pairs))
    assert np.array_equal(clone[3][1], pairs[3][1])


def test_iter_batches_streams_the_whole_split_in_order(quick_stores):
    path = quick_stores["ovarian-nontoxic"]
    whole = open_store(path).images("test")[:]
    batches = list(iter_batches(path, "test", batch_size=10, channels=("bf", "dapi")))
    assert [len(i) for i, _ in batches] == [10, 10, 10, 10, 8]
    assert np.array_equal(np.concatenate([b for _, b in batches]), whole[:, :2])
    assert np.array_equal(np.concatenate([i for i, _ in batches]), np.arange(48))


def test_missing_store_and_unknown_channel(tmp_path, quick_stores):
    with pytest.raises(VsgridError, match="no data store at .*nowhere.zarr"):
        open_store(tmp_path / "nowhere.zarr")
    with pytest.raises(VsgridError, match="unknown channel 'gfp'"):
        StainPairs(quick_stores["lung-toxic"], "train", "gfp", {})
