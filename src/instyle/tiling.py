"""High-resolution inference in tiles, with instance-norm statistics of the whole image.

Normalizing each tile with its own statistics changes the result (a tile of sky and a tile
of forest have different means), so tiling runs in two phases:

1. ``whole_image_in_stats``: for each instance-norm layer L_k in forward order, stream the
   image in tiles through the model, with layers L_1..L_{k-1} frozen to the whole-image
   statistics already found, stop at L_k and add the tile's share of L_k's input to a
   float64 Chan accumulator (count, mean, M2 per channel). A tile's window is its core plus
   a halo at least the model's receptive radius, so L_k's input over the core is exactly
   what the untiled forward computes there; the cores partition the image (and, at its
   right and bottom end, the few rows a model computes beyond it, which the untiled
   statistics include too). Cost: one partial forward per norm layer, about
   (number of norm layers / 2) full forwards; memory: one window.
2. ``stylize_tiled``: with every layer frozen, each window's output over its core (plus
   ``overlap / 2`` on each side) is exact; neighbouring outputs are blended with a cosine
   ramp over the ``overlap`` band, a no-op for exact tiles and a seam guard otherwise.

A model is tileable when it exposes ``tile_stride`` (its total downsampling: windows start
at multiples of it so that every strided grid lines up with the untiled one),
``receptive_radius`` (input pixels an output pixel depends on, norms frozen), and keeps
every input-statistics norm inside an :class:`instyle.models.blocks.NormAct`, which
accepts frozen statistics. :class:`instyle.models.TransformerNet` is.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from .models.blocks import NormAct

__all__ = ["stylize_tiled", "whole_image_in_stats", "auto_tile", "tile_halo", "BYTES_PER_PIXEL"]

# Peak bytes per window pixel of an fp32 TransformerNet (width 1) forward without autograd:
# an estimate from its widest full-resolution stage (a 64-channel upsampled map, its padded
# copy and the 32-channel conv and norm outputs, 4 bytes each), rounded up.
BYTES_PER_PIXEL = 1024


class _StopForward(Exception):
    """Raised by the statistics hook once the layer of interest has seen its input."""


@dataclass(frozen=True)
class _Span:
    """One tile along one axis, in image coordinates: the model sees [window0, window1),
    the tile's output is kept on [out0, out1), and its statistics on [core0, core1)."""

    window0: int
    window1: int
    out0: int
    out1: int
    core0: int
    core1: int


def _spans(size: int, tile: int, overlap: int, halo: int, stride: int) -> list[_Span]:
    spans = []
    min_window = 4 * stride  # keep windows large enough for the model's own padding
    for core0 in range(0, size, tile):
        core1 = min(core0 + tile, size)
        out0, out1 = max(core0 - overlap // 2, 0), min(core1 + (overlap + 1) // 2, size)
        window0 = max((out0 - halo) // stride * stride, 0)
        window1 = min(out1 + halo, size)
        if window1 - window0 < min_window:
            window0 = max((window1 - min_window) // stride * stride, 0)
            window1 = max(window1, min(window0 + min_window, size))
        spans.append(_Span(window0, window1, out0, out1, core0, core1))
    return spans


def _feather(span: _Span, size: int, overlap: int) -> Tensor:
    """Weights over [out0, out1): a cosine ramp across each band shared with a neighbour."""
    n = span.out1 - span.out0
    weight = torch.ones(n, dtype=torch.float64)
    if overlap <= 0:
        return weight
    positions = torch.arange(n, dtype=torch.float64) + 0.5
    if span.out0 > 0:  # band [out0, out0 + overlap) shared with the previous tile
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (positions / overlap).clamp(max=1.0))
        weight = weight * ramp
    if span.out1 < size:  # band [out1 - overlap, out1) shared with the next tile
        ramp = 0.5 - 0.5 * torch.cos(math.pi * ((n - positions) / overlap).clamp(max=1.0))
        weight = weight * ramp
    return weight


def _blend_weights(spans: list[_Span], size: int, overlap: int) -> list[Tensor]:
    """Feathers normalized so that they sum to exactly one at every position."""
    raw = [_feather(s, size, overlap) for s in spans]
    total = torch.zeros(size, dtype=torch.float64)
    for s, w in zip(spans, raw):
        total[s.out0 : s.out1] += w
    return [w / total[s.out0 : s.out1] for s, w in zip(spans, raw)]


def tile_halo(model: nn.Module) -> int:
    """The default halo: the model's receptive radius rounded up to its tile stride."""
    stride, radius = _tiling_attrs(model)
    return -(-radius // stride) * stride


def _tiling_attrs(model: nn.Module) -> tuple[int, int]:
    try:
        return int(model.tile_stride), int(model.receptive_radius)
    except AttributeError:
        raise TypeError(
            f"{type(model).__name__} does not support tiled inference: it needs tile_stride and "
            "receptive_radius attributes (TransformerNet has them)"
        ) from None


def _check_args(image: Tensor, tile: int, overlap: int, halo: int | None, stride: int) -> None:
    if not isinstance(image, Tensor) or image.dim() != 4 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a float (N, C, H, W) tensor, got {shape}")
    if not isinstance(tile, int) or tile < stride or tile % stride:
        raise ValueError(f"tile must be a positive multiple of the model's tile_stride ({stride}), got {tile!r}")
    if not isinstance(overlap, int) or overlap < 0 or overlap > tile:
        raise ValueError(f"overlap must be an integer in [0, tile={tile}], got {overlap!r}")
    if halo is not None and (not isinstance(halo, int) or halo < 0):
        raise ValueError(f"halo must be a non-negative integer or None, got {halo!r}")


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[list[NormAct]]:
    """Eval mode and no autograd; yields the NormAct layers and clears any frozen
    statistics on exit, restoring the training flags."""
    modes = {m: m.training for m in model.modules()}
    layers = [m for m in model.modules() if isinstance(m, NormAct)]
    stray = [
        name for name, m in model.named_modules()
        if isinstance(m, nn.InstanceNorm2d) and not any(m is layer.norm for layer in layers)
    ]  # fmt: skip
    if stray:
        raise TypeError(f"tiled inference needs every InstanceNorm2d inside a NormAct; not: {', '.join(stray)}")
    # Group and layer norm also normalize over the whole feature map, with statistics
    # that NormAct cannot freeze; tiles would silently get their own.
    whole_map = [name for name, m in model.named_modules() if isinstance(m, (nn.GroupNorm, nn.LayerNorm))]
    if whole_map:
        raise TypeError(f"tiled inference does not support group or layer norm: {', '.join(whole_map)}")
    model.eval()
    try:
        with torch.no_grad():
            yield layers
    finally:
        for layer in layers:
            layer.frozen_stats = None
        for m, training in modes.items():
            m.training = training


def _stats_layers(model: nn.Module, layers: list[NormAct], image: Tensor, stride: int) -> list[tuple[NormAct, int]]:
    """The layers that normalize with input statistics, in forward order, each with its
    scale (input pixels per feature pixel), from one forward of a small probe."""
    needs = [layer for layer in layers if layer.uses_input_stats]
    order: list[tuple[NormAct, int]] = []
    probe = 8 * stride

    def record(module: nn.Module, args: tuple) -> None:
        if any(module is seen for seen, _ in order):
            raise TypeError("tiled inference needs each NormAct to run once per forward")
        height = args[0].shape[-2]
        if probe % height:
            raise TypeError(f"a norm layer sees {height} rows for a {probe}-row probe; its scale must divide {probe}")
        order.append((module, probe // height))

    handles = [layer.register_forward_pre_hook(record) for layer in needs]
    try:
        model(torch.zeros(1, image.shape[1], probe, probe, dtype=image.dtype, device=image.device))
    finally:
        for handle in handles:
            handle.remove()
    if len(order) != len(needs):
        raise TypeError("some input-statistics norm layers did not run in a forward pass")
    for _, scale in order:
        if stride % scale:
            raise TypeError(f"a norm layer's scale {scale} does not divide the model's tile_stride {stride}")
    return order


class _ChanAccumulator:
    """Per-channel count, mean and M2 in float64, combined across tiles (Chan et al.)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, x: Tensor) -> None:  # x: (1, C, h, w)
        xf = x[0].flatten(1).double()  # (C, h * w)
        n = xf.shape[1]
        if n == 0:
            return
        mean = xf.mean(dim=1)
        m2 = ((xf - mean[:, None]) ** 2).sum(dim=1)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    def result(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(mean, biased var), each (C,), as instance norm computes them."""
        assert self.mean is not None and self.m2 is not None
        return self.mean.to(dtype), (self.m2 / self.count).to(dtype)


def whole_image_in_stats(
    model: nn.Module, image: Tensor, tile: int = 512, *, halo: int | None = None
) -> list[tuple[Tensor, Tensor]]:
    """Each input-statistics norm layer's (mean, biased var) over the whole of ``image``
    (1, 3, H, W), in the model's forward order; each (C,), float32 (float64 for a float64
    image). Computed in tiles of ``tile`` pixels plus ``halo`` (default :func:`tile_halo`).
    The model is left unchanged."""
    stride, _ = _tiling_attrs(model)
    _check_args(image, tile, 0, halo, stride)
    if image.shape[0] != 1:
        raise ValueError(f"whole_image_in_stats takes one image (1, C, H, W), got batch {image.shape[0]}")
    with _inference(model) as layers:
        return _whole_image_stats(model, layers, image, tile, tile_halo(model) if halo is None else halo, stride)


def _whole_image_stats(
    model: nn.Module, layers: list[NormAct], image: Tensor, tile: int, halo: int, stride: int
) -> list[tuple[Tensor, Tensor]]:
    h, w = image.shape[-2:]
    rows, cols = _spans(h, tile, 0, halo, stride), _spans(w, tile, 0, halo, stride)
    stats = []
    for layer, scale in _stats_layers(model, layers, image, stride):
        acc = _ChanAccumulator()
        span_y = span_x = rows[0]

        def capture(module: nn.Module, args: tuple) -> None:
            x = args[0]  # (1, C, window rows / scale, window cols / scale), rounded up
            # The core's rows in this feature map; the last tile keeps everything to the end.
            y0 = (span_y.core0 - span_y.window0) // scale
            y1 = (span_y.core1 - span_y.window0) // scale if span_y.core1 < h else x.shape[-2]
            x0 = (span_x.core0 - span_x.window0) // scale
            x1 = (span_x.core1 - span_x.window0) // scale if span_x.core1 < w else x.shape[-1]
            acc.add(x[:, :, y0:y1, x0:x1])
            raise _StopForward

        handle = layer.register_forward_pre_hook(capture)
        try:
            for span_y in rows:
                for span_x in cols:
                    window = image[:, :, span_y.window0 : span_y.window1, span_x.window0 : span_x.window1]
                    try:
                        model(window)
                    except _StopForward:
                        continue
                    raise RuntimeError("a norm layer did not run while computing its statistics")
        finally:
            handle.remove()
        mean, var = acc.result(torch.float64 if image.dtype == torch.float64 else torch.float32)
        layer.frozen_stats = (mean.to(image.device), var.to(image.device))
        stats.append(layer.frozen_stats)
    return stats


def stylize_tiled(
    model: nn.Module,
    image: Tensor,
    tile: int = 512,
    overlap: int = 64,
    *,
    halo: int | None = None,
    stats: list[tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """``model(image)`` computed in tiles, with instance-norm statistics of the whole image.

    ``image`` (N, 3, H, W); images of a batch are processed one at a time. Cores of
    ``tile`` x ``tile`` pixels partition the image; each tile's output covers its core plus
    ``overlap / 2`` on each side, blended with its neighbours' by a cosine ramp, and the
    model sees that region plus ``halo`` pixels (default :func:`tile_halo`, which makes each
    tile exact), so one window is at most ``tile + overlap + 2 * halo`` (plus up to
    ``tile_stride``) on a side. ``stats`` (from :func:`whole_image_in_stats`, for a
    one-image batch) skips the first phase. Returns float32 (float64 for a float64 image)
    on the image's device; the model is left unchanged.
    """
    stride, _ = _tiling_attrs(model)
    _check_args(image, tile, overlap, halo, stride)
    halo = tile_halo(model) if halo is None else halo
    if stats is not None and image.shape[0] != 1:
        raise ValueError("stats describe one image; pass a batch of one")
    h, w = image.shape[-2:]
    rows, cols = _spans(h, tile, overlap, halo, stride), _spans(w, tile, overlap, halo, stride)
    row_weights, col_weights = _blend_weights(rows, h, overlap), _blend_weights(cols, w, overlap)
    out_dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    outputs = []
    with _inference(model) as layers:
        for single in image.split(1):
            if stats is None:
                _whole_image_stats(model, layers, single, tile, halo, stride)
            else:
                _freeze(model, layers, single, stats, stride)
            out: Tensor | None = None
            for span_y, wy in zip(rows, row_weights):
                for span_x, wx in zip(cols, col_weights):
                    window = single[:, :, span_y.window0 : span_y.window1, span_x.window0 : span_x.window1]
                    result = model(window)
                    if result.shape[-2:] != window.shape[-2:]:
                        raise TypeError(f"tiled inference needs a size-preserving model; got {tuple(result.shape)}"
                                        f" for a {tuple(window.shape)} window")  # fmt: skip
                    if out is None:
                        out = torch.zeros(1, result.shape[1], h, w, dtype=out_dtype, device=image.device)
                    part = result[
                        :, :,
                        span_y.out0 - span_y.window0 : span_y.out1 - span_y.window0,
                        span_x.out0 - span_x.window0 : span_x.out1 - span_x.window0,
                    ].to(out_dtype)  # fmt: skip
                    weight = (wy[:, None] * wx[None, :]).to(device=image.device, dtype=out_dtype)
                    out[:, :, span_y.out0 : span_y.out1, span_x.out0 : span_x.out1] += part * weight
            outputs.append(out)
    return torch.cat(outputs)


def _freeze(
    model: nn.Module, layers: list[NormAct], image: Tensor, stats: list[tuple[Tensor, Tensor]], stride: int
) -> None:
    order = _stats_layers(model, layers, image, stride)
    if len(stats) != len(order):
        raise ValueError(f"stats has {len(stats)} entries; this model has {len(order)} instance-norm layers")
    for (layer, _), (mean, var) in zip(order, stats):
        channels = layer.norm.num_features
        if mean.shape != (channels,) or var.shape != (channels,):
            raise ValueError(
                f"stats entry shapes {tuple(mean.shape)}, {tuple(var.shape)} do not match {channels} channels"
            )
        layer.frozen_stats = (mean.to(image.device), var.to(image.device))


def auto_tile(
    h: int,
    w: int,
    budget_bytes: int,
    *,
    bytes_per_pixel: int = BYTES_PER_PIXEL,
    halo: int = 64,
    overlap: int = 64,
    stride: int = 4,
) -> int | None:
    """A tile size for :func:`stylize_tiled` whose windows fit ``budget_bytes`` of
    activations, or None when the whole (h, w) image fits and needs no tiling.

    ``bytes_per_pixel`` is the model's peak activation memory per input pixel (default:
    fp32 TransformerNet of width 1); ``halo``, ``overlap`` and ``stride`` as passed to
    :func:`stylize_tiled` (``halo``: :func:`tile_halo` of the model). Raises ValueError when
    even the smallest tile does not fit.
    """
    for name, value in (("h", h), ("w", w), ("budget_bytes", budget_bytes), ("bytes_per_pixel", bytes_per_pixel)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if h * w * bytes_per_pixel <= budget_bytes:
        return None
    side = math.isqrt(budget_bytes // bytes_per_pixel)  # largest square window
    tile = (side - overlap - 2 * halo - stride) // stride * stride  # the window may round out by < stride
    if tile < stride or tile < overlap:
        smallest = (max(stride, overlap) + overlap + 2 * halo + stride) ** 2 * bytes_per_pixel
        raise ValueError(
            f"budget_bytes={budget_bytes} allows a {side}-pixel window, too small for overlap={overlap} "
            f"and halo={halo}; the smallest tile needs {smallest} bytes"
        )
    return tile
