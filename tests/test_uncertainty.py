"""What a generator says of its own predictions: test-time-augmentation spread, bottleneck
features and the Mahalanobis reference of the OOD score (no trained model needed)."""

import numpy as np
import pytest
import torch
from torch import nn

from vsgrid.errors import VsgridError
from vsgrid.model.device import Device
from vsgrid.model.network import GlobalGenerator, NetworkConfig
from vsgrid.model.reference import OodReference, evenly_spaced
from vsgrid.model.uncertainty import (
    DIHEDRAL,
    bottleneck_features,
    dropout_spread,
    running_spread,
    split_generator,
    transform,
    tta_spread,
    untransform,
)


def test_the_eight_transforms_are_distinct_and_each_is_undone():
    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    seen = {transform(x, *t).numpy().tobytes() for t in DIHEDRAL}
    assert len(DIHEDRAL) == 8 and len(seen) == 8 and DIHEDRAL[0] == (0, False)
    for t in DIHEDRAL:
        assert torch.equal(untransform(transform(x, *t), *t), x)


def test_a_rotation_equivariant_model_has_no_spread():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 1, 12, 12)).astype(np.float32))
    pointwise = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Tanh(), nn.Conv2d(4, 1, 1))
    first, spread = tta_spread(pointwise, x)
    # A per-pixel map computes the same numbers in every orientation: exactly no spread.
    assert torch.equal(first, pointwise(x)) and torch.count_nonzero(spread) == 0
    isotropic = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        isotropic.weight[:] = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
        _, spread = tta_spread(isotropic, x)
    # A kernel with the square's symmetries, zero-padded: equivariant too, but its sums run in
    # another order when turned, so the spread is float32 rounding of values about 10 in size.
    assert spread.max() < 1e-5


def test_the_spread_is_the_standard_deviation_of_the_eight_outputs():
    torch.manual_seed(0)
    lopsided = nn.Conv2d(1, 1, 3, padding=1)  # a random kernel: no symmetry at all
    x = torch.randn(2, 1, 10, 14)  # not square: a quarter turn swaps height and width
    with torch.no_grad():
        first, spread = tta_spread(lopsided, x)
        outputs = torch.stack([untransform(lopsided(transform(x, *t)), *t) for t in DIHEDRAL])
    assert torch.equal(first, outputs[0])
    # Welford's running moments against the two-pass formula: float32 rounding apart
    torch.testing.assert_close(spread, outputs.std(0, unbiased=False), rtol=1e-5, atol=1e-6)
    assert spread.min() >= 0 and spread.mean() > 0.1


def test_the_running_spread_is_the_standard_deviation_of_its_outputs():
    outputs = torch.randn(5, 3, 7, dtype=torch.float64) * 100 + 1e4  # far from 0, as counts
    for ddof in (0, 1):
        # float32 running moments of values about 1e4 against the float64 two-pass formula:
        # a relative difference of a few float32 epsilons on the 1e4 scale, scaled to the SD
        torch.testing.assert_close(
            running_spread(iter(outputs), ddof=ddof).double(),
            outputs.std(0, correction=ddof),
            rtol=1e-4,
            atol=0,
        )


def test_mc_dropout_spreads_only_a_generator_with_dropout_and_leaves_it_as_it_was():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    with_dropout = GlobalGenerator(NetworkConfig(ngf=4, n_downsample=1, n_blocks=2, dropout=0.5))
    with_dropout.eval()
    assert sum(isinstance(m, nn.Dropout) for m in with_dropout.modules()) == 2
    with torch.no_grad():
        spread = dropout_spread(with_dropout, with_dropout, x, samples=6)
        # eval mode again after: the deterministic pass is what it was
        assert torch.equal(with_dropout(x), with_dropout(x))
    assert spread.shape == (2, 1, 16, 16) and spread.mean() > 0
    assert not any(m.training for m in with_dropout.modules())
    plain = GlobalGenerator(NetworkConfig(ngf=4, n_downsample=1, n_blocks=2))
    with pytest.raises(VsgridError, match="trained with dropout"):
        dropout_spread(plain, plain, x, samples=6)
    with pytest.raises(VsgridError, match="2 passes or more"):
        dropout_spread(with_dropout, with_dropout, x, samples=1)


def test_bottleneck_features_pool_the_trunk_over_the_field_not_its_padding():
    torch.manual_seed(0)
    generator = GlobalGenerator(NetworkConfig(ngf=4, n_downsample=2, n_blocks=2))
    trunk, head, multiple = split_generator(generator)
    assert multiple == 4 and trunk[-1] is generator.model[4 + 3 * 2 + 2 - 1]
    fields = np.random.default_rng(0).normal(size=(3, 32, 32)).astype(np.float32)
    features = bottleneck_features(generator, Device.pick(), [fields[:2], fields[2:]])
    with torch.no_grad():
        x = torch.from_numpy(fields)[:, None]
        bottleneck = trunk(x)
        assert torch.equal(head(bottleneck), generator(x))  # the same layers, in order
    bottleneck = bottleneck.double()
    expected = torch.cat([bottleneck.mean((2, 3)), bottleneck.std((2, 3))], 1).numpy()
    assert features.shape == (3, 2 * 16)
    # float32 convolutions pooled in float32 on one path and float64 on the other
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    # a 30 x 30 field is padded to 32 x 32; its 8 x 8 bottleneck covers the field, all of it kept
    assert bottleneck_features(generator, Device.pick(), [fields[:, :30, :30]]).shape == (3, 32)


def test_the_training_mean_is_at_distance_zero_and_distance_is_symmetric():
    rng = np.random.default_rng(0)
    train_features = rng.normal(size=(200, 10)) * np.arange(1, 11) + 5.0
    reference = OodReference.fit(train_features)
    centre = train_features.mean(0)
    step = rng.normal(size=10)
    [zero] = reference.score(centre[None])
    assert zero == pytest.approx(0.0, abs=1e-9)
    scores = reference.score(np.stack([centre + step, centre - step, centre + 3 * step]))
    assert scores[0] == pytest.approx(scores[1]) and scores[2] == pytest.approx(3 * scores[0])
    # on the training fields themselves, about sqrt(features) on average: a Mahalanobis distance
    assert 2.0 < reference.score(train_features).mean() < 4.5
    with pytest.raises(VsgridError, match="2 or more"):
        OodReference.fit(train_features[:1])


def test_a_reference_of_fewer_training_fields_spans_the_split():
    assert list(evenly_spaced(10, 4)) == [0, 3, 6, 9]
    assert list(evenly_spaced(3, 256)) == list(evenly_spaced(3, None)) == [0, 1, 2]
