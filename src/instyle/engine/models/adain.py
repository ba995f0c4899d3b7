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

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from instyle.engine.models.blocks import check_image, kwargs_from_config
from instyle.engine.models.settings import Entry, shown
from instyle.engine.models.vgg import VGGFeatures
from instyle.engine.weights import CONVENTIONS
from instyle.functional import adaptive_instance_norm, calc_mean_std

__all__ = [
    "AdaINDecoder", "AdaINEncoder", "CONTENT_LAYER", "FAST_BLOCKS", "FastAdaIN", "ENCODER_BLOCKS", "ENCODER_WEIGHTS", "STYLE_LAYERS", "adain", "build_encoder",
    "feature_stats",
]  # fmt: skip

ENCODER_WEIGHTS = "imagenet-vgg19"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"  # the encoder's output: AdaIN works here, the decoder starts here
# The widths of VGG-19's convolutions up to relu4_1, block by block (a pool between blocks).
ENCODER_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512,))
EPS = 1e-5
# The distilled model's widths (``instyle train-adain --distill-from``): half of VGG-19's in every
# layer, a quarter of the multiply-adds in the encoder and in the decoder.
FAST_BLOCKS = ((32, 32), (64, 64), (128, 128, 128, 128), (256,))


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


def _decoder_steps(blocks: tuple[tuple[int, ...], ...]) -> list[tuple[int, int] | None]:
    """The decoder's layers for encoder ``blocks``: each encoder convolution (c_in, c_out) reversed,
    in reverse order, and None (a x2 upsampling) where the encoder pools between blocks."""
    encoder, c_in = [], 3
    for i, block in enumerate(blocks):
        if i:
            encoder.append(None)
        for width in block:
            encoder.append((c_in, width))
            c_in = width
    return [None if step is None else (step[1], step[0]) for step in reversed(encoder)]


class AdaINDecoder(nn.Module):
    """relu4_1 features (N, 512, H/8, W/8) -> RGB (N, 3, H, W), about [0, 1] (not clamped: the loss
    sees what the network makes; inference clamps).

    The mirror of the encoder ``blocks`` (VGG-19's up to relu4_1 by default): each convolution
    reversed in reverse order, a nearest-neighbour x2 upsampling where the encoder pools. With the
    default blocks: 512->256, up, 256->256 x3, 256->128, up, 128->128, 128->64, up, 64->64, 64->3.
    """

    arch = "adain-decoder"

    # Bounds for the constructor and for model files (a file must hold every tensor they imply).
    MAX_BLOCKS, MAX_CONVS, MAX_WIDTH = 5, 4, 1024

    def __init__(self, blocks=ENCODER_BLOCKS) -> None:
        super().__init__()
        self.blocks = self.check_blocks(blocks)
        self.in_channels = self.blocks[-1][-1]
        layers: list[nn.Module] = [
            nn.Upsample(scale_factor=2, mode="nearest") if step is None else _ReflectConv(*step)
            for step in _decoder_steps(self.blocks)
        ]
        layers[-1].relu = False  # RGB out
        self.layers = nn.Sequential(*layers)
        self.upsampling = 2 ** (len(self.blocks) - 1)

    @classmethod
    def check_blocks(cls, blocks: Any, prefix: str = "") -> tuple[tuple[int, ...], ...]:
        """``blocks`` as tuples of widths, or ValueError naming ``prefix``blocks."""
        def width(w: Any) -> bool:
            return isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= cls.MAX_WIDTH

        ok = isinstance(blocks, (list, tuple)) and 1 <= len(blocks) <= cls.MAX_BLOCKS and all(
            isinstance(b, (list, tuple)) and 1 <= len(b) <= cls.MAX_CONVS and all(map(width, b)) for b in blocks
        )
        if not ok:
            raise ValueError(
                f"{prefix}blocks must be 1 to {cls.MAX_BLOCKS} groups of 1 to {cls.MAX_CONVS} widths from 1 to "
                f"{cls.MAX_WIDTH}, got {shown(blocks)}"
            )
        return tuple(tuple(block) for block in blocks)

    @classmethod
    def stored_state(cls, config: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Entry]]:
        """The checked settings of a stored ``config`` and the state dict they imply, nothing built
        (as :func:`instyle.engine.models.generator_state` for the generators)."""
        blocks = cls.check_blocks(kwargs_from_config(cls, config).get("blocks", ENCODER_BLOCKS), prefix)
        state = {}
        for i, step in enumerate(_decoder_steps(blocks)):
            if step is not None:
                state[f"layers.{i}.conv.weight"] = Entry((step[1], step[0], 3, 3))
                state[f"layers.{i}.conv.bias"] = Entry((step[1],))
        return {"arch": cls.arch, "blocks": [list(b) for b in blocks]}, state

    @property
    def config(self) -> dict:
        return {"arch": self.arch, "blocks": [list(block) for block in self.blocks]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AdaINDecoder:
        return cls(**kwargs_from_config(cls, config))

    def forward(self, features: Tensor) -> Tensor:
        check_image(features, self.in_channels, "features")
        return self.layers(features)


class AdaINEncoder(nn.Module):
    """A trainable VGG-shaped encoder to "relu4_1" of the given ``blocks``: zero-padded 3x3
    convolutions with ReLU, a 2x2 max pooling between blocks, as VGG-19's, on RGB in [0, 1] read
    as the ImageNet VGG-19 reads it. Returns ``{"relu4_1": features}`` (the last layer, whatever
    its width), as :class:`VGGFeatures` does, so inference takes either."""

    layers = (CONTENT_LAYER,)

    def __init__(self, blocks=FAST_BLOCKS) -> None:
        super().__init__()
        self.blocks = AdaINDecoder.check_blocks(blocks, "encoder_")
        convs, c_in = [], 3
        for block in self.blocks:
            for width in block:
                convs.append(nn.Conv2d(c_in, width, 3, padding=1))
                c_in = width
        self.convs = nn.ModuleList(convs)
        self.out_channels = c_in
        # the ImageNet VGG-19's input convention (Caffe: BGR, 0-255, mean subtracted), kept so that
        # filters taken from the teacher's start where the teacher's are
        mean = torch.tensor(CONVENTIONS["caffe"]["mean"])
        self.register_buffer("input_mean", mean.view(1, 3, 1, 1) / 255, persistent=False)

    @property
    def radius(self) -> int:
        """Image pixels an output cell reads beyond its own (as VGG's: each convolution one pixel
        of its scale, each pooling one more)."""
        radius, scale = 0, 1
        for i, block in enumerate(self.blocks):
            if i:
                radius, scale = radius + scale, scale * 2
            radius += scale * len(block)
        return radius

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        check_image(images, 3, "images")
        x = ((images.float().flip(1) - self.input_mean.float()) * 255).to(self.convs[0].weight.dtype)
        convs = iter(self.convs)
        for i, block in enumerate(self.blocks):
            if i:
                x = TF.max_pool2d(x, 2, 2)
            for _ in block:
                x = TF.relu(next(convs)(x))
        return {CONTENT_LAYER: x}


class FastAdaIN(nn.Module):
    """The distilled AdaIN model: a narrow encoder (:class:`AdaINEncoder`) and the decoder that
    mirrors it, stored together in one model file (``arch`` "adain-fast")."""

    arch = "adain-fast"

    def __init__(self, blocks=FAST_BLOCKS) -> None:
        super().__init__()
        self.blocks = AdaINDecoder.check_blocks(blocks, "")
        self.encoder = AdaINEncoder(self.blocks)
        self.decoder = AdaINDecoder(self.blocks)

    @classmethod
    def stored_state(cls, config: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Entry]]:
        blocks = AdaINDecoder.check_blocks(kwargs_from_config(cls, config).get("blocks", FAST_BLOCKS), prefix)
        _, state = AdaINDecoder.stored_state({"blocks": blocks}, prefix)
        entries = {f"decoder.{k}": v for k, v in state.items()}
        c_in, i = 3, 0
        for block in blocks:
            for width in block:
                entries[f"encoder.convs.{i}.weight"] = Entry((width, c_in, 3, 3))
                entries[f"encoder.convs.{i}.bias"] = Entry((width,))
                c_in, i = width, i + 1
        return {"arch": cls.arch, "blocks": [list(b) for b in blocks]}, entries

    @property
    def config(self) -> dict:
        return {"arch": self.arch, "blocks": [list(block) for block in self.blocks]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FastAdaIN:
        return cls(**kwargs_from_config(cls, config))

    def forward(self, content: Tensor, style: Tensor, alpha: float = 1.0) -> Tensor:
        """Photos ``content`` stylized with paintings ``style`` (both (N, 3, H, W) in [0, 1])."""
        n = len(content)
        features = self.encoder(torch.cat([content, style]))[CONTENT_LAYER]
        target = adain(features[:n].float(), *feature_stats(features[n:]), alpha=alpha)
        return self.decoder(target.to(features.dtype))
