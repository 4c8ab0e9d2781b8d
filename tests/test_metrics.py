import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from vsgrid.errors import VsgridError
from vsgrid.evaluation.metrics import (
    AP_THRESHOLDS,
    crps,
    instance_scores,
    match_instances,
    nrmse,
    overlaps,
    pcc,
    pixel_scores,
    sample_spread,
)


def square(masks, label, y, x, h, w):
    masks[y : y + h, x : x + w] = label


def test_identical_images_score_ssim_1_and_a_defined_psnr():
    image = np.random.default_rng(0).integers(0, 5000, (64, 64)).astype(np.uint16)
    scores = pixel_scores(image, image.copy())
    assert scores["ssim"] == pytest.approx(1.0) and scores["psnr"] == math.inf
    constant = np.full((8, 8), 7, np.uint16)
    assert pixel_scores(constant, constant)["ssim"] == pytest.approx(1.0)


def test_pixel_scores_worsen_with_blur_and_noise():
    rng = np.random.default_rng(1)
    real = ndi.gaussian_filter(rng.random((96, 96)), 2) * 20000
    previous = pixel_scores(real, real)
    for step in range(1, 4):
        degraded = ndi.gaussian_filter(real, step) + rng.normal(0, 300 * step, real.shape)
        scores = pixel_scores(real, degraded)
        assert scores["ssim"] < previous["ssim"] and scores["psnr"] < previous["psnr"]
        previous = scores


def test_pixel_scores_reject_another_shape_and_nan():
    with pytest.raises(VsgridError, match="shape"):
        pixel_scores(np.zeros((4, 4)), np.zeros((4, 5)))
    bad = np.zeros((4, 4))
    bad[1, 1] = np.nan
    with pytest.raises(VsgridError, match="1 NaN"):
        pixel_scores(np.zeros((4, 4)), bad)


def hand_made():
    """Real objects 1-4 (10 x 10 squares); predictions with known IoUs:
    1 -> IoU 0.8 (10 x 8 inside), 2 -> IoU exactly 0.7 (10 x 7 inside, not a match),
    3 -> missed, 4 -> IoU 1; plus one invented object."""
    real = np.zeros((40, 60), np.int32)
    pred = np.zeros_like(real)
    for label, x in zip((1, 2, 3, 4), (0, 15, 30, 45)):
        square(real, label, 0, x, 10, 10)
    square(pred, 7, 0, 0, 10, 8)
    square(pred, 8, 0, 15, 10, 7)
    square(pred, 9, 0, 45, 10, 10)
    square(pred, 5, 25, 25, 5, 5)
    return real, pred


def test_hand_made_masks_give_the_exact_f1_and_jaccard():
    real, pred = hand_made()
    scores = instance_scores(real, pred, iou_threshold=0.7)
    # Matches: objects 1 (0.8) and 4 (1.0); object 2 at exactly 0.7 is not a match.
    assert scores["n_real"] == 4 and scores["n_pred"] == 4
    assert scores["f1"] == pytest.approx(2 * 2 / 8)
    assert scores["precision"] == pytest.approx(2 / 4) and scores["recall"] == pytest.approx(2 / 4)
    # Best IoU of every object, real (0.8, 0.7, 0, 1) and predicted (0.8, 0.7, 1, 0).
    assert scores["jaccard"] == pytest.approx((0.8 + 0.7 + 0 + 1 + 0.8 + 0.7 + 1 + 0) / 8)
    assert instance_scores(real, pred, iou_threshold=0.69)["f1"] == pytest.approx(2 * 3 / 8)


def test_masks_against_themselves_and_empty_masks():
    real, _ = hand_made()
    assert instance_scores(real, real) == {
        "f1": 1.0,
        "jaccard": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "ap": 1.0,
        "splits": 0,
        "merges": 0,
        "n_real": 4,
        "n_pred": 4,
    }
    empty = np.zeros_like(real)
    assert (
        instance_scores(empty, empty)["f1"] == 1.0
        and instance_scores(empty, empty)["jaccard"] == 1.0
    )
    assert instance_scores(real, empty) == {
        "f1": 0.0,
        "jaccard": 0.0,
        "precision": 0.0,
        "recall": 0.0,
        "ap": 0.0,
        "splits": 0,
        "merges": 0,
        "n_real": 4,
        "n_pred": 0,
    }
    assert instance_scores(empty, real)["f1"] == 0.0 and instance_scores(empty, real)["n_pred"] == 4


def test_masks_must_be_integer_labels():
    real, _ = hand_made()
    with pytest.raises(VsgridError, match="integer label image"):
        instance_scores(real, real.astype(float))
    with pytest.raises(VsgridError, match="integer label image"):
        instance_scores(real > 0, real)


def test_match_instances_is_one_to_one_and_maximises_iou():
    real = np.zeros((10, 20), np.int32)
    pred = np.zeros_like(real)
    real[:, :10], real[:, 10:] = 1, 2
    pred[:, 1:11], pred[:, 11:] = 5, 6  # 5 overlaps 1 by 9 px, 2 by 1 px
    real_ids, pred_ids, ious = match_instances(real, pred, min_iou=0.5)
    assert list(zip(real_ids, pred_ids)) == [(1, 5), (2, 6)]
    assert ious == pytest.approx([90 / 110, 90 / 100])


def test_compact_and_sparse_labels_give_the_same_ious():
    """Compact labels are counted by one bincount; labels too large for it go through np.unique:
    the same IoUs either way."""
    real, pred = hand_made()
    compact, sparse = overlaps(real, pred), overlaps(real * 100_000, pred * 100_000)
    np.testing.assert_array_equal(compact.iou, sparse.iou)
    assert list(compact.real_ids) == [1, 2, 3, 4] and list(sparse.real_ids) == [
        100_000,
        200_000,
        300_000,
        400_000,
    ]


def test_pcc_and_nrmse_by_construction_and_against_scipy_and_skimage():
    from scipy.stats import pearsonr
    from skimage.metrics import normalized_root_mse

    rng = np.random.default_rng(3)
    real = rng.integers(0, 4000, (40, 50)).astype(np.uint16)
    assert pcc(real, real) == pytest.approx(1.0) and pcc(
        real, 4000 - real.astype(float)
    ) == pytest.approx(-1.0)
    assert nrmse(real, real) == 0.0
    offset = real.astype(float) + 10.0  # a constant error of 10 counts
    assert nrmse(real, offset) == pytest.approx(10.0 / (real.max() - real.min()))
    noisy = real + rng.normal(0, 300, real.shape)
    assert pcc(real, noisy) == pytest.approx(pearsonr(real.ravel(), noisy.ravel())[0], rel=1e-12)
    assert nrmse(real, noisy) == pytest.approx(
        normalized_root_mse(real.astype(float), noisy, normalization="min-max"), rel=1e-12
    )
    assert np.isnan(pcc(np.full((4, 4), 3), noisy[:4, :4]))


def test_average_precision_by_construction_and_against_cellpose():
    from cellpose.metrics import average_precision

    real, pred = hand_made()  # IoUs 0.8, 0.7 and 1.0; one real missed, one invented
    expected = [(3 if t <= 0.7 else 2 if t <= 0.8 else 1) for t in AP_THRESHOLDS]
    expected = np.mean([tp / (4 + 4 - tp) for tp in expected])
    assert instance_scores(real, pred)["ap"] == pytest.approx(expected)
    relabelled = np.unique(pred, return_inverse=True)[1].reshape(
        pred.shape
    )  # Cellpose wants labels 1..n
    cellpose_ap = average_precision(real, relabelled, threshold=list(AP_THRESHOLDS))[0]
    assert instance_scores(real, pred)["ap"] == pytest.approx(float(np.mean(cellpose_ap)), rel=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(3):  # and on random blobs
        blobs = ndi.label(ndi.gaussian_filter(rng.random((80, 80)), 2) > 0.52)[0]
        moved = ndi.label(ndi.shift(blobs > 0, (1, 2), order=0))[0]
        ours = instance_scores(blobs, moved)["ap"]
        assert ours == pytest.approx(
            float(np.mean(average_precision(blobs, moved, threshold=list(AP_THRESHOLDS))[0])),
            rel=1e-6,
        )


def test_splits_and_merges_by_construction():
    real = np.zeros((20, 60), np.int32)
    real[:, 0:20], real[:, 20:30], real[:, 30:40], real[:, 40:60] = 1, 2, 3, 4
    pred = np.zeros_like(real)
    pred[:, 0:9], pred[:, 10:19] = 5, 6  # real 1 split in two
    pred[:, 20:40] = 7  # reals 2 and 3 merged into one
    pred[:, 40:60] = 8  # real 4 found as it is
    scores = instance_scores(real, pred)
    assert scores["splits"] == 1 and scores["merges"] == 1
    assert instance_scores(real, real)["splits"] == instance_scores(real, real)["merges"] == 0


def test_crps_is_the_integral_of_the_squared_cdf_difference_and_a_point_forecasts_abs_error():
    """Against its definition, CRPS = integral of (F(t) - 1{t >= y})^2 dt, F the samples'
    empirical CDF: a Riemann sum on a 1e-4 grid, within 1e-3."""
    rng = np.random.default_rng(0)
    samples, observed = rng.normal(size=(5, 3)), np.array([0.3, -2.0, 4.0])
    t = np.arange(-10, 10, 1e-4)
    for j, y in enumerate(observed):
        cdf = (samples[:, j, None] <= t).mean(0)
        integral = ((cdf - (t >= y)) ** 2).sum() * 1e-4
        assert crps(samples[:, j], y) == pytest.approx(integral, abs=1e-3)
    np.testing.assert_allclose(crps(samples[:1], observed), np.abs(samples[0] - observed))
    # a spread around the truth scores better than a point beside it; a spread elsewhere does not
    point = np.full((1, 1), 1.0)
    assert crps(np.array([[-1.0], [1.0]]), 0.0) < crps(point, 0.0)
    assert crps(np.array([[1.0], [3.0]]), 0.0) > crps(point, 0.0)
    assert sample_spread(np.array([[-1.0], [1.0]]))[0] == 0.5  # E|X - X'| / 2 = (0 + 2) / 2 / 2
