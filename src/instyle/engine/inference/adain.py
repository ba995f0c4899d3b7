"""Any painting, no training: arbitrary style transfer with AdaIN at inference (issue #18).

``load_adain(decoder).stylize(photo, style=painting)``: the photo's relu4_1 features (VGG-19,
:func:`instyle.engine.models.adain.build_encoder`) take the painting's per-channel mean and std,
and the decoder trained by ``instyle train-adain`` turns them back into an image.

- A painting enters as its statistics (:meth:`AdaINModel.style`): scaled to a long side of
  ``style_size`` (512 px, the size ``instyle score`` judges at), encoded, mean and std per channel.
- Several paintings with weights: ``sum_k w_k AdaIN(c, s_k)`` in feature space. AdaIN is affine in
  the style's mean and std for a given photo, so that sum is AdaIN with the weighted mean and std:
  one AdaIN, whatever the number of paintings.
- ``strength`` (alpha): ``alpha * AdaIN(c, s) + (1 - alpha) * c`` in feature space, then decoded;
  0 is the decoder's reconstruction of the photo.
- A mask (the paper's sec. 7, spatial control): each distinct colour of the mask image is a region,
  ordered by its colour value (``R * 65536 + G * 256 + B``: for grey masks black first, white last);
  region k takes painting k, normalized by the photo's statistics over that region alone. The mask is
  resized to the photo by nearest neighbour; each relu4_1 cell (8 x 8 pixels) takes the region of
  its centre pixel.
- High resolution: the photo's statistics (per region) are those of the whole image, summed in
  float64 from tiles of the encoder (pass 1), then each tile runs encoder, AdaIN with them and
  decoder (pass 2). Windows start at multiples of 8 (the encoder's pooling grid) and reach the
  encoder's and decoder's receptive radius beyond their tile, so a tiled result equals the untiled
  one to round-off. The photo is padded to a multiple of 8 (edge pixels repeated) and cropped back.

The photo loop, the output kinds, colour preservation and the finishing in bands are
:mod:`instyle.engine.inference.stylize`'s; the windows and their stitching
:mod:`instyle.engine.inference.tiling`'s.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as TF

from instyle.engine.catalog import adain_decoder_path
from instyle.engine.device import DeviceConfig
from instyle.engine.image import ImageError, load_image, load_pixels, pixels_to_float, resize_long_side
from instyle.engine.inference.stylize import BandOutput, Given, as_batch, check_look, memory_budget, release_freed_memory
from instyle.engine.inference.tiling import ChanAccumulator, Span, auto_tile, blend_rows, tile_spans
from instyle.engine.modelfile import ModelFileError, load_generator
from instyle.engine.models.adain import (
    CONTENT_LAYER, EPS, AdaINDecoder, AdaINEncoder, FastAdaIN, adain, build_encoder, feature_stats,
)  # fmt: skip
from instyle.engine.models.vgg import VGGFeatures, vgg_layer_names

__all__ = [
    "AdaINModel", "MaskRegions", "StyleMix", "DEFAULT_STYLE_SIZE", "MIN_PAINTING_SIDE", "STRIDE", "check_options",
    "load_adain", "load_mask", "mask_regions", "style_image",
]  # fmt: skip

DEFAULT_STYLE_SIZE = 512
MIN_PAINTING_SIDE = 64  # a smaller painting has too few relu4_1 cells (8 x 8) for its statistics
STRIDE = 8  # the encoder's downsampling to relu4_1: windows start at its multiples
MIN_SIDE = 2 * STRIDE  # the decoder's reflection padding needs 2 cells a side: smaller photos are padded
# Peak bytes per window pixel, the decoder's full-resolution end (a 64-channel map, its padded copy,
# the convolution's output, oneDNN's scratch): 1059 in fp32, 444 in bf16 (the encoder 700 and 254),
# measured on 768 x 768 windows by ru_maxrss (2026-12-06), rounded up.
BYTES_PER_PIXEL = 1152
BYTES_PER_PIXEL_16 = 512
# Activation bytes one window may use on a CPU, whatever memory is free: with the process's own
# 0.6 GB, keeps a 4096 x 4096 photo under 2 GB peak (docs/adain.md, "Memory"). A GPU's windows
# take a quarter of its free memory, as the generators' do.
WINDOW_BUDGET = 1 << 30

# What a video passes as ``content_stats``: the photo's relu4_1 (mean, std), each (R, C) (R regions),
# to the (mean, std) it is normalized with (its frames' statistics carried over time)
ContentStats = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


# ---------------------------------------------------------------------------- paintings and masks


@dataclass(frozen=True)
class StyleMix:
    """The paintings' relu4_1 statistics, each (K, C) float32 on the CPU, their normalized weights
    (K,) and their names (the output files take ``name``)."""

    means: Tensor
    stds: Tensor
    weights: Tensor
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return "+".join(self.names)

    def per_region(self, regions: int | None) -> tuple[Tensor, Tensor]:
        """The style's (mean, std) per region, each (R, C): the weighted mix for one region
        (``regions`` None), painting r for region r under a mask."""
        if regions is None:
            w = self.weights[:, None]
            return (w * self.means).sum(0, keepdim=True), (w * self.stds).sum(0, keepdim=True)
        return self.means[:regions], self.stds[:regions]


def _mix_weights(weights: Sequence[float] | None, count: int) -> Tensor:
    """``weights`` checked and normalized to sum 1 (equal weights for None); ValueError naming
    ``style_weights``."""
    if weights is None:
        return torch.full((count,), 1.0 / count, dtype=torch.float64)
    values = [float(w) for w in weights]
    if len(values) != count:
        raise ValueError(f"style_weights: {_count(len(values), 'weight')} for {_count(count, 'painting')}; give one per painting")
    if not all(math.isfinite(w) and w >= 0 for w in values):
        raise ValueError(f"style_weights must be >= 0, got {' '.join(f'{w:g}' for w in values)}")
    total = sum(values)
    if total <= 0:
        raise ValueError("style_weights are all 0; at least one must be above 0")
    return torch.tensor(values, dtype=torch.float64) / total


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _painting(source: Any) -> tuple[Tensor, str]:
    """A painting as float (3, H, W) and its name: a path, PIL image, ndarray or (3, H, W) tensor in
    [0, 1], by the rules of every image (:func:`instyle.engine.image.load_image`), at least
    :data:`MIN_PAINTING_SIDE` on each side; ImageError names it."""
    if isinstance(source, Tensor):
        if source.dim() != 3 or source.shape[0] != 3:
            raise ValueError(f"a painting tensor must be (3, H, W), got shape {tuple(source.shape)}")
        image, name = pixels_to_float(source), "painting"
    else:
        image = load_image(source)
        name = Path(source).stem if isinstance(source, (str, os.PathLike)) else "painting"
    h, w = image.shape[-2:]
    if min(h, w) < MIN_PAINTING_SIDE:
        where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"
        raise ImageError(where, f"{w} x {h} pixels is too small for a painting: at least {MIN_PAINTING_SIDE} px a side")
    return image, name


def _check_style_size(style_size: Any) -> None:
    if isinstance(style_size, bool) or not isinstance(style_size, int) or style_size < MIN_PAINTING_SIDE:
        raise ValueError(f"style_size must be an integer >= {MIN_PAINTING_SIDE}, got {style_size!r}")


def style_image(source: Any, style_size: int = DEFAULT_STYLE_SIZE) -> tuple[Tensor, str]:
    """A painting as :meth:`AdaINModel.style` encodes it, float (3, H, W) scaled to a long side of
    ``style_size``, and its name: shared with the exported statistics graph's runner
    (:class:`instyle.engine.inference.onnx_adain.OnnxAdaIN`)."""
    _check_style_size(style_size)
    image, name = _painting(source)
    return _style_scaled(image, style_size), name


def _style_scaled(image: Tensor, style_size: int) -> Tensor:
    """``image`` scaled to a long side of ``style_size``, or, for a long narrow painting, to a short
    side of :data:`MIN_PAINTING_SIDE` if that one would be shorter."""
    h, w = image.shape[-2:]
    if min(h, w) * style_size < MIN_PAINTING_SIDE * max(h, w):
        long_side = round(max(h, w) * MIN_PAINTING_SIDE / min(h, w))
        return resize_long_side(image, long_side)
    return resize_long_side(image, style_size)


@dataclass(frozen=True)
class MaskRegions:
    """A mask image as regions: ``index`` (h, w), the region of each mask pixel (0..count-1, by
    colour value), and ``count``."""

    index: Tensor
    count: int

    def cells(self, h: int, w: int, hp: int, wp: int) -> Tensor:
        """The region of each relu4_1 cell of an (h, w) photo padded to (hp, wp): (hp / 8, wp / 8)
        int64. The mask is resized to (h, w) by nearest neighbour (pixel y reads mask row
        floor(y * mask_h / h)); a cell takes its centre pixel's region (the padding its edge's)."""
        mh, mw = self.index.shape
        ys = (torch.arange(hp // STRIDE) * STRIDE + STRIDE // 2).clamp(max=h - 1)
        xs = (torch.arange(wp // STRIDE) * STRIDE + STRIDE // 2).clamp(max=w - 1)
        return self.index[(ys * mh) // h][:, (xs * mw) // w].long()


def load_mask(source: Any, paintings: int) -> MaskRegions:
    """The regions of a mask image (a path, PIL image, ndarray, or (3, H, W) tensor) for
    ``paintings`` paintings: ImageError naming it when it has more regions than paintings."""
    pixels = source if isinstance(source, Tensor) else load_pixels(source)
    if pixels.dim() != 3 or pixels.shape[0] != 3:
        raise ValueError(f"a mask tensor must be (3, H, W), got shape {tuple(pixels.shape)}")
    if pixels.dtype != torch.uint8:  # 16-bit, float: the colour at 8 bits, as it is saved
        pixels = (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8)
    rgb = pixels.to(torch.int32)
    packed = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
    values, index = torch.unique(packed, sorted=True, return_inverse=True)
    count = len(values)
    if count > paintings:
        where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "mask"
        raise ImageError(
            where, f"the mask has {_count(count, 'region')} (distinct colours) but there {'is' if paintings == 1 else 'are'} "
            f"{_count(paintings, 'painting')}; "
            "give one painting per region, in the order of the regions' colours (darkest first)",
        )  # fmt: skip
    return MaskRegions(index.to(torch.uint8 if count <= 256 else torch.int64), count)


# ---------------------------------------------------------------------------- the networks


def _encoder_radius(encoder: VGGFeatures | AdaINEncoder) -> int:
    """Image pixels a relu4_1 cell reads beyond its own 8 x 8: each 3x3 convolution one pixel of
    its scale, each 2x2 pooling one more (its grid's rounding)."""
    if isinstance(encoder, AdaINEncoder):
        return encoder.radius
    names = vgg_layer_names(encoder.arch)
    depth = max(names.index(layer) for layer in encoder.layers) + 1
    radius, scale = 0, 1
    for name in names[:depth]:
        if name.startswith(("conv", "pool")):
            radius += scale
        if name.startswith("pool"):
            scale *= 2
    return radius


def _decoder_radius(decoder: AdaINDecoder) -> int:
    """Output pixels' reach into the decoder's input, in image pixels (as :func:`_encoder_radius`)."""
    radius, scale = 0, decoder.upsampling
    for layer in decoder.layers:
        radius += scale
        if isinstance(layer, torch.nn.Upsample):
            scale //= 2
    return radius


class _Networks:
    """The encoder and decoder on one device, in one precision and memory layout: a copy cast to
    a 16-bit dtype where the device configuration asks for one (as the generators' bf16 copy);
    statistics and AdaIN always compute in fp32."""

    def __init__(self, encoder: VGGFeatures, decoder: AdaINDecoder, config: DeviceConfig) -> None:
        self.config, self.dtype = config, config.autocast or torch.float32
        as_is = (config.device.type, self.dtype, config.memory_format) == ("cpu", torch.float32, torch.contiguous_format)
        self.encoder, self.decoder = (
            net if as_is else copy.deepcopy(net).to(config.device, self.dtype, memory_format=config.memory_format)
            for net in (encoder, decoder)
        )  # fmt: skip

    def encode(self, image: Tensor) -> Tensor:
        """relu4_1 features (1, 512, H / 8, W / 8), float32, of a float image (1, 3, H, W)."""
        x = image.to(self.config.device, torch.float32).contiguous(memory_format=self.config.memory_format)
        with torch.autocast(self.config.device.type, enabled=False):
            return self.encoder(x)[CONTENT_LAYER].float()

    def decode(self, features: Tensor) -> Tensor:
        x = features.to(self.dtype).contiguous(memory_format=self.config.memory_format)
        with torch.autocast(self.config.device.type, enabled=False):
            return self.decoder(x).float()


class _RegionStats:
    """The photo's relu4_1 mean and std per channel and region, summed in float64 (Chan et al.),
    from the whole map or from the cores of tiles."""

    def __init__(self, regions: int) -> None:
        self.parts = [ChanAccumulator() for _ in range(regions)]

    def add(self, features: Tensor, cells: Tensor | None) -> None:
        if cells is None:
            self.parts[0].add(features)
            return
        for r, part in enumerate(self.parts):
            chosen = features[0][:, cells == r]  # (C, n)
            part.add(chosen[None, :, :, None])

    def result(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(mean, std = sqrt(var + eps)), each (R, C) float32; a region without cells gets (0, 1)."""
        channels = next(part.mean.numel() for part in self.parts if part.count)  # a photo has cells
        means, stds = [], []
        for part in self.parts:
            mean, std = torch.zeros(channels, dtype=torch.float64), torch.ones(channels, dtype=torch.float64)
            if part.count:
                mean, var = part.result(torch.float64)
                std = (var + EPS).sqrt()
            means.append(mean.to(device)), stds.append(std.to(device))
        return torch.stack(means).float(), torch.stack(stds).float()


@dataclass
class _Photo:
    """One photo's run: its size and padded size, the region of each relu4_1 cell (None: one
    region), the style per region, the photo's statistics per region once known, alpha."""

    nets: _Networks
    h: int
    w: int
    cells: Tensor | None
    style: tuple[Tensor, Tensor]  # (R, C) each, on the device
    alpha: float
    content: tuple[Tensor, Tensor] | None = None
    carry: ContentStats | None = None  # the video's hook on the photo's statistics

    def take_stats(self, stats: _RegionStats, device: torch.device) -> None:
        """The photo's statistics, through ``carry`` when given."""
        found = stats.result(device)
        self.content = found if self.carry is None else self.carry(*found)

    @property
    def padded(self) -> tuple[int, int]:
        return _padded_side(self.h), _padded_side(self.w)

    def stylized_features(self, features: Tensor, cells: Tensor | None) -> Tensor:
        """AdaIN of ``features`` with the whole photo's statistics, region by region, then alpha."""
        (style_mean, style_std), (mean, std) = self.style, self.content
        if cells is None:
            return adain(features, style_mean[0], style_std[0], self.alpha, (mean[:1], std[:1]))
        out = features
        for r in range(style_mean.shape[0]):
            chosen = (cells == r).to(features.device)
            if bool(chosen.any()):
                target = adain(features, style_mean[r], style_std[r], self.alpha, (mean[r : r + 1], std[r : r + 1]))
                out = torch.where(chosen, target, out)
        return out

    def whole(self, content: Tensor) -> Tensor:
        """The untiled result (1, 3, h, w)."""
        hp, wp = self.padded
        features = self.nets.encode(_pad(pixels_to_float(content), hp, wp))
        stats = _RegionStats(self.style[0].shape[0])
        stats.add(features, self.cells)
        self.take_stats(stats, features.device)
        return self.nets.decode(self.stylized_features(features, self.cells))[..., : self.h, : self.w]


def _padded_side(size: int) -> int:
    return max(MIN_SIDE, -(-size // STRIDE) * STRIDE)


def _pad(image: Tensor, hp: int, wp: int) -> Tensor:
    """``image`` (1, 3, h, w) padded at its bottom and right to (hp, wp), edge pixels repeated."""
    h, w = image.shape[-2:]
    return image if (h, w) == (hp, wp) else TF.pad(image, (0, wp - w, 0, hp - h), mode="replicate")


def _read_padded(image: Tensor, span_y: Span, span_x: Span) -> Tensor:
    """A window of ``image`` (uint8 or float, (1, 3, h, w)) padded to a multiple of 8 as float32: a
    window reaching past the photo's end repeats its edge, as the whole padded photo does."""
    h, w = image.shape[-2:]
    part = pixels_to_float(image[:, :, span_y.window0 : min(span_y.window1, h), span_x.window0 : min(span_x.window1, w)])
    return _pad(part, span_y.window1 - span_y.window0, span_x.window1 - span_x.window0)


class _Tiles:
    """A photo in tiles of ``tile`` pixels: pass 1 sums the photo's statistics from the encoder's
    windows, pass 2 runs encoder, AdaIN and decoder on windows reaching both receptive radii."""

    def __init__(self, photo: _Photo, content: Tensor, tile: int, radii: tuple[int, int]) -> None:
        self.photo, self.content, self.tile = photo, content, tile
        encoder, decoder = radii
        self.stats_halo = _round_up(encoder)
        self.out_halo = _round_up(encoder + decoder + STRIDE)  # the decoder reads whole cells

    def spans(self, halo: int) -> tuple[list[Span], list[Span]]:
        hp, wp = self.photo.padded
        return tile_spans(hp, self.tile, 0, halo, STRIDE), tile_spans(wp, self.tile, 0, halo, STRIDE)

    def encode(self, span_y: Span, span_x: Span) -> Tensor:
        release_freed_memory()  # the last window's: else what glibc keeps grows window by window
        return self.photo.nets.encode(_read_padded(self.content, span_y, span_x))

    def gather_stats(self) -> None:
        """Pass 1: the photo's statistics per region from the cores of the encoder's windows."""
        photo, s = self.photo, STRIDE
        stats = _RegionStats(photo.style[0].shape[0])
        rows, cols = self.spans(self.stats_halo)
        for span_y in rows:
            for span_x in cols:
                features = self.encode(span_y, span_x)
                y0, x0 = (span_y.core0 - span_y.window0) // s, (span_x.core0 - span_x.window0) // s
                y1, x1 = y0 + (span_y.core1 - span_y.core0) // s, x0 + (span_x.core1 - span_x.core0) // s
                cells = None if photo.cells is None else photo.cells[span_y.core0 // s : span_y.core1 // s, span_x.core0 // s : span_x.core1 // s]
                stats.add(features[:, :, y0:y1, x0:x1], cells)
        photo.take_stats(stats, photo.style[0].device)

    def run(self, span_y: Span, span_x: Span) -> Tensor:
        """Pass 2: one window's output (1, 3, window rows, window columns)."""
        photo, s = self.photo, STRIDE
        features = self.encode(span_y, span_x)
        cells = None
        if photo.cells is not None:
            y0, x0 = span_y.window0 // s, span_x.window0 // s
            cells = photo.cells[y0 : y0 + features.shape[-2], x0 : x0 + features.shape[-1]]
        return photo.nets.decode(photo.stylized_features(features, cells))

    def write(self, output: BandOutput) -> None:
        """Both passes; the rows, cropped to the photo, go to ``output`` top to bottom."""
        self.gather_stats()
        h, w = self.photo.h, self.photo.w

        def write(y0: int, y1: int, rows: Tensor) -> None:
            if y0 < h:
                output.write(y0, min(y1, h), rows[:, :, : min(y1, h) - y0, :w])

        rows, cols = self.spans(self.out_halo)
        blend_rows(self.run, rows, cols, 0, *self.photo.padded, torch.float32, write)


def _round_up(pixels: int) -> int:
    return -(-pixels // STRIDE) * STRIDE


# ---------------------------------------------------------------------------- the model


class AdaINModel:
    """The encoder (VGG-19 to relu4_1) and a decoder from ``instyle train-adain``, ready to
    stylize with any painting; or the distilled pair (a narrow encoder and its decoder) from
    ``instyle train-adain --distill-from``."""

    name = "adain"

    def __init__(
        self, decoder: AdaINDecoder, metadata: dict, source: Path | None = None,
        encoder: VGGFeatures | AdaINEncoder | None = None,
    ) -> None:  # fmt: skip
        self.decoder, self.metadata, self.source = decoder.eval(), metadata, source
        self.encoder = encoder.eval() if encoder is not None else build_encoder((CONTENT_LAYER,))
        self.encoder.requires_grad_(False)
        self.fast = isinstance(self.encoder, AdaINEncoder)
        self.radii = (_encoder_radius(self.encoder), _decoder_radius(decoder))
        self._networks: dict = {}

    def __repr__(self) -> str:
        return f"AdaINModel({'fast' if self.fast else 'decoder'}={str(self.source)!r})"

    def networks(self, config: DeviceConfig) -> _Networks:
        key = (config.device, config.autocast, config.memory_format)
        if key not in self._networks:
            self._networks = {key: _Networks(self.encoder, self.decoder, config)}  # one placement kept
        return self._networks[key]

    @torch.no_grad()
    def style(
        self, paintings: Any, style_weights: Sequence[float] | None = None, *, style_size: int = DEFAULT_STYLE_SIZE,
        device: str = "auto", dtype: str = "auto",
    ) -> StyleMix:  # fmt: skip
        """The statistics of ``paintings`` (one, or a list: paths, PIL images, ndarrays, tensors),
        each scaled to a long side of ``style_size``, with their weights (default: equal)."""
        _check_style_size(style_size)
        sources = list(paintings) if isinstance(paintings, (list, tuple)) else [paintings]
        if not sources:
            raise ValueError("style: no painting given")
        weights = _mix_weights(style_weights, len(sources))
        nets = self.networks(DeviceConfig.resolve(device, dtype, "inference"))
        means, stds, names = [], [], []
        for source in sources:
            image, name = style_image(source, style_size)
            mean, std = feature_stats(nets.encode(image[None]))
            means.append(mean[0].cpu()), stds.append(std[0].cpu()), names.append(name)
        return StyleMix(torch.stack(means), torch.stack(stds), weights.float(), tuple(names))

    @torch.no_grad()
    def stylize(
        self, image, *, style, style_weights: Sequence[float] | None = None, mask=None, strength: float = 1.0,
        preserve: str = "none", style_size: int = DEFAULT_STYLE_SIZE, max_size: int | None = None,
        tile: int | None = None, device: str = "auto", dtype: str = "auto", runtime: str = "torch",
        content_stats: ContentStats | None = None,
    ):  # fmt: skip
        """Stylize ``image`` (a path, PIL image, ndarray or tensor in [0, 1]; returned as the same
        kind, see :class:`instyle.engine.inference.stylize.Given`) with ``style``: a painting, a list
        of them (mixed by ``style_weights``), or a :class:`StyleMix` from :meth:`style`. ``mask``: an
        image or :class:`MaskRegions` giving each region its painting. ``strength``: alpha, in
        feature space. ``tile``: a multiple of 8 (default: tiles when a window would not fit).
        ``content_stats``: called with each photo's relu4_1 (mean, std), each (regions, 512), in order,
        returns those to normalize it with (a video's frames' statistics smoothed over time); tiled or
        not, it sees the whole photo's."""
        check_options(strength, preserve, tile, runtime)
        config = DeviceConfig.resolve(device, dtype, "inference")
        if not isinstance(style, StyleMix):
            style = self.style(style, style_weights, style_size=style_size, device=device, dtype=dtype)
        elif style_weights is not None:
            raise ValueError("style_weights: the style's weights are set; give paintings to weigh them")
        regions = mask_regions(mask, style)
        given = Given.of(image)
        batch, unbatched = as_batch(image, max_size)
        nets = self.networks(config)
        look = (strength, preserve, tile, given.as_uint8, content_stats)
        outputs = [self._stylize_one(single, nets, style, regions, *look) for single in batch.split(1)]
        return given.result(outputs, unbatched)

    def _stylize_one(self, single: Tensor, nets: _Networks, style: StyleMix, regions: MaskRegions | None,
                     alpha: float, preserve: str, tile: int | None, as_uint8: bool, carry: ContentStats | None):  # fmt: skip
        """One photo (1, 3, H, W): untiled, or in tiles when asked or when a window would not fit."""
        device = nets.config.device
        h, w = single.shape[-2:]
        content = single.to(device) if single.dtype == torch.uint8 else single.to(device, torch.float32)
        output = BandOutput(content, 1.0, preserve, as_uint8=as_uint8, model_name=self.name, device=single.device)
        hp, wp = _padded_side(h), _padded_side(w)
        cells = None if regions is None else regions.cells(h, w, hp, wp).to(device)
        mean, std = style.per_region(None if regions is None else regions.count)
        photo = _Photo(nets, h, w, cells, (mean.to(device), std.to(device)), alpha, carry=carry)
        halo = _Tiles(photo, content, STRIDE, self.radii).out_halo
        if tile is None:
            budget = memory_budget(device) if device.type != "cpu" else min(memory_budget(device), WINDOW_BUDGET)
            per_pixel = BYTES_PER_PIXEL if nets.dtype == torch.float32 else BYTES_PER_PIXEL_16
            tile = auto_tile(hp, wp, budget, bytes_per_pixel=per_pixel, halo=halo, overlap=0, stride=STRIDE)
        if tile and tile < max(hp, wp):
            _Tiles(photo, content, tile, self.radii).write(output)
        else:
            output.write(0, h, photo.whole(content))
        return output.finish()


def check_options(strength: float, preserve: str, tile: int | None, runtime: str) -> None:
    """ValueError naming the first bad argument of :meth:`AdaINModel.stylize`."""
    check_look(strength, preserve)
    if runtime != "torch":
        raise ValueError(
            f"runtime {runtime!r}: a painting's style runs in torch here (`instyle export adain` writes it for onnxruntime)"
        )
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < STRIDE or tile % STRIDE):
        raise ValueError(f"tile must be a positive multiple of {STRIDE} (the encoder's stride) or None, got {tile!r}")


def mask_regions(mask: Any, style: StyleMix) -> MaskRegions | None:
    """The mask's regions for ``style``'s paintings; a mask gives each region one painting, so
    weights other than equal ones do not apply."""
    if mask is None:
        return None
    if not bool(torch.allclose(style.weights, torch.full_like(style.weights, 1 / len(style.weights)))):
        raise ValueError("style_weights: with a mask each region takes one painting; weights do not apply")
    regions = mask if isinstance(mask, MaskRegions) else load_mask(mask, len(style.names))
    if regions.count > len(style.names):
        raise ValueError(
            f"mask: {_count(regions.count, 'region')} but {_count(len(style.names), 'painting')}; give one painting per region"
        )
    return regions


def load_adain(decoder: str | os.PathLike | None = None, fast: bool = False) -> AdaINModel:
    """The AdaIN model with ``decoder``: a file from ``instyle train-adain`` (a decoder for the
    VGG-19 encoder, or a distilled encoder-decoder pair); default: the bundled decoder, or with
    ``fast`` the bundled distilled pair (ConfigError naming the argument when there is none)."""
    path = adain_decoder_path(decoder, fast)
    network, metadata = load_generator(path, archs=(AdaINDecoder.arch, FastAdaIN.arch))
    if isinstance(network, FastAdaIN):
        return AdaINModel(network.decoder, metadata, source=path, encoder=network.encoder)
    if network.in_channels != 512 or network.upsampling != STRIDE:
        raise ModelFileError(
            f"model file {path}: its decoder reads {network.in_channels} channels at 1/{network.upsampling} scale; "
            f"the encoder gives relu4_1, 512 channels at 1/{STRIDE}"
        )
    return AdaINModel(network, metadata, source=path)
