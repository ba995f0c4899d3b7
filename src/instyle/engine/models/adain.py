"""Arbitrary style transfer with adaptive instance normalization (Huang and Belongie, ICCV 2017).

Three parts, kept apart so that inference can run them separately:

- the encoder: the ImageNet VGG-19 instyle already fetches, frozen, up to relu4_1 (:func:`build_encoder`);
- AdaIN (:func:`adain`): the photo's relu4_1 features normalized per channel, then given the painting's
  per-channel mean and std. The painting enters as those statistics only (two (N, 512) tensors), so
  one exported network serves every painting, and the photo's own statistics may be passed in, so
  tiled inference normalizes every tile with the whole image's;
- the decoder (:class:`AdaINDecoder`): the encoder mirrored, nearest-neighbour upsampling where it
  pools, reflection-padded 3x3 convolutions, ReLU, no normalization: features back to RGB.

Unlike the paper's encoder (a VGG-19 normalized to unit mean activations, with reflection padding),
ours is the plain ImageNet VGG-19 with zero padding, the network ``instyle score`` measures with;
the loss (:mod:`instyle.engine.losses.adain`) scales each layer instead.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn
from torch.nn import functional as TF

from instyle.engine.models.blocks import check_image, kwargs_from_config
from instyle.engine.models.vgg import VGGFeatures
from instyle.functional import adaptive_instance_norm, calc_mean_std

__all__ = [
    "AdaINDecoder", "CONTENT_LAYER", "ENCODER_BLOCKS", "ENCODER_WEIGHTS", "STYLE_LAYERS", "adain", "build_encoder",
    "feature_stats",
]  # fmt: skip

ENCODER_WEIGHTS = "imagenet-vgg19"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"  # the encoder's output: AdaIN works here, the decoder starts here
# The widths of VGG-19's convolutions up to relu4_1, block by block (a pool between blocks).
ENCODER_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512,))
EPS = 1e-5


def build_encoder(layers=STYLE_LAYERS, weights: Any = ENCODER_WEIGHTS, download: bool = True) -> VGGFeatures:
    """The frozen encoder: VGG-19 up to the deepest of ``layers``, returning each of them."""
    return VGGFeatures(layers, weights=weights, download=download)


def feature_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std = sqrt(var + eps) of (N, C, H, W) features, each (N, C), computed
    in fp32: the statistics AdaIN takes from a painting (and, when tiling, from the whole photo)."""
    mean, std = calc_mean_std(features.float(), EPS)
    return mean, std


def adain(
    content: Tensor,
    style_mean: Tensor,
    style_std: Tensor,
    alpha: float = 1.0,
    content_stats: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """``alpha * AdaIN(content) + (1 - alpha) * content``: the photo's features ``content`` (N, C, H, W)
    normalized per channel, scaled by ``style_std`` and shifted by ``style_mean`` ((N, C) or (C,)).
    ``content_stats`` (mean, std), each (N, C), normalize instead of ``content``'s own statistics:
    those of the whole photo when ``content`` is one tile of it."""
    if content_stats is None:
        target = adaptive_instance_norm(content, style_mean, style_std, EPS)
    else:
        c = content.shape[1]
        mean, std = (s.reshape(-1, c, 1, 1) for s in content_stats)
        target = (content - mean) / std * style_std.reshape(-1, c, 1, 1) + style_mean.reshape(-1, c, 1, 1)
    if alpha == 1.0:
        return target
    return alpha * target + (1 - alpha) * content


class _ReflectConv(nn.Module):
    """Reflection pad 1, 3x3 convolution, then ReLU unless it is the last layer."""

    def __init__(self, c_in: int, c_out: int, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(TF.pad(x, (1, 1, 1, 1), mode="reflect"))
        return TF.relu(x, inplace=True) if self.relu else x


class AdaINDecoder(nn.Module):
    """relu4_1 features (N, 512, H/8, W/8) -> RGB (N, 3, H, W), about [0, 1] (not clamped: the loss
    sees what the network makes; inference clamps).

    The mirror of the encoder ``blocks`` (VGG-19's up to relu4_1 by default): each convolution
    reversed in reverse order, a nearest-neighbour x2 upsampling where the encoder pools. With the
    default blocks: 512->256, up, 256->256 x3, 256->128, up, 128->128, 128->64, up, 64->64, 64->3.
    """

    arch = "adain-decoder"

    def __init__(self, blocks=ENCODER_BLOCKS) -> None:
        super().__init__()
        blocks = tuple(tuple(int(w) for w in block) for block in blocks)
        if not blocks or any(not block or min(block) < 1 for block in blocks):
            raise ValueError(f"blocks must be non-empty groups of positive widths, got {blocks!r}")
        self.blocks = blocks
        self.in_channels = blocks[-1][-1]
        # the encoder's convolutions as (c_in, c_out), None for each pool between blocks
        encoder, c_in = [], 3
        for i, block in enumerate(blocks):
            if i:
                encoder.append(None)
            for width in block:
                encoder.append((c_in, width))
                c_in = width
        layers: list[nn.Module] = []
        for step in reversed(encoder):
            layers.append(nn.Upsample(scale_factor=2, mode="nearest") if step is None else _ReflectConv(step[1], step[0]))
        layers[-1].relu = False  # RGB out
        self.layers = nn.Sequential(*layers)
        self.upsampling = 2 ** (len(blocks) - 1)

    @property
    def config(self) -> dict:
        return {"arch": self.arch, "blocks": [list(block) for block in self.blocks]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AdaINDecoder:
        return cls(**kwargs_from_config(cls, config))

    def forward(self, features: Tensor) -> Tensor:
        check_image(features, self.in_channels, "features")
        return self.layers(features)
