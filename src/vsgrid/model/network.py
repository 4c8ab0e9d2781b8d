"""Pix2PixHD (Wang et al., 2018) for bright-field -> stain translation, as in NVIDIA's reference.

The whole network, top to bottom: the global generator, the multiscale PatchGAN discriminator,
the losses (LSGAN, discriminator feature matching, optional VGG19 perceptual loss) and the
optimiser settings. Every hyperparameter comes from the ``model`` and ``train`` sections of the
config; nothing here reads files or data except :func:`load_vgg19_features`.

Shapes: images are (B, C, H, W) in [-1, 1] after training-set normalisation; H and W must be
multiples of ``2 ** n_downsample`` (inference pads, :mod:`vsgrid.model.infer`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from vsgrid.errors import VsgridError
from vsgrid.files import read_weights


@dataclass(frozen=True)
class NetworkConfig:
    """The shape of the networks: what a checkpoint must match to be loaded."""

    input_nc: int = 1
    output_nc: int = 1
    ngf: int = 64
    n_downsample: int = 4
    n_blocks: int = 9
    ndf: int = 64
    num_D: int = 2
    n_layers_D: int = 3
    dropout: float = 0.0  # in each residual block (pix2pixHD's use_dropout: 0.5); 0 = none

    @classmethod
    def from_config(cls, network: dict) -> NetworkConfig:
        return cls(**{k: network[k] for k in cls.__dataclass_fields__})

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this."""
        return 2**self.n_downsample

    def check_size(self, height: int, width: int, what: str) -> None:
        """Images must reach the bottleneck at least 2 pixels wide, where residual blocks reflect-pad by 1."""
        smallest = 2 * self.multiple
        least = smallest - self.multiple + 1
        if (
            -(-height // self.multiple) * self.multiple < smallest
            or -(-width // self.multiple) * self.multiple < smallest
        ):
            raise VsgridError(
                f"{what} are {height} x {width} pixels, too small for this network "
                f"({self.n_downsample} downsamplings need at least {least} x {least})"
            )


@dataclass(frozen=True)
class Losses:
    """Weights of the generator's losses beside LSGAN (``network`` section of the config)."""

    lambda_feat: float = 10.0
    lambda_l1: float = 0.0
    lambda_vgg: float = 0.0
    vgg_weights: str | None = None

    @classmethod
    def from_config(cls, network: dict) -> Losses:
        return cls(**{k: network[k] for k in cls.__dataclass_fields__})


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) at the bottom and right to multiples of ``multiple``.

    Returns the padded tensor and the original (H, W) to crop back to. Never resizes.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (height, width)


def init_weights(module: nn.Module) -> None:
    """Pix2PixHD's initialisation: N(0, 0.02) convolution weights, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------- generator


class ResnetBlock(nn.Module):
    """x + (reflect-pad, conv3x3, norm, ReLU, [dropout,] reflect-pad, conv3x3, norm)(x)."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        # The reference's attribute name and layer order, so that pix2pixHD's own generator
        # weights load as they are.
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3),
            nn.InstanceNorm2d(dim),
            nn.ReLU(True),
            *([nn.Dropout(dropout)] if dropout > 0 else []),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3),
            nn.InstanceNorm2d(dim),
        )

    def forward(self, x):
        return x + self.conv_block(x)


class GlobalGenerator(nn.Module):
    """Pix2PixHD's global generator: c7s1-ngf, n_downsample stride-2 convs, n_blocks residual
    blocks at the bottleneck, n_downsample transposed convs, c7s1-output_nc, tanh.

    Instance norm without affine parameters, reflection padding, as in the reference
    (1 in, 1 out, ngf 64, 4 downsamplings, 9 blocks: 182,430,721 parameters).
    """

    def __init__(self, net: NetworkConfig):
        super().__init__()
        ngf = net.ngf
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(net.input_nc, ngf, kernel_size=7),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        for i in range(net.n_downsample):
            width = ngf * 2**i
            layers += [
                nn.Conv2d(width, width * 2, kernel_size=3, stride=2, padding=1),
                nn.InstanceNorm2d(width * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 2**net.n_downsample, net.dropout) for _ in range(net.n_blocks)]
        for i in range(net.n_downsample, 0, -1):
            width = ngf * 2**i
            layers += [
                nn.ConvTranspose2d(
                    width, width // 2, kernel_size=3, stride=2, padding=1, output_padding=1
                ),
                nn.InstanceNorm2d(width // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, net.output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


# --------------------------------------------------------------------------- discriminator


class NLayerDiscriminator(nn.Module):
    """A PatchGAN: n_layers stride-2 4x4 convs, one stride-1, then a 1-channel score map.

    Returns the output of every layer, so the generator can match the discriminator's
    features of real and fake images.
    """

    def __init__(self, input_nc: int, ndf: int, n_layers: int):
        super().__init__()
        kw, pad = 4, 2
        layers = [
            nn.Sequential(
                nn.Conv2d(input_nc, ndf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2, True)
            )
        ]
        width = ndf
        for n in range(1, n_layers + 1):
            previous, width = width, min(width * 2, 512)
            stride = 2 if n < n_layers else 1
            layers.append(
                nn.Sequential(
                    nn.Conv2d(previous, width, kw, stride=stride, padding=pad),
                    nn.InstanceNorm2d(width),
                    nn.LeakyReLU(0.2, True),
                )
            )
        layers.append(nn.Sequential(nn.Conv2d(width, 1, kw, stride=1, padding=pad)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """num_D PatchGANs on the image at full, half, quarter ... resolution.

    Input: BF concatenated with the real or generated stain.
    Output: per scale, the list of layer outputs (the last one is the score map).
    """

    def __init__(self, net: NetworkConfig):
        super().__init__()
        self.scales = nn.ModuleList(
            NLayerDiscriminator(net.input_nc + net.output_nc, net.ndf, net.n_layers_D)
            for _ in range(net.num_D)
        )

    def forward(self, x) -> list[list[torch.Tensor]]:
        outputs = []
        for i, discriminator in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(discriminator(x))
        return outputs


# --------------------------------------------------------------------------- losses


def lsgan_loss(outputs: list[list[torch.Tensor]], target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss on the score map of every scale, summed over scales."""
    target = 1.0 if target_is_real else 0.0
    return sum(
        F.mse_loss(scale[-1].float(), torch.full_like(scale[-1].float(), target))
        for scale in outputs
    )


def feature_matching_loss(
    fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]], n_layers: int
) -> torch.Tensor:
    """L1 between discriminator features of fake and real, weighted as in the reference
    (4 / (n_layers + 1) per layer, 1 / num_D per scale); the score maps are not matched."""
    layer_weight, scale_weight = 4.0 / (n_layers + 1), 1.0 / len(fake)
    loss = 0.0
    for fake_scale, real_scale in zip(fake, real):
        for f, r in zip(fake_scale[:-1], real_scale[:-1]):
            loss = loss + scale_weight * layer_weight * F.l1_loss(f.float(), r.detach().float())
    return loss


VGG19_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
VGG_SLICES = (2, 7, 12, 21, 30)  # ends of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in `features`
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def vgg19_features() -> nn.Sequential:
    """torchvision's VGG19 ``features`` up to relu5_1 (same indices, so its weights load)."""
    layers, channels = [], 3
    for item in VGG19_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(True)]
            channels = item
    return nn.Sequential(*layers[: VGG_SLICES[-1]])


def load_vgg19_features(path: str | Path) -> nn.Sequential:
    """VGG19 features with ImageNet weights from a local torchvision checkpoint (vgg19-dcbb9e9d.pth).

    Compute nodes are often offline: fetch the file once where there is internet and point
    ``network.vgg_weights`` at it.
    """
    path = Path(path)
    if not path.is_file():
        raise VsgridError(
            f"network.vgg_weights: {path} does not exist; download torchvision's "
            "vgg19-dcbb9e9d.pth once on a machine with internet and copy it there, or set "
            "network.lambda_vgg: 0"
        )
    state = read_weights(path, "network.vgg_weights:", "a torchvision VGG19 checkpoint")
    features = vgg19_features()
    wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    try:
        features.load_state_dict({k: v for k, v in wanted.items() if k in features.state_dict()})
    except RuntimeError as exc:
        raise VsgridError(
            f"network.vgg_weights: {path} is not a torchvision VGG19 checkpoint: {exc}"
        ) from None
    return features.eval().requires_grad_(False)


class VGGLoss(nn.Module):
    """Perceptual loss: weighted L1 between VGG19 features of the 1-channel images, replicated to
    3 channels and mapped from [-1, 1] to ImageNet statistics."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.slices = nn.ModuleList(
            features[a:b] for a, b in zip((0, *VGG_SLICES[:-1]), VGG_SLICES)
        )
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _prepare(self, x):
        return ((x.float().repeat(1, 3, 1, 1) + 1) / 2 - self.mean) / self.std

    def forward(self, fake, real):
        x, y, loss = self._prepare(fake), self._prepare(real), 0.0
        for weight, stage in zip(VGG_WEIGHTS, self.slices):
            x, y = stage(x), stage(y)
            loss = loss + weight * F.l1_loss(x, y.detach())
        return loss


# --------------------------------------------------------------------------- description


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def padded_size(size: int, n_downsample: int) -> int:
    """The smallest multiple of 2 ** n_downsample that holds ``size`` pixels."""
    step = 2**n_downsample
    return -(-size // step) * step


def forward_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs (2 per multiply-add) of one forward pass, counted on the meta device (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = module.to("meta") if next(module.parameters()).device.type != "meta" else module
    with FlopCounterMode(display=False) as counter:
        meta(torch.empty(input_shape, device="meta"))
    return counter.get_total_flops()


def describe(net: NetworkConfig, image_size: int) -> dict:
    """Parameter counts of the generator and discriminators, and the generator's forward FLOPs
    per image at ``image_size`` padded to a multiple of 2 ** n_downsample."""
    with torch.device("meta"):
        generator, discriminator = GlobalGenerator(net), MultiscaleDiscriminator(net)
    size = padded_size(image_size, net.n_downsample)
    return {
        "generator_parameters": parameter_count(generator),
        "discriminator_parameters": parameter_count(discriminator),
        "image_size": size,
        "generator_flops": forward_flops(generator, (1, net.input_nc, size, size)),
    }


def description(net: NetworkConfig, image_size: int) -> str:
    """:func:`describe` as a person reads it."""
    info = describe(net, image_size)
    flops = info["generator_flops"]
    amount = f"{flops / 1e12:.3f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.2f} GFLOP"
    return (
        f"generator parameters:       {info['generator_parameters']:,}\n"
        f"discriminator parameters:   {info['discriminator_parameters']:,} ({net.num_D} scales)\n"
        f"generator forward FLOPs:    {amount} per {info['image_size']} x {info['image_size']} image ({flops:,})"
    )
