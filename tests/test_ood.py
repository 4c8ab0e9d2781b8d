"""The out-of-distribution table of a trained model: its AUROC per shift, per well, the CLI."""

import copy

import numpy as np
import pytest
import yaml

from vsgrid.cli import main
from vsgrid.data.store import open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.ood import ood_table, per_well, shift_aurocs
from vsgrid.files import read_table
from vsgrid.grid import DataSet, Model
from vsgrid.layout import Layout
from vsgrid.model.infer import Predictor
from vsgrid.model.train import train

MODEL = Model(DataSet("lung", "nontoxic"), "dapi", 0)


@pytest.fixture(scope="module")
def config(quick_config, quick_stores, tmp_path_factory):
    """The quick grid with one lung-nontoxic DAPI model, trained for 2 epochs (20 s on two cores):
    enough for its bottleneck to tell cell types apart (AUROC 0.89-0.94 over seeds 0-4). Every
    test that takes it is in the slow tier."""
    config = copy.deepcopy(quick_config)
    config["data"]["dir"] = str(next(iter(quick_stores.values())).parent)
    config["results"]["dir"] = str(tmp_path_factory.mktemp("results"))
    config["train"].update(max_epochs=2, lr_decay_start=2, crop_size=64)
    train(config, MODEL, Layout.of(config).model_dir(MODEL), progress=False)
    return config


@pytest.fixture(scope="module")
def table(config):
    return ood_table(config, MODEL.name, ["breast-nontoxic"])


@pytest.mark.slow
def test_breast_fields_lie_further_from_a_lung_model_than_held_out_lung_fields(config, table):
    assert list(table["test_set"].unique()) == ["lung-nontoxic", "breast-nontoxic"]
    assert len(table) == 2 * 48 and np.isfinite(table["ood"]).all() and (table["ood"] > 0).all()
    [row] = shift_aurocs(config, table).itertuples()
    assert (row.test_set, row.task, row.shift, row.fields) == (
        "breast-nontoxic",
        2,
        "cell_type",
        48,
    )
    # 0.90 at this seed; 0.89-0.94 over model seeds 0-4 (lung-toxic 0.81-0.83, defocus 1.0)
    assert row.auroc > 0.8 and row.auroc_low > 0.6
    wells = per_well(table)
    lung = table[table["test_set"] == "lung-nontoxic"]
    first = wells.iloc[0]
    mine = lung[(lung["plate"] == first["plate"]) & (lung["well"] == first["well"])]
    assert first["ood"] == pytest.approx(mine["ood"].mean()) and first["fields"] == len(mine)


@pytest.mark.slow
def test_a_prediction_carries_its_spread_and_its_fields_ood_scores(config, table):
    layout = Layout.of(config)
    predictor = Predictor(layout.model_dir(MODEL), config["device"], config["network"])
    store = open_store(layout.store(MODEL.train_set))
    reference = predictor.ood_reference(store, train_fields=256, batch_size=16)
    bf = store.images("test")[:8, store.channel_index("bf")]
    plain = predictor.predict(bf)
    both = predictor.predict(bf, tta=True, reference=reference)
    # the prediction is the untransformed pass, the same operations whatever is asked beside it
    np.testing.assert_array_equal(both.image, plain.image)
    assert plain.tta_spread is None and plain.dropout_spread is None and plain.ood is None
    spread = both.tta_spread
    assert spread.shape == bf.shape and spread.dtype == np.float32 and spread.min() >= 0
    assert 1 < np.median(spread) < 0.1 * np.median(both.image)
    # TTA's first passes as samples: the prediction itself first, then turned fields' passes
    # turned back (close to it, not it), and the spread the same with or without them
    sampled = predictor.predict(bf, tta=True, samples=4)
    assert (
        sampled.tta_samples.shape == (8, 4, *bf.shape[1:])
        and sampled.tta_samples.dtype == np.uint16
    )
    np.testing.assert_array_equal(sampled.tta_samples[:, 0], plain.image)
    turned = sampled.tta_samples[:, 1:].astype(float)
    assert not np.array_equal(turned[:, 0], plain.image)
    assert np.abs(turned - plain.image[:, None]).mean() < 0.2 * plain.image.mean()
    np.testing.assert_array_equal(sampled.tta_spread, spread)  # the same passes, the same order
    with pytest.raises(VsgridError, match="trained with dropout"):
        predictor.predict(bf, mc_dropout=4)  # this model has no dropout to sample
    # the trunk inside the generator's pass, in a batch of 8, against the trunk alone in a batch
    # of 16 (ood_table): float32 convolutions summed in other orders, nothing more
    lung = table.loc[table["test_set"] == "lung-nontoxic", "ood"].to_numpy()[:8]
    np.testing.assert_allclose(both.ood, lung, rtol=1e-4)


@pytest.mark.slow
def test_mc_dropout_samples_a_model_trained_with_dropout(config, tmp_path):
    dropped = copy.deepcopy(config)
    dropped["network"]["dropout"] = 0.5
    dropped["train"].update(max_epochs=1, lr_decay_start=1)
    train(dropped, MODEL, tmp_path / MODEL.name, progress=False)
    predictor = Predictor(tmp_path / MODEL.name, dropped["device"], dropped["network"])
    store = open_store(Layout.of(config).store(MODEL.train_set))
    bf = store.images("test")[:4, store.channel_index("bf")]
    sampled = predictor.predict(bf, mc_dropout=4)
    # dropout samples only beside the prediction: the prediction is the deterministic pass
    np.testing.assert_array_equal(sampled.image, predictor.predict(bf).image)
    assert sampled.dropout_spread.shape == bf.shape and np.median(sampled.dropout_spread) > 0
    assert not any(m.training for m in predictor.generator.modules())


@pytest.mark.slow
def test_a_reference_needs_two_training_fields(config):
    with pytest.raises(VsgridError, match="train_fields is 1"):
        ood_table(config, MODEL, ["breast-nontoxic"], train_fields=1)


@pytest.mark.slow
def test_cli_writes_the_table_and_names_a_bad_model_or_test_set(config, table, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "ood.parquet"
    common = ["ood", "--config", str(path), "--out", str(out)]
    assert main([*common, "--model", MODEL.name, "--test-set", "breast-nontoxic"]) == 0
    written = read_table(out)
    assert list(written.columns) == list(table.columns)
    assert list(written["test_set"]) == list(table["test_set"])
    np.testing.assert_array_equal(written["ood"], table["ood"])
    assert "breast-nontoxic (task 2, shift cell_type): AUROC " in capsys.readouterr().out
    out.unlink()
    for bad in (["--model", "lung-nontoxic.gfp.s0"], ["--model", MODEL.name, "--test-set", "lung"]):
        assert main([*common, "--test-set", "breast-nontoxic", *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and not out.exists()
