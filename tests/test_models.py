import pytest
import torch

from vsgrid.config import validate
from vsgrid.errors import VsgridError
from vsgrid.model.network import (
    GlobalGenerator,
    MultiscaleDiscriminator,
    NetworkConfig,
    VGGLoss,
    describe,
    feature_matching_loss,
    load_vgg19_features,
    lsgan_loss,
    padded_size,
    vgg19_features,
)
from vsgrid.model.train import TrainSettings

SMALL = NetworkConfig(ngf=4, n_downsample=2, n_blocks=1, ndf=4, num_D=2, n_layers_D=2)


def test_paper_generator_has_the_reference_parameter_count():
    info = describe(NetworkConfig.from_config(validate({})["network"]), 1080)
    assert info["generator_parameters"] == 182_430_721
    assert info["image_size"] == 1088
    # 967 G multiply-adds; the design's 2.46 TFLOP counts transposed convolutions at output size.
    assert info["generator_flops"] == pytest.approx(1.935e12, rel=1e-3)


def test_generator_weights_are_named_as_in_pix2pixhd():
    # NVIDIA/pix2pixHD's GlobalGenerator: one Sequential `model`; its ResnetBlock's layers in
    # `conv_block` (pad 0, conv 1, norm 2, ReLU 3, pad 4, conv 5, norm 6), so its weights load.
    names = {key.rsplit(".", 1)[0] for key in GlobalGenerator(SMALL).state_dict()}
    assert names == {
        "model.1",  # c7s1-ngf
        "model.4",  # down 1
        "model.7",  # down 2
        "model.10.conv_block.1",
        "model.10.conv_block.5",
        "model.11",  # up 1
        "model.14",  # up 2
        "model.18",  # c7s1-output
    }


def test_generator_keeps_the_image_size_and_range():
    generator = GlobalGenerator(SMALL)
    y = generator(torch.randn(2, 1, 32, 48))
    assert y.shape == (2, 1, 32, 48)
    assert y.abs().max() <= 1


def test_discriminator_returns_features_of_every_layer_per_scale():
    outputs = MultiscaleDiscriminator(SMALL)(torch.randn(1, 2, 64, 64))
    assert len(outputs) == 2 and all(len(scale) == SMALL.n_layers_D + 2 for scale in outputs)
    assert outputs[0][-1].shape[1] == 1
    assert (
        outputs[1][0].shape[-1] < outputs[0][0].shape[-1]
    )  # the second scale sees a half-size image


def test_losses():
    scores = [[torch.ones(1, 1, 4, 4)], [torch.ones(1, 1, 2, 2)]]
    assert lsgan_loss(scores, True) == 0 and lsgan_loss(scores, False) == 2
    features = [[torch.randn(1, 3, 4, 4), torch.ones(1, 1, 4, 4)] for _ in range(2)]
    assert feature_matching_loss(features, features, n_layers=2) == 0
    shifted = [[f + 1 for f in scale] for scale in features]
    # Each scale weighs 1/2, each matched layer 4/(2+1): 2 scales x 1/2 x 4/3 x |1|.
    assert feature_matching_loss(shifted, features, n_layers=2).item() == pytest.approx(4 / 3)


def test_learning_rate_is_constant_then_decays_linearly_to_zero():
    settings = TrainSettings.from_config(
        {**validate({})["train"], "lr": 2e-4, "lr_decay_start": 100, "max_epochs": 200}
    )
    assert settings.learning_rate(0) == settings.learning_rate(99) == 2e-4
    assert settings.learning_rate(150) == pytest.approx(1e-4)
    assert settings.learning_rate(200) == 0


def test_padded_size():
    assert (
        padded_size(1080, 4) == 1088 and padded_size(128, 2) == 128 and padded_size(129, 2) == 132
    )


def test_vgg_loss_loads_torchvision_style_weights(tmp_path):
    features = vgg19_features()
    assert len(features) == 30 and isinstance(features[28], torch.nn.Conv2d)
    path = tmp_path / "vgg19.pth"
    torch.save(
        {f"features.{k}": v for k, v in features.state_dict().items()}
        | {"classifier.0.weight": torch.zeros(2, 2)},
        path,
    )
    loaded = load_vgg19_features(path)
    assert torch.equal(loaded[0].weight, features[0].weight)
    loss = VGGLoss(loaded)
    fake = torch.rand(1, 1, 32, 32, requires_grad=True) * 2 - 1
    value = loss(fake, torch.rand(1, 1, 32, 32) * 2 - 1)
    value.backward()
    assert value > 0 and loss(fake, fake) == 0


def test_missing_vgg_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(VsgridError, match="vgg19-dcbb9e9d.pth.*lambda_vgg: 0"):
        load_vgg19_features(tmp_path / "nope.pth")
    (tmp_path / "other.pth").write_bytes(b"")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(VsgridError, match="not a torchvision VGG19"):
        load_vgg19_features(tmp_path / "other.pth")
