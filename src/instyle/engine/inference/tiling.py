"""High-resolution inference in tiles, with instance-norm statistics of the whole image.

Normalizing each tile with its own statistics changes the result (a tile of sky and a tile
of forest have different means), so every instance-norm layer is frozen to the statistics
of its whole input before any output is made. A tile's window is its core plus a halo at
least the receptive radius of what runs on it, so whatever it computes over its core is
exactly what the untiled forward computes there (to round-off: convolution algorithms may
pick different blockings for different sizes). Two ways to get the statistics:

- Generic (any tileable model): for each instance-norm layer L_k in forward order, stream
  the image in windows through the model, with L_1..L_{k-1} frozen, stop at L_k and add the
  core's share of L_k's input to a float64 Chan accumulator (count, mean, M2 per channel);
  the cores partition the image (and, at its right and bottom end, the few rows a model
  computes beyond it, which the untiled statistics include too). Cost: one partial forward
  per norm layer, about (number of norm layers / 2) full forwards; memory: one window.
- Staged (a model whose ``tiling_stages()`` describes its forward, as
  :class:`instyle.engine.models.TransformerNet`'s does, when its low-resolution maps fit
  ``cache_bytes``): the encoder's norms as above, with halos only as wide as the layers
  each pass runs; then the encoder's last pre-norm map, at 1/4 resolution, is assembled
  whole from tiles, and the residual trunk runs on whole maps layer by layer (each
  convolution in row strips, each norm's statistics from the whole map it reads), so no
  work is repeated; the decoder's norms and the output come from windows of the trunk's
  output. About 4 x less work than the generic path; memory: three trunk-sized maps.

The output is then made tile by tile: each window's output over its core (plus
``overlap / 2`` on each side) is blended with its neighbours' by a cosine ramp over the
``overlap`` band (a no-op for exact tiles, a seam guard otherwise), and handed on in whole
rows, top to bottom, as soon as no later tile touches them (:func:`stylize_tiled_rows`), so
that callers can post-process and store rows without an image-sized float buffer.

A model is tileable when it implements :class:`instyle.engine.models.blocks.Tileable`:
``tile_stride`` (its total downsampling: windows start at multiples of it so that every
strided grid lines up with the untiled one), ``receptive_radius`` (input pixels an output
pixel depends on, norms frozen), every input-statistics norm inside an
:class:`instyle.engine.models.blocks.NormAct` (which accepts frozen statistics), and for the
staged path ``tiling_stages()``. This module reads a model only through that protocol.

Images are float (N, C, H, W) in [0, 1] or uint8 (N, C, H, W) in 0..255; a uint8 image is
converted one window at a time, exactly as :func:`instyle.engine.image.load_image` converts pixels.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from instyle.engine.models.blocks import ConvNormAct, NormAct, TilingStages, receptive_radius

__all__ = [
    "stylize_tiled", "stylize_tiled_rows", "whole_image_in_stats", "auto_tile", "tile_halo",
    "BYTES_PER_PIXEL", "CACHE_BYTES", "Span", "tile_spans", "blend_rows", "ChanAccumulator",
]  # fmt: skip

# Peak bytes per window pixel of an fp32 TransformerNet (width 1) forward without autograd:
# an estimate from its widest full-resolution stage (a 64-channel upsampled map, its padded
# copy and the 32-channel conv and norm outputs, 4 bytes each), rounded up.
BYTES_PER_PIXEL = 1024
# Default limit on the whole low-resolution maps the staged path keeps (three at a time).
CACHE_BYTES = 1 << 30

# write(y0, y1, rows): rows (1, C, y1 - y0, W) of the output, handed on top to bottom.
RowWriter = Callable[[int, int, Tensor], None]
# run(span_y, span_x): the model's output (or the forward up to a hook) for one window.
_Runner = Callable[["Span", "Span"], Tensor]


class _StopForward(Exception):
    """Raised by a capture hook once the layer of interest has seen its input."""


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in image coordinates: the model sees [window0, window1),
    the tile's output is kept on [out0, out1), and its statistics on [core0, core1)."""

    window0: int
    window1: int
    out0: int
    out1: int
    core0: int
    core1: int


def tile_spans(size: int, tile: int, overlap: int, halo: int, stride: int) -> list[Span]:
    """The tiles along one axis of ``size`` pixels: cores of ``tile`` partition it, outputs reach
    ``overlap / 2`` beyond them, windows ``halo`` beyond that and start at multiples of ``stride``."""
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
        spans.append(Span(window0, window1, out0, out1, core0, core1))
    return spans


def _feather(span: Span, size: int, overlap: int) -> Tensor:
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


def _blend_weights(spans: list[Span], size: int, overlap: int) -> list[Tensor]:
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
            "receptive_radius attributes (instyle.engine.models.blocks.Tileable)"
        ) from None


def _check_args(image: Tensor, tile: int, overlap: int, halo: int | None, stride: int) -> None:
    if (
        not isinstance(image, Tensor)
        or image.dim() != 4
        or not (image.is_floating_point() or image.dtype == torch.uint8)
    ):
        shape = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a float or uint8 (N, C, H, W) tensor, got {shape}")
    if not isinstance(tile, int) or tile < stride or tile % stride:
        raise ValueError(f"tile must be a positive multiple of the model's tile_stride ({stride}), got {tile!r}")
    if not isinstance(overlap, int) or overlap < 0 or overlap > tile:
        raise ValueError(f"overlap must be an integer in [0, tile={tile}], got {overlap!r}")
    if halo is not None and (not isinstance(halo, int) or halo < 0):
        raise ValueError(f"halo must be a non-negative integer or None, got {halo!r}")


def _float_dtype(image: Tensor) -> torch.dtype:
    """The dtype windows are computed in: the image's float dtype, float32 for uint8."""
    return image.dtype if image.is_floating_point() else torch.float32


def _out_dtype(image: Tensor) -> torch.dtype:
    return torch.float64 if image.dtype == torch.float64 else torch.float32


def _read(image: Tensor, span_y: Span, span_x: Span) -> Tensor:
    """The window of ``image`` (1, C, H, W) as float; uint8 as load_image maps it (x / 255)."""
    part = image[:, :, span_y.window0 : span_y.window1, span_x.window0 : span_x.window1]
    return part.float().div_(255) if part.dtype == torch.uint8 else part


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
        model(torch.zeros(1, image.shape[1], probe, probe, dtype=_float_dtype(image), device=image.device))
    finally:
        for handle in handles:
            handle.remove()
    if len(order) != len(needs):
        raise TypeError("some input-statistics norm layers did not run in a forward pass")
    for _, scale in order:
        if stride % scale:
            raise TypeError(f"a norm layer's scale {scale} does not divide the model's tile_stride {stride}")
    return order


class ChanAccumulator:
    """Per-channel count, mean and M2 in float64, combined across parts (Chan et al.)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, x: Tensor) -> None:  # x: (1, C, h, w)
        n = x.shape[-2] * x.shape[-1]
        if n == 0:
            return
        # The part's own statistics by torch's Welford reduction, in float32 at least (on the
        # CPU it accumulates float32 in float64); NCHW so that each plane is contiguous.
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        var, mean = torch.var_mean(x.to(dtype, memory_format=torch.contiguous_format), dim=(2, 3), correction=0)
        mean, m2 = mean[0].double(), var[0].double() * n
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    def add_rows(self, x: Tensor, rows: int) -> None:
        """Add a whole map (1, C, H, W) ``rows`` rows at a time (bounded temporaries)."""
        for r0 in range(0, x.shape[-2], rows):
            self.add(x[:, :, r0 : r0 + rows])

    def result(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(mean, biased var), each (C,), as instance norm computes them."""
        assert self.mean is not None and self.m2 is not None
        return self.mean.to(dtype), (self.m2 / self.count).to(dtype)


def _stream(
    run: _Runner, rows: list[Span], cols: list[Span], layer: NormAct, scale: int, h: int, w: int,
    consume: Callable[[Tensor, Span, Span], None],
) -> None:  # fmt: skip
    """Run every window up to ``layer`` and hand ``consume`` the core's share of its input
    (a feature map ``scale`` times coarser than the image), then stop the forward there."""
    current: list[Span] = [rows[0], cols[0]]

    def capture(module: nn.Module, args: tuple) -> None:
        span_y, span_x = current
        x = args[0]  # (1, C, window rows / scale, window cols / scale), rounded up
        # The core's rows in this feature map; the last tile keeps everything to the end.
        y0 = (span_y.core0 - span_y.window0) // scale
        y1 = (span_y.core1 - span_y.window0) // scale if span_y.core1 < h else x.shape[-2]
        x0 = (span_x.core0 - span_x.window0) // scale
        x1 = (span_x.core1 - span_x.window0) // scale if span_x.core1 < w else x.shape[-1]
        consume(x[:, :, y0:y1, x0:x1], span_y, span_x)
        raise _StopForward

    handle = layer.register_forward_pre_hook(capture)
    try:
        for span_y in rows:
            for span_x in cols:
                current[:] = [span_y, span_x]
                try:
                    run(span_y, span_x)
                except _StopForward:
                    continue
                raise RuntimeError("a norm layer did not run while computing its statistics")
    finally:
        handle.remove()


def _stream_stats(
    run: _Runner, rows: list[Span], cols: list[Span], layer: NormAct, scale: int, h: int, w: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    acc = ChanAccumulator()
    _stream(run, rows, cols, layer, scale, h, w, lambda x, *_: acc.add(x))
    return acc.result(dtype)


def _freeze_layer(layer: NormAct, stats: tuple[Tensor, Tensor], device: torch.device) -> None:
    layer.frozen_stats = (stats[0].to(device), stats[1].to(device))


def whole_image_in_stats(
    model: nn.Module, image: Tensor, tile: int = 512, *, halo: int | None = None, cache_bytes: int = CACHE_BYTES
) -> list[tuple[Tensor, Tensor]]:
    """Each input-statistics norm layer's (mean, biased var) over the whole of ``image``
    (1, 3, H, W), in the model's forward order; each (C,), float32 (float64 for a float64
    image). Computed in tiles of ``tile`` pixels plus ``halo`` (default: exact halos; see
    :func:`stylize_tiled` for ``cache_bytes``). The model is left unchanged."""
    stride, _ = _tiling_attrs(model)
    _check_args(image, tile, 0, halo, stride)
    if image.shape[0] != 1:
        raise ValueError(f"whole_image_in_stats takes one image (1, C, H, W), got batch {image.shape[0]}")
    with _inference(model) as layers:
        order = _stats_layers(model, layers, image, stride)
        staged = _Staged.plan(model, image, tile, halo, cache_bytes)
        if staged is not None:
            staged.decoder_input()
        else:
            _whole_image_stats(model, order, image, tile, tile_halo(model) if halo is None else halo, stride)
        return [layer.frozen_stats for layer, _ in order]


def _whole_image_stats(
    model: nn.Module, order: list[tuple[NormAct, int]], image: Tensor, tile: int, halo: int, stride: int
) -> None:
    """The generic path: freeze each layer of ``order`` to its whole-image statistics."""
    h, w = image.shape[-2:]
    rows, cols = tile_spans(h, tile, 0, halo, stride), tile_spans(w, tile, 0, halo, stride)

    def run(span_y: Span, span_x: Span) -> Tensor:
        return model(_read(image, span_y, span_x))

    for layer, scale in order:
        _freeze_layer(layer, _stream_stats(run, rows, cols, layer, scale, h, w, _out_dtype(image)), image.device)


def stylize_tiled(
    model: nn.Module,
    image: Tensor,
    tile: int = 512,
    overlap: int = 64,
    *,
    halo: int | None = None,
    stats: list[tuple[Tensor, Tensor]] | None = None,
    cache_bytes: int = CACHE_BYTES,
) -> Tensor:
    """``model(image)`` computed in tiles, with instance-norm statistics of the whole image.

    ``image`` (N, 3, H, W), float in [0, 1] or uint8; images of a batch are processed one at
    a time. Cores of ``tile`` x ``tile`` pixels partition the image; each tile's output
    covers its core plus ``overlap / 2`` on each side, blended with its neighbours' by a
    cosine ramp. ``halo`` None: every window gets the halo that makes its tile exact (for
    the generic path :func:`tile_halo`, so one window is at most ``tile + overlap + 2 *
    halo`` (plus up to ``tile_stride``) on a side); an explicit ``halo`` takes the generic
    path with that halo. ``stats`` (from :func:`whole_image_in_stats`, for a one-image
    batch) skips computing them. ``cache_bytes`` bounds the whole 1/4-resolution maps the
    staged path keeps (three at a time); when they do not fit, the generic
    path recomputes instead. Returns float32 (float64 for a float64 image) on the image's
    device; the model is left unchanged.
    """
    stride, _ = _tiling_attrs(model)
    _check_args(image, tile, overlap, halo, stride)
    if stats is not None and image.shape[0] != 1:
        raise ValueError("stats describe one image; pass a batch of one")
    n, _, h, w = image.shape
    out: list[Tensor] = []

    def write(y0: int, y1: int, rows: Tensor) -> None:
        if len(out) <= index:
            out.append(torch.empty(1, rows.shape[1], h, w, dtype=_out_dtype(image), device=image.device))
        out[index][:, :, y0:y1] = rows

    for index, single in enumerate(image.split(1)):
        stylize_tiled_rows(
            model, single, write, tile, overlap, halo=halo, stats=stats, cache_bytes=cache_bytes
        )  # fmt: skip
    return out[0] if n == 1 else torch.cat(out)


def stylize_tiled_rows(
    model: nn.Module,
    image: Tensor,
    write: RowWriter,
    tile: int = 512,
    overlap: int = 64,
    *,
    halo: int | None = None,
    stats: list[tuple[Tensor, Tensor]] | None = None,
    cache_bytes: int = CACHE_BYTES,
) -> None:
    """:func:`stylize_tiled` for one image (1, 3, H, W), handing the output on in rows.

    Calls ``write(y0, y1, rows)`` with ``rows`` (1, C, y1 - y0, W), float32 (float64 for a
    float64 image), for consecutive bands that cover [0, H) top to bottom; ``rows`` is only
    valid during the call. Memory beyond the model's windows: one band of output
    (``tile + overlap`` rows), plus the staged path's maps.
    """
    stride, _ = _tiling_attrs(model)
    _check_args(image, tile, overlap, halo, stride)
    if image.shape[0] != 1:
        raise ValueError(f"stylize_tiled_rows takes one image (1, C, H, W), got batch {image.shape[0]}")
    h, w = image.shape[-2:]
    with _inference(model) as layers:
        if stats is not None:
            _freeze(model, layers, image, stats, stride)
        staged = _Staged.plan(model, image, tile, halo, cache_bytes)
        if staged is not None:
            run, out_halo = staged.decoder(staged.decoder_input()), staged.decoder_halo
        else:
            out_halo = tile_halo(model) if halo is None else halo
            if stats is None:
                _whole_image_stats(model, _stats_layers(model, layers, image, stride), image, tile, out_halo, stride)
            run = _generic_runner(model, image)
        rows, cols = tile_spans(h, tile, overlap, out_halo, stride), tile_spans(w, tile, overlap, out_halo, stride)
        blend_rows(run, rows, cols, overlap, h, w, _out_dtype(image), write)


def _generic_runner(model: nn.Module, image: Tensor) -> _Runner:
    """Windows of the output from the whole model on windows of the image (norms frozen)."""

    def run(span_y: Span, span_x: Span) -> Tensor:
        window = _read(image, span_y, span_x)
        result = model(window)
        if result.shape[-2:] != window.shape[-2:]:
            raise TypeError(f"tiled inference needs a size-preserving model; got {tuple(result.shape)}"
                            f" for a {tuple(window.shape)} window")  # fmt: skip
        return result

    return run


def blend_rows(
    run: _Runner, rows: list[Span], cols: list[Span], overlap: int, h: int, w: int, dtype: torch.dtype,
    write: RowWriter,
) -> None:  # fmt: skip
    """Blend every window's output into bands of rows; hand each band on once complete."""
    row_weights, col_weights = _blend_weights(rows, h, overlap), _blend_weights(cols, w, overlap)
    carry: Tensor | None = None  # the previous band's rows that this band shares
    for i, (span_y, wy) in enumerate(zip(rows, row_weights)):
        band: Tensor | None = None  # (1, C, out1 - out0, W)
        for span_x, wx in zip(cols, col_weights):
            result = run(span_y, span_x)  # origin at (window0, window0)
            part = result[
                :, :,
                span_y.out0 - span_y.window0 : span_y.out1 - span_y.window0,
                span_x.out0 - span_x.window0 : span_x.out1 - span_x.window0,
            ].to(dtype)  # fmt: skip
            if band is None:
                band = torch.zeros(1, part.shape[1], span_y.out1 - span_y.out0, w, dtype=dtype, device=part.device)
            weight = (wy[:, None] * wx[None, :]).to(device=part.device, dtype=dtype)
            band[:, :, :, span_x.out0 : span_x.out1] += part * weight
        assert band is not None
        if carry is not None:
            band[:, :, : carry.shape[-2]] += carry
        end = rows[i + 1].out0 if i + 1 < len(rows) else span_y.out1
        write(span_y.out0, end, band[:, :, : end - span_y.out0])
        carry = band[:, :, end - span_y.out0 :].clone()


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
        _freeze_layer(layer, (mean, var), image.device)


def _needs_stats(layer: NormAct) -> bool:
    return layer.uses_input_stats and layer.frozen_stats is None


def _staged_stages(model: nn.Module, image: Tensor, halo: int | None, cache_bytes: int) -> TilingStages | None:
    """The model's :class:`TilingStages` where the staged path applies, else None: no stages
    (see :class:`instyle.engine.models.blocks.Tileable`), an explicit ``halo``, an image too
    small, stages this path cannot run, or maps over ``cache_bytes``."""
    stages_of = getattr(model, "tiling_stages", None)
    if halo is not None or stages_of is None:
        return None
    stages = stages_of()
    stride = int(model.tile_stride)
    if stages is None or min(image.shape[-2:]) < 4 * stride or len(stages.encoder) == 0:
        return None
    scale = math.prod(layer.conv.stride[0] for layer in stages.encoder)
    trunk_convs = [conv for block in stages.residual for conv in block]
    if scale != stride or any(conv.upsample != 1 or conv.conv.stride[0] != 1 for conv in trunk_convs):
        return None
    if 3 * _map_bytes(stages, image, stride) > cache_bytes:
        return None
    return stages


def _map_bytes(stages: TilingStages, image: Tensor, stride: int) -> int:
    """Bytes of one whole trunk map (1/``stride`` resolution) in the dtype the layers return."""
    channels = stages.encoder[-1].conv.out_channels
    device_type = image.device.type
    if torch.is_autocast_enabled(device_type):
        item = torch.tensor([], dtype=torch.get_autocast_dtype(device_type)).element_size()
    else:
        item = torch.tensor([], dtype=_float_dtype(image)).element_size()
    return channels * -(-image.shape[-2] // stride) * -(-image.shape[-1] // stride) * item


@dataclass(frozen=True)
class _Grid:
    """The image the staged path cuts into windows of ``tile`` pixels starting at multiples of
    ``stride``, and where the statistics it freezes go (the image's device, its stats dtype)."""

    image: Tensor
    tile: int
    stride: int

    @property
    def h(self) -> int:
        return self.image.shape[-2]

    @property
    def w(self) -> int:
        return self.image.shape[-1]

    def spans(self, halo: int) -> tuple[list[Span], list[Span]]:
        """Row and column windows with cores of a tile, no overlap, ``halo`` on each side."""
        return tile_spans(self.h, self.tile, 0, halo, self.stride), tile_spans(self.w, self.tile, 0, halo, self.stride)

    def freeze_streamed(self, run: _Runner, layer: NormAct, scale: int, halo: int) -> None:
        """Freeze ``layer`` to its whole-image statistics, streamed from windows of ``run``."""
        rows, cols = self.spans(halo)
        stats = _stream_stats(run, rows, cols, layer, scale, self.h, self.w, _out_dtype(self.image))
        _freeze_layer(layer, stats, self.image.device)

    def freeze_map(self, layer: NormAct, x: Tensor) -> None:
        """Freeze ``layer`` to the statistics of the whole map ``x``, read in row strips."""
        acc = ChanAccumulator()
        acc.add_rows(x, self.map_rows(x.shape[-1]))
        _freeze_layer(layer, acc.result(_out_dtype(self.image)), self.image.device)

    def map_rows(self, width: int) -> int:
        """Rows per strip of a whole map ``width`` pixels wide: about a tile's pixels."""
        return max(8, (self.tile // self.stride) ** 2 // width)


def _encode(grid: _Grid, encoder: tuple[ConvNormAct, ...]) -> Tensor:
    """The encoder's output over the whole image at 1/stride resolution: its norms frozen one
    at a time, each from windows with just the halo its layers need; the last one's input is
    assembled whole and normalized as a map."""

    def run(span_y: Span, span_x: Span) -> Tensor:
        x = _read(grid.image, span_y, span_x)
        for layer in encoder:
            x = layer(x)
        return x

    scale = 1
    for k, layer in enumerate(encoder[:-1]):
        scale *= layer.conv.stride[0]
        if _needs_stats(layer.norm_act):
            grid.freeze_streamed(run, layer.norm_act, scale, receptive_radius(list(encoder[: k + 1])))
    last = encoder[-1]
    scale *= last.conv.stride[0]
    whole = _assemble(grid, run, last.norm_act, scale, receptive_radius(list(encoder)))
    _norm_map(grid, last.norm_act, whole)
    return whole


def _assemble(grid: _Grid, run: _Runner, layer: NormAct, scale: int, halo: int) -> Tensor:
    """``layer``'s whole input map (1/``scale`` of the image), pasted from the windows' cores."""
    whole: list[Tensor] = []

    def store(x: Tensor, span_y: Span, span_x: Span) -> None:
        if not whole:
            size = (-(-grid.h // scale), -(-grid.w // scale))  # stride-2 convs round up
            whole.append(_empty_like_map(x, size))
        y0, x0 = span_y.core0 // scale, span_x.core0 // scale
        whole[0][:, :, y0 : y0 + x.shape[-2], x0 : x0 + x.shape[-1]] = x

    rows, cols = grid.spans(halo)
    _stream(run, rows, cols, layer, scale, grid.h, grid.w, store)
    return whole[0]


def _trunk(grid: _Grid, blocks: tuple[tuple[ConvNormAct, ConvNormAct], ...], x: Tensor) -> Tensor:
    """The residual blocks on the whole map ``x``, layer by layer, each norm frozen to the
    statistics of the whole map it reads (so no work is repeated across windows)."""
    for conv1, conv2 in blocks:
        a = _conv_map(grid, conv1, x)
        _norm_map(grid, conv1.norm_act, a)
        y = _conv_map(grid, conv2, a)
        del a
        _norm_map(grid, conv2.norm_act, y, residual=x)
        x = y
    return x


def _conv_map(grid: _Grid, layer: ConvNormAct, x: Tensor) -> Tensor:
    """``layer``'s pad and stride-1 conv over the whole map ``x``, in row strips."""
    p, height = layer.padding, x.shape[-2]
    out: Tensor | None = None
    step = max(grid.map_rows(x.shape[-1]), p + 1)
    for r0 in range(0, height, step):
        r1 = min(r0 + step, height)
        a0, a1 = max(r0 - p, 0), min(r1 + p, height)
        # Real neighbouring rows where the map has them, the map's own reflection at its ends.
        strip = TF.pad(x[:, :, a0:a1], (p, p, p - (r0 - a0), p - (a1 - r1)), mode=layer.padding_mode)
        y = layer.conv(strip)
        if out is None:
            out = _empty_like_map(y, (height, x.shape[-1]))
        out[:, :, r0:r1] = y
    assert out is not None
    return out


def _norm_map(grid: _Grid, layer: NormAct, x: Tensor, residual: Tensor | None = None) -> None:
    """Freeze ``layer`` to the statistics of the whole map ``x`` (unless frozen already) and
    apply it in place, in row strips."""
    rows = grid.map_rows(x.shape[-1])
    if _needs_stats(layer):
        grid.freeze_map(layer, x)
    for r0 in range(0, x.shape[-2], rows):
        part = slice(r0, r0 + rows)
        x[:, :, part] = layer(x[:, :, part], None if residual is None else residual[:, :, part])


def _decoder_runner(stride: int, decoder: tuple[ConvNormAct, ...], trunk: Tensor) -> _Runner:
    """Image windows through the decoder, read from the whole trunk output."""

    def run(span_y: Span, span_x: Span) -> Tensor:
        # Windows start at multiples of the stride; the trunk window covers the image window.
        s = stride
        part = trunk[:, :, span_y.window0 // s : -(-span_y.window1 // s), span_x.window0 // s : -(-span_x.window1 // s)]
        for layer in decoder:
            part = layer(part)
        return part

    return run


def _freeze_decoder(grid: _Grid, decoder: tuple[ConvNormAct, ...], trunk: Tensor) -> None:
    """Freeze the decoder's norms in order, each streamed from windows of the trunk's output."""
    run, scale = _decoder_runner(grid.stride, decoder, trunk), grid.stride
    for k, layer in enumerate(decoder):
        scale //= layer.upsample
        if _needs_stats(layer.norm_act):
            grid.freeze_streamed(run, layer.norm_act, scale, receptive_radius(list(decoder[: k + 1]), grid.stride))


def _output_runner(grid: _Grid, stages: TilingStages, trunk: Tensor) -> _Runner:
    """Windows of the final output, read from the trunk's output (norms all frozen)."""
    up, head, output, h, w = _decoder_runner(grid.stride, stages.decoder, trunk), stages.head, stages.output, grid.h, grid.w

    def run(span_y: Span, span_x: Span) -> Tensor:
        y = up(span_y, span_x)
        # The untiled forward crops to the image before the head (so that its reflection
        # pad mirrors the image's own border); only the last windows reach past it.
        y = y[..., : h - span_y.window0, : w - span_x.window0]
        return output(head(y))

    return run


class _Staged:
    """The staged path for a generator with :class:`TilingStages`: encoder from image windows,
    the residual trunk on whole 1/``stride`` maps, decoder from windows of the trunk's output."""

    def __init__(self, stages: TilingStages, image: Tensor, tile: int, stride: int) -> None:
        self.stages, self.grid = stages, _Grid(image, tile, stride)
        self.decoder_halo = receptive_radius([*stages.decoder, stages.head], stride)

    @classmethod
    def plan(cls, model: nn.Module, image: Tensor, tile: int, halo: int | None, cache_bytes: int) -> _Staged | None:
        """A staged run of ``model`` on ``image``, or None where only the generic path applies."""
        stages = _staged_stages(model, image, halo, cache_bytes)
        return None if stages is None else cls(stages, image, tile, int(model.tile_stride))

    def decoder_input(self) -> Tensor:
        """Freeze the encoder's and the trunk's norms, then the decoder's; return the trunk's
        output (1, C, ceil(H / stride), ceil(W / stride))."""
        x = _encode(self.grid, self.stages.encoder)
        x = _trunk(self.grid, self.stages.residual, x)
        _freeze_decoder(self.grid, self.stages.decoder, x)
        return x

    def decoder(self, trunk: Tensor) -> _Runner:
        """Windows of the final output from the trunk's output (every norm frozen)."""
        return _output_runner(self.grid, self.stages, trunk)


def _empty_like_map(x: Tensor, size: tuple[int, int]) -> Tensor:
    """A (1, C, *size) map of ``x``'s channels, dtype, device and memory format
    (channels_last where oneDNN's convolutions returned it)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(1, x.shape[1], *size, dtype=x.dtype, device=x.device, memory_format=memory_format)


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
