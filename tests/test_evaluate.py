"""A stain scored against itself and against copies degraded step by step (classical masks).

Granularity is left out of these features: on the quick data's small nuclei its spread over
instances is tiny, so its N-MAE swings with noise in either direction and would drown the mean.
"""

import copy

import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage as ndi

from vsgrid import arrays
from vsgrid.cli import main
from vsgrid.data.store import U16_MAX, open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.features import FeatureSet, measure_stack, worker_pool
from vsgrid.evaluation.scoring import ImageScoring, feature_spread, run_tables, score_blocks
from vsgrid.evaluation.segment import segmenter
from vsgrid.evaluation.selection import RankingSettings, rank_features, selected_features

N_IMAGES = 12
GROUPS = ("sizeshape", "zernike", "feret", "intensity", "texture", "radial_distribution")


@pytest.fixture(scope="module")
def setup(quick_config, quick_stores):
    config = copy.deepcopy(quick_config)
    config["segmentation"]["backend"] = "classical"
    segment = segmenter(config["segmentation"], "dapi", 1.3)
    tables = {}
    for test_set in ("lung-nontoxic", "lung-toxic"):
        store = open_store(quick_stores[test_set])
        real = store.images("test")[:N_IMAGES, 1]
        masks = segment(real)
        with worker_pool(2) as pmap:
            tables[test_set] = (real, masks, measure_stack(real, masks, FeatureSet(GROUPS), pmap))
    features = pd.concat(
        [t[2].assign(target=name) for name, t in tables.items()], ignore_index=True
    )
    settings = RankingSettings(
        top=20, trees=50, method="permutation", repeats=3, seed=0, instances=100_000, subsamples=1
    )
    ranking = rank_features(
        features.drop(columns=["image", "label", "target"]), features["target"], settings
    )
    real, masks, real_features = tables["lung-toxic"]
    return {
        "config": config,
        "segment": segment,
        "real": real,
        "masks": masks,
        "features": real_features,
        "ranking": ranking,
    }


def score(setup, pred):
    """A run's scores through the scorer `vsgrid evaluate` uses, on arrays held in memory."""
    real, features, config = setup["real"], setup["features"], setup["config"]
    selected = selected_features(setup["ranking"], list(features.columns))
    how = ImageScoring(
        "dapi", config["evaluation"], U16_MAX, FeatureSet.from_config(config["features"], selected)
    )
    rows, differences, _ = score_blocks(
        how,
        (real, pred, setup["masks"], setup["segment"](pred)),
        lambda start, stop: features[features["image"].between(start, stop - 1)],
        source="the real feature table",
        block_images=5,  # blocks that do not divide the 12 images
    )
    scores = run_tables(rows, differences, feature_spread([features], selected))["scores"]
    return dict(scores.loc[scores["feature"] == "", ["metric", "value"]].itertuples(index=False))


def test_the_real_stain_against_itself_is_perfect(setup):
    scores = score(setup, setup["real"].copy())
    assert scores["ssim"] == pytest.approx(1.0)
    assert scores["f1"] == 1.0 and scores["jaccard"] == 1.0
    # The real features were measured from uint16, the prediction's from float: cp_measure's
    # Python path (the quick config has no numba) sums them in another order, off by ~1e-17.
    assert scores["nmae"] == pytest.approx(0.0, abs=1e-12) and scores["match_rate"] == 1.0
    assert setup["ranking"]["selected"].sum() == 20


def test_each_matched_cell_has_its_nmae_and_its_mean_spread(setup):
    real, features, config = setup["real"], setup["features"], setup["config"]
    selected = selected_features(setup["ranking"], list(features.columns))
    scale = feature_spread([features], selected)
    how = ImageScoring(
        "dapi",
        config["evaluation"],
        U16_MAX,
        FeatureSet.from_config(config["features"], selected),
        tuple(scale.to_numpy()),
    )
    height, width = real.shape[1:]
    spread = np.broadcast_to(
        np.arange(height * width, dtype=np.float32).reshape(height, width), real.shape
    )  # a spread map every cell reads another mean of
    masks = setup["masks"]
    _, _, cells = score_blocks(
        how,
        (real, real.copy(), masks, setup["segment"](real.copy())),
        lambda start, stop: features[features["image"].between(start, stop - 1)],
        source="the real feature table",
        block_images=5,
        spread=spread,
    )
    cells = pd.concat(cells, ignore_index=True)
    assert len(cells) == len(features)  # every real nucleus matched by its own copy
    # the real stain against itself: float sums in another order, as for the run's N-MAE
    assert cells["nmae"].max() == pytest.approx(0.0, abs=1e-12)
    for row in cells.sample(5, random_state=0).itertuples():
        assert row.tta == pytest.approx(spread[row.image][masks[row.image] == row.label].mean())


def test_the_crps_rewards_samples_that_bracket_the_real_cells_and_one_sample_is_the_nmae(setup):
    """The instrument's controls for the proper score, through the scorer `vsgrid evaluate` uses:
    a prediction with the wrong brightness scores its N-MAE as CRPS when it is its only sample
    (must equal), and better when its other samples bracket the real stain (must pass), and no
    better when they repeat its error (must fail to improve)."""
    real, features, config = setup["real"], setup["features"], setup["config"]
    selected = selected_features(setup["ranking"], list(features.columns))
    how = ImageScoring(
        "dapi", config["evaluation"], U16_MAX, FeatureSet.from_config(config["features"], selected)
    )
    bright = np.clip(real * 1.3, 0, U16_MAX).astype(np.uint16)
    dim = (real * 0.7).astype(np.uint16)
    masks = setup["masks"]

    def scores(*others):
        samples = np.stack([bright, *others], axis=1)
        rows, differences, _ = score_blocks(
            how,
            (real, bright, masks, masks),
            lambda start, stop: features[features["image"].between(start, stop - 1)],
            source="the real feature table",
            block_images=5,
            samples=samples,
        )
        table = run_tables(rows, differences, feature_spread([features], selected))["scores"]
        overall = table[table["feature"] == ""].set_index("metric")["value"]
        return overall["nmae"], overall["crps"]

    nmae, alone = scores()
    assert alone == pytest.approx(nmae, rel=1e-12)
    _, bracketed = scores(dim, dim)
    _, repeated = scores(bright, bright)
    assert bracketed < 0.8 * nmae and repeated == pytest.approx(nmae, rel=1e-12)


def blur(real, step):
    return ndi.gaussian_filter(real.astype(float), (0, 0.6 * step, 0.6 * step))


def shift(real, step):
    return ndi.shift(real.astype(float), (0, 0.3 * step, 0.3 * step), mode="nearest")


def noise(real, step):
    return real + np.random.default_rng(step).normal(0, 250 * step, real.shape)


def missing_cells(real, step, masks=None):
    """Cells erased: their pixels replaced by the image's background level."""
    out = real.astype(float).copy()
    rng = np.random.default_rng(0)
    for i, m in enumerate(masks):
        ids = np.unique(m[m > 0])
        gone = rng.permutation(ids)[: int(round(len(ids) * 0.25 * step))]
        out[i][np.isin(m, gone)] = np.median(real[i])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("degrade", [blur, shift, noise, missing_cells])
def test_every_metric_worsens_step_by_step(setup, degrade):
    extra = {"masks": setup["masks"]} if degrade is missing_cells else {}
    steps = [score(setup, setup["real"].copy())]
    for step in (1, 2, 3):
        pred = np.clip(np.rint(degrade(setup["real"], step, **extra)), 0, 65535).astype(np.uint16)
        steps.append(score(setup, pred))
    table = pd.DataFrame(steps)

    def worsens(values, lower_is_better=False):
        values = -values if lower_is_better else values
        return (np.diff(values) <= 1e-9).all() and values[-1] < values[0]

    for metric in ("ssim", "psnr", "f1", "jaccard"):
        assert worsens(table[metric].to_numpy()), (
            degrade.__name__,
            metric,
            table[metric].to_numpy(),
        )
    nmae, match_rate = table["nmae"].to_numpy(), table["match_rate"].to_numpy()
    # N-MAE compares matched instances only, so it is not monotonic in the damage: features do not
    # depend on where an instance lies (a shifted copy changes them only through interpolation),
    # erased cells lower the match rate, not the features of the cells that remain, and once blur
    # or noise has lost half the matches, the cells still matched are the least damaged ones.
    assert (nmae[1:] > 0).all(), (degrade.__name__, nmae)
    if degrade is shift:
        assert (match_rate[1:] < 1).all()
    else:
        assert worsens(match_rate), (degrade.__name__, match_rate)
    if degrade in (blur, noise):
        assert nmae[1] < nmae[2], (degrade.__name__, nmae)


def test_a_prediction_of_another_shape_is_refused(setup):
    with pytest.raises(VsgridError, match="shape"):
        score(setup, setup["real"][:, :64])


def test_cli_runs_segment_measure_rank_and_evaluate(quick_config, quick_stores, tmp_path):
    import yaml
    import zarr

    config = copy.deepcopy(quick_config)
    config["data"]["dir"] = str(next(iter(quick_stores.values())).parent)
    config["segmentation"]["backend"] = "classical"
    config["features"]["names"] = [
        "AreaShape_Area",
        "Intensity_MeanIntensity",
        "Texture_Contrast_3_00_256",
        "Granularity_2",
    ]
    config["evaluation"].update(top_features=2, forest_trees=20, permutation_repeats=2)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    c = ["--config", str(path)]
    for test_set in ("lung-nontoxic", "lung-toxic"):
        assert (
            main(
                [
                    "segment",
                    *c,
                    "--test-set",
                    test_set,
                    "--stain",
                    "dapi",
                    "--out",
                    str(tmp_path / f"{test_set}.masks.zarr"),
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "measure",
                    *c,
                    "--test-set",
                    test_set,
                    "--stain",
                    "dapi",
                    "--masks",
                    str(tmp_path / f"{test_set}.masks.zarr"),
                    "--out",
                    str(tmp_path / f"{test_set}.features.parquet"),
                    "--quiet",
                ]
            )
            == 0
        )
    inputs = [f"{t}={tmp_path / f'{t}.features.parquet'}" for t in ("lung-nontoxic", "lung-toxic")]
    assert (
        main(["rank-features", *c, "--inputs", *inputs, "--out", str(tmp_path / "ranking.tsv")])
        == 0
    )
    # A "prediction" that is the real stain with noise, segmented and measured like one.
    store = open_store(quick_stores["lung-toxic"])
    real = store.images("test")[:, 1]
    group = zarr.open_group(tmp_path / "pred.zarr", mode="w")
    noisy = np.clip(real + np.random.default_rng(0).normal(0, 300, real.shape), 0, 65535).astype(
        np.uint16
    )
    arrays.create(group, real.shape, chunks=(1, *real.shape[1:]), dtype="uint16", name="image")[
        :
    ] = noisy
    arrays.create(group, real.shape, chunks=(1, *real.shape[1:]), dtype="int32", name="labels")[
        :
    ] = segmenter(config["segmentation"], "dapi", 1.3)(noisy)
    group.attrs.update(
        {
            "model": "lung-nontoxic.dapi.s0",
            "stain": "dapi",
            "test_set": "lung-toxic",
            "store_id": store.store_id,
        }
    )
    p = ["--test-set", "lung-toxic", "--stain", "dapi"]
    files = {
        "--prediction": "pred.zarr",
        "--real-masks": "lung-toxic.masks.zarr",
        "--real-features": "lung-toxic.features.parquet",
        "--ranking": "ranking.tsv",
    }
    arguments = [x for option, name in files.items() for x in (option, str(tmp_path / name))]
    assert (
        main(
            [
                "evaluate",
                *c,
                *p,
                *arguments,
                "--model",
                "lung-nontoxic.dapi.s0",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    images = pd.read_parquet(tmp_path / "run" / "images.parquet")
    scores = pd.read_parquet(tmp_path / "run" / "scores.parquet")
    assert len(images) == real.shape[0] and {"ssim", "psnr", "f1", "jaccard"} <= set(images.columns)
    assert set(scores["level"]) == {"pixel", "instance", "feature"}
    assert 0 < scores.set_index(["metric", "feature"]).loc[("f1", ""), "value"] < 1
    assert (scores["metric"] == "nmae").sum() == 3  # two selected features and their mean
    predicted = pd.read_parquet(tmp_path / "run" / "features.parquet")
    assert len(predicted) > 0 and list(predicted.columns[2:]) == list(
        pd.read_csv(tmp_path / "ranking.tsv", sep="\t").query("selected")["feature"]
    )


def test_cli_reports_a_missing_cellpose_model(quick_config, quick_stores, tmp_path, capsys):
    import yaml

    config = copy.deepcopy(quick_config)
    config["data"]["dir"] = str(next(iter(quick_stores.values())).parent)
    config["segmentation"]["backend"] = "cellpose"
    config["segmentation"]["cellpose"]["models"]["dapi"] = str(tmp_path / "no-such-weights")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert (
        main(
            [
                "segment",
                "--config",
                str(path),
                "--test-set",
                "lung-toxic",
                "--stain",
                "dapi",
                "--out",
                str(tmp_path / "m.zarr"),
            ]
        )
        == 2
    )
    assert "neither an existing file nor a built-in model name" in capsys.readouterr().err


def test_evaluate_refuses_a_prediction_of_another_stain_model_or_store_build(
    quick_config, quick_stores, tmp_path, capsys
):
    import yaml

    config = copy.deepcopy(quick_config)
    config["data"]["dir"] = str(next(iter(quick_stores.values())).parent)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    store = open_store(quick_stores["lung-toxic"])
    pred = zarr.open_group(tmp_path / "pred.zarr", mode="w")
    arrays.create(
        pred,
        (store.images("test").shape[0], 128, 128),
        chunks=(1, 128, 128),
        dtype="uint16",
        name="image",
    )[:] = 0
    run = [
        "evaluate",
        "--config",
        str(path),
        "--test-set",
        "lung-toxic",
        "--stain",
        "dapi",
        "--prediction",
        str(tmp_path / "pred.zarr"),
        "--out",
        str(tmp_path / "run"),
    ]
    run += [
        "--real-masks",
        "m.zarr",
        "--real-features",
        "f.parquet",
        "--ranking",
        "r.tsv",
        "--model",
        "lung-nontoxic.dapi.s0",
    ]
    for attrs, complaint in (
        (
            {"stain": "fitc", "model": "lung-nontoxic.dapi.s0", "store_id": store.store_id},
            "stain 'fitc', not 'dapi'",
        ),
        (
            {"stain": "dapi", "model": "lung-nontoxic.fitc.s0", "store_id": store.store_id},
            "model 'lung-nontoxic.fitc.s0', not 'lung-nontoxic.dapi.s0'",
        ),
        (
            {"stain": "dapi", "model": "lung-nontoxic.dapi.s0", "store_id": "an earlier build"},
            "store_id 'an earlier build'",
        ),
    ):
        pred.attrs.update({"test_set": "lung-toxic", **attrs})
        assert main(run) == 2
        assert complaint in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_missing_chunk_of_the_store_is_an_error_not_zeros(quick_config, quick_stores, tmp_path):
    import shutil

    from vsgrid.evaluation.segment import segment_test_set

    shutil.copytree(quick_stores["lung-toxic"], tmp_path / "lung-toxic.zarr")
    next((tmp_path / "lung-toxic.zarr" / "test" / "c").glob("3/*/*/*")).unlink()
    config = {**quick_config, "data": {**quick_config["data"], "dir": str(tmp_path)}}
    with pytest.raises(VsgridError, match=r"lung-toxic.zarr/test: chunk c/3/0/0/0 is missing"):
        segment_test_set(config, "lung-toxic", "dapi", tmp_path / "masks.zarr")
    assert not (tmp_path / "masks.zarr").exists()
