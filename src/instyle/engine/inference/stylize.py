"""Stylizing images with a trained generator: ``load_model(name_or_path).stylize(image)``.

``stylize`` returns what it was given: a PIL image for a PIL image, a tensor for a tensor
((3, H, W) or (N, 3, H, W) in [0, 1]). Large images go through whole-image instance-norm
statistics and overlapping tiles (:mod:`instyle.engine.inference.tiling`).

A multi-style model (``load_model(path).styles`` lists its styles) stylizes in one of them,
``stylize(x, style="wave")``, or in a mix, ``style={"wave": 0.6, "udnie": 0.4}``: the weights,
normalized to sum 1, interpolate each instance norm's scale and shift. The style is baked into a
single-style network once (:meth:`TransformerNet.single_style`, a few kept), so tiling, the bf16 copy
and CUDA graphs run it as they run any model.
"""

from __future__ import annotations

import copy
import ctypes
import json
import math
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from instyle.engine.color import PRESERVE_COLOR, WHOLE_IMAGE_METHODS, BandTransfer, preserve_color
from instyle.engine.image import ImageError, load_pixels, pixels_to_float, resize_long_side, save_image
from instyle.engine.catalog import resolve_model
from instyle.engine.cuda_graphs import ForwardGraphs
from instyle.engine.modelfile import load_generator
from instyle.engine.inference.tiling import BYTES_PER_PIXEL, auto_tile, stylize_tiled_rows
from instyle.engine.device import DeviceConfig

RUNTIMES = ("torch", "onnxruntime")


class StyleModel:
    """A generator ready for inference, with its metadata. A multi-style generator's ``style`` is the
    one used when ``stylize`` names none (a bundled ``FILE:STYLE``), else None."""

    BAKED = 4  # single-style networks of a multi-style model's styles and mixes kept

    def __init__(
        self, generator: torch.nn.Module, metadata: dict, name: str, source: Path | None = None, style: str | None = None
    ) -> None:
        self.generator = generator
        self.metadata = metadata
        self.name = name
        self.source = source  # the model file, which keys the ONNX cache
        self._onnx = None
        # CUDA graphs of the untiled forward (fp32 and the bf16 copy; not under fp16 autocast, whose
        # weight cache a capture cannot hold); False turns them off
        self.cuda_graphs = True
        self._graphs = ForwardGraphs()
        self._baked: OrderedDict = OrderedDict()  # style weights -> single-style network
        self.style = style
        if style is not None:
            self.style_weights(style)  # a name the file lacks is an error now, not at the first photo

    @property
    def styles(self) -> tuple[str, ...]:
        """The names of a multi-style model's styles, in its order; () for a single-style model."""
        return tuple(entry["name"] for entry in self.metadata.get("styles") or ())

    def style_weights(self, style, what: str = "style") -> tuple[float, ...] | None:
        """The weight of each of :attr:`styles` for ``style`` (a name, or a mapping of names to weights
        >= 0, normalized to sum 1); None for a single-style model given none. ValueError naming ``what``."""
        return mix_weights(style, self.styles, what, self.name)

    def _generator(self, weights: tuple[float, ...] | None) -> torch.nn.Module:
        """The network for ``weights``: the model's own, or a multi-style model's baked single-style one."""
        if weights is None:
            return self.generator
        if weights not in self._baked:
            self._baked[weights] = self.generator.single_style(torch.tensor(weights, dtype=torch.float32)).eval()
            while len(self._baked) > self.BAKED:
                self._baked.popitem(last=False)
        self._baked.move_to_end(weights)
        return self._baked[weights]

    def single_style(self, style=None, what: str = "style") -> StyleModel:
        """This model for one style or mix (``style``, default :attr:`style`) as a single-style model:
        a multi-style model's baked network, named as outputs name it (``wave``, ``wave60+udnie40``),
        for code that runs the generator itself (video's carried statistics); a single-style model
        given no style is itself. ValueError naming ``what`` for a style the model lacks."""
        weights = self.style_weights(self.style if style is None else style, what)
        if weights is None:
            return self
        metadata = {k: v for k, v in self.metadata.items() if k != "styles"}
        return StyleModel(self._generator(weights), metadata, mix_label(weights, self.styles))  # no source: no ONNX cache

    def onnx_model(self):
        """The generator exported to ``$INSTYLE_HOME/onnx/<model sha256>.onnx`` (on first use)
        and loaded into onnxruntime; see :mod:`instyle.engine.inference.onnx_runtime`."""
        if self._onnx is None:
            from instyle.engine.inference.onnx_runtime import load_cached_onnx

            # a multi-style model is exported whole, its style weights an input of the graph
            names = {"styles": json.dumps(self.styles), "style_name": self.source.stem if self.source else self.name}
            self._onnx = load_cached_onnx(self.generator, self.source, names if self.styles else {"style_name": self.name})
        return self._onnx

    def __repr__(self) -> str:
        return f"StyleModel({self.name!r}, arch={self.generator.config.get('arch')!r})"

    @staticmethod
    def _placed(generator: torch.nn.Module, device: torch.device, memory_format: torch.memory_format) -> torch.nn.Module:
        """``generator`` on ``device`` in ``memory_format``, moved only when it is elsewhere: ``Module.to``
        walks every parameter (as long as a whole small stylization: docs/performance.md, "Placing the generator"),
        so its first spatial convolution weight stands for all of them."""
        probe = next((p for p in generator.parameters() if p.dim() == 4 and min(p.shape[-2:]) > 1), None)
        placed = probe is not None and (
            probe.device.type == device.type
            and device.index in (None, probe.device.index)
            and probe.is_contiguous(memory_format=memory_format)
        )
        if not placed:
            generator.to(device, memory_format=memory_format)
        return generator

    def _run_bf16(self, image: Tensor, generator: torch.nn.Module, plan: _Plan) -> Tensor:
        """The whole image through a bf16 copy of the generator, outside autocast: autocast re-casts
        weights and activations at every layer, which costs about as much as the convolutions on a
        CPU, with the same error against fp32 (docs/performance.md, "Placing the generator"). Instance norm
        still accumulates its statistics in fp32."""
        device, memory_format = plan.config.device, plan.config.memory_format
        # keyed by the style, not the network's id: a baked network let go may leave its id to another
        key = (id(self.generator), plan.weights, device, memory_format)
        if getattr(self, "_bf16_key", None) != key:
            self._bf16_generator = copy.deepcopy(generator).to(device, torch.bfloat16, memory_format=memory_format)
            self._bf16_key = key
        generator = self._bf16_generator

        def forward(x: Tensor) -> Tensor:
            with torch.autocast(device.type, enabled=False):
                return generator(x.to(torch.bfloat16).contiguous(memory_format=memory_format)).float()

        return self._graphs(generator, forward, image) if self.cuda_graphs else forward(image)

    @torch.no_grad()
    def stylize(
        self,
        image,
        *,
        style: str | Mapping[str, float] | None = None,
        strength: float = 1.0,
        preserve: str = "none",
        max_size: int | None = None,
        tile: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        runtime: str = "torch",
    ):
        """Stylize ``image`` (PIL image, path, ndarray, or tensor in [0, 1]) and return the same kind
        (see :class:`Given`: a PIL image for a path; a uint8 tensor is read as 0..255 pixels, float32
        comes back, on the tensor's device).

        Large images (``tile``, or automatically when an untiled forward would not fit a
        quarter of free memory) go through :func:`instyle.engine.inference.tiling.stylize_tiled_rows`; the
        output is finished (colour, strength, clamp, quantization) band by band, so a PIL
        image never exists as float32 (except for ``preserve`` "covariance" and "histogram",
        which need the whole stylized image's colours first).

        ``style``: for a multi-style model (:attr:`styles`), a style's name or a mix ``{name: weight}``
        (default: the style it was loaded as, ``FILE:STYLE``); a single-style model takes none.

        ``runtime="onnxruntime"`` runs the exported generator in fp32 on the CPU; images that
        need tiles still go through torch (tiling freezes statistics inside the network).
        """
        _check_options(self.generator, strength, preserve, tile, runtime)
        weights = self.style_weights(self.style if style is None else style)
        config, onnx = self._resolve_runtime(runtime, device, dtype)
        given = Given.of(image)
        batch, unbatched = as_batch(image, max_size)
        plan = _Plan(config, onnx, strength, preserve, tile, given.as_uint8, memory_budget(config.device), weights)
        generator = self._placed(self._generator(weights), config.device, config.memory_format)
        outputs = [self._stylize_one(single, generator, plan) for single in batch.split(1)]
        return given.result(outputs, unbatched)

    def _resolve_runtime(self, runtime: str, device: str, dtype: str) -> tuple[DeviceConfig, object | None]:
        """The device configuration, and the onnxruntime session for ``runtime="onnxruntime"``
        (exported on first use), which computes in fp32 on the CPU only."""
        if runtime != "onnxruntime":
            return DeviceConfig.resolve(device, dtype, "inference"), None
        if device not in ("auto", "cpu"):
            raise ValueError(f"runtime onnxruntime runs on the CPU; got device {device!r}")
        if dtype not in ("auto", "fp32", "float32"):
            raise ValueError(f"runtime onnxruntime computes in fp32; got dtype {dtype!r}")
        return DeviceConfig.resolve("cpu", "fp32", "inference"), self.onnx_model()

    def _stylize_one(self, single: Tensor, generator: torch.nn.Module, plan: _Plan):
        """One image (1, 3, H, W): tiled when asked or when it does not fit, finished in bands."""
        config = plan.config
        h, w = single.shape[-2:]
        content = single.to(config.device) if single.dtype == torch.uint8 else single.to(config.device, torch.float32)
        output = BandOutput(
            content, plan.strength, plan.preserve, as_uint8=plan.as_uint8, model_name=self.name, device=single.device
        )
        bytes_per_pixel = _bytes_per_pixel(generator, config.autocast)
        chosen = plan.tile if plan.tile is not None else auto_tile(h, w, plan.budget, bytes_per_pixel=bytes_per_pixel)
        with config.autocast_context():
            if chosen and chosen < max(h, w):
                overlap = min(64, chosen)  # small tiles blend over their whole width
                stylize_tiled_rows(generator, content, output.write, chosen, overlap, cache_bytes=plan.budget)
            else:
                output.write(0, h, self._forward_whole(pixels_to_float(content), generator, plan))
        return output.finish()

    def _forward_whole(self, whole: Tensor, generator: torch.nn.Module, plan: _Plan) -> Tensor:
        """The untiled forward: onnxruntime, the bf16 copy, a CUDA-graph replay or eager torch."""
        config = plan.config
        if plan.onnx is not None:
            return plan.onnx.run(whole, plan.weights)
        if config.autocast == torch.bfloat16:
            return self._run_bf16(whole, generator, plan)
        x = whole.contiguous(memory_format=config.memory_format)
        if config.autocast is None and self.cuda_graphs:
            return self._graphs(generator, generator, x)
        return generator(x)


@dataclass(frozen=True)
class Given:
    """The kind of image a caller passed, so that the result comes back as that kind: a PIL image
    for a PIL image, a path or bytes; an ndarray (H, W, 3) of the array's dtype for an ndarray
    (uint8 and uint16 scaled to their range, float in [0, 1]; other dtypes come back uint8); a
    float32 tensor of the tensor's shape for a tensor."""

    kind: str  # "pil", "ndarray" or "tensor"
    dtype: np.dtype | None = None  # an ndarray's

    @classmethod
    def of(cls, image) -> Given:
        if isinstance(image, Tensor):
            return cls("tensor")
        if isinstance(image, np.ndarray):
            return cls("ndarray", image.dtype)
        return cls("pil")

    @property
    def as_uint8(self) -> bool:
        """Whether the result is finished straight into 8-bit pixels (never a float image)."""
        return self.kind == "pil" or (self.kind == "ndarray" and self.dtype not in _ARRAY_SCALES)

    def result(self, outputs: list, unbatched: bool):
        """The result from each image's output (uint8 (H, W, 3) pixels, or float32 (1, 3, H, W))."""
        if self.kind == "pil":
            return Image.fromarray(outputs[0], mode="RGB")
        if self.kind == "ndarray":
            if isinstance(outputs[0], np.ndarray):
                return outputs[0]
            pixels = outputs[0][0].permute(1, 2, 0).cpu().numpy()
            scale = _ARRAY_SCALES[self.dtype]
            return pixels.astype(self.dtype) if scale is None else np.round(pixels * scale).astype(self.dtype)
        stylized = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return stylized[0] if unbatched else stylized


# ndarray dtypes that come back as themselves (None: float in [0, 1]); the rest as uint8
_ARRAY_SCALES = {np.dtype(np.uint16): 65535, **{np.dtype(t): None for t in (np.float16, np.float32, np.float64)}}


@dataclass(frozen=True)
class _Plan:
    """One ``stylize`` call's options, resolved once for every image of its batch."""

    config: DeviceConfig
    onnx: object | None  # an OnnxStyleModel for runtime="onnxruntime"
    strength: float
    preserve: str
    tile: int | None
    as_uint8: bool  # a PIL image comes back: finish in uint8 bands
    budget: int  # bytes an untiled forward may use
    weights: tuple[float, ...] | None = None  # a multi-style model's style weights


def check_look(strength: float, preserve: str) -> None:
    """ValueError naming ``strength`` or ``preserve``: the options every way of stylizing shares."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    if preserve not in PRESERVE_COLOR:
        raise ValueError(f"preserve must be one of {', '.join(PRESERVE_COLOR)}, got {preserve!r}")


def _check_options(generator: torch.nn.Module, strength: float, preserve: str, tile: int | None, runtime: str) -> None:
    """ValueError naming the first bad argument of ``stylize``."""
    check_look(strength, preserve)
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if tile is not None:
        stride = int(getattr(generator, "tile_stride", 1))
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1 or tile % stride:
            raise ValueError(f"tile must be a positive multiple of the model's tile_stride ({stride}) or None, got {tile!r}")


def as_batch(image, max_size: int | None) -> tuple[Tensor, bool]:
    """``image`` as a batch (N, 3, H, W), float or uint8 (8-bit images stay uint8, a quarter of
    float32's memory, until a tile needs them), scaled down to a long side of ``max_size`` if longer; and whether it was one
    image (3, H, W)."""
    x = load_pixels(image) if not isinstance(image, Tensor) else image
    unbatched = x.dim() == 3
    batch = x.unsqueeze(0) if unbatched else x
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ValueError(f"image must be RGB (3, H, W) or a batch (N, 3, H, W), got shape {tuple(x.shape)}")
    if not (batch.is_floating_point() or batch.dtype == torch.uint8):
        raise ValueError(f"image must be float in [0, 1] or uint8 pixels, got {batch.dtype}")
    if max_size is not None and max(batch.shape[-2:]) > max_size:  # at most max_size: never enlarged
        batch = torch.stack([resize_long_side(pixels_to_float(img), max_size) for img in batch])
    return batch, unbatched


class BandOutput:
    """The stylized image, made from bands of rows as they come: NaN check, colour
    preservation, strength blend and clamp per band, stored as uint8 (H, W, 3) or float32
    (1, 3, H, W) on the input tensor's device. Covariance and histogram preservation need the
    whole image's colours first, so they keep the float32 image and finish it in bands at the end."""

    def __init__(
        self, content: Tensor, strength: float, preserve: str, *, as_uint8: bool, model_name: str, device: torch.device
    ) -> None:
        self.content = content  # (1, 3, H, W) uint8 or float32, on the device
        self.strength, self.preserve, self.model_name = strength, preserve, model_name
        h, w = content.shape[-2:]
        self.pixels = np.empty((h, w, 3), dtype=np.uint8) if as_uint8 else None
        self.transfer = BandTransfer(preserve) if preserve in WHOLE_IMAGE_METHODS else None
        # a float result stays on the device the caller's tensor came from (a CUDA tensor in, a CUDA tensor out)
        self.image = None if as_uint8 and self.transfer is None else torch.empty(1, 3, h, w, device=device)
        # one flag per band, read once in finish(): on CUDA a read per band would stall the GPU's queue
        self.finite: list[Tensor] = []

    def write(self, y0: int, y1: int, rows: Tensor) -> None:
        rows = rows.float()  # (1, 3, y1 - y0, W)
        self.finite.append(torch.isfinite(rows).all())
        if self.transfer is not None:  # finished in finish(), once the whole image's colours are known
            self.transfer.add(rows)
            self.image[:, :, y0:y1] = rows
            return
        content = pixels_to_float(self.content[:, :, y0:y1])
        self._store(y0, y1, preserve_color(rows, content, self.preserve), content)

    def _store(self, y0: int, y1: int, rows: Tensor, content: Tensor) -> None:
        if self.strength < 1.0:
            rows = self.strength * rows + (1 - self.strength) * content
        rows = rows.clamp(0, 1)
        if self.pixels is not None:  # as to_pil quantizes
            quantized = (rows[0] * 255).round_().to(torch.uint8).permute(1, 2, 0)
            self.pixels[y0:y1] = quantized.cpu().numpy()
        else:
            self.image[:, :, y0:y1] = rows

    def finish(self):
        """The result: uint8 (H, W, 3) for a PIL image, else float32 (1, 3, H, W)."""
        if self.finite and not bool(torch.stack(self.finite).all()):
            raise RuntimeError(f"model {self.model_name} produced NaN or inf values; nothing was written")
        if self.transfer is not None:
            self._finish_transfer(self.transfer)
        return self.pixels if self.pixels is not None else self.image

    def _finish_transfer(self, transfer: BandTransfer) -> None:
        """The content's colours in bands of about 4 M pixels, then the stored image mapped band by band."""
        h, band = self.content.shape[-2], max(1, (1 << 22) // self.content.shape[-1])
        for y0 in range(0, h, band):
            transfer.add_content(pixels_to_float(self.content[:, :, y0 : y0 + band]))
        for y0 in range(0, h, band):
            y1 = min(y0 + band, h)
            content = pixels_to_float(self.content[:, :, y0:y1])
            self._store(y0, y1, transfer.apply(self.image[:, :, y0:y1].to(content.device)), content)


def _bytes_per_pixel(generator: torch.nn.Module, autocast: torch.dtype | None) -> int:
    """Peak untiled activation bytes per pixel: :data:`BYTES_PER_PIXEL` (fp32, width 1)
    scaled by the generator's width; 16-bit autocast is not counted as a saving (norms
    and the output head still compute in float32)."""
    width = float(getattr(generator, "config", {}).get("width", 1.0))
    return math.ceil(BYTES_PER_PIXEL * max(width, 0.25))


_CUDA_BUDGET: dict = {}  # device -> (time.monotonic() of the query, bytes)


def memory_budget(device: torch.device) -> int:
    """Bytes an untiled forward may use: a quarter of free memory (on CUDA queried at most once a
    second: a stream of same-size images must not pay a driver query each)."""
    if device.type == "cuda":
        now = time.monotonic()
        cached = _CUDA_BUDGET.get(device)
        if cached is None or now - cached[0] > 1.0:
            free, _ = torch.cuda.mem_get_info(device)
            cached = _CUDA_BUDGET[device] = (now, free // 4)
        return cached[1]
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        pages = 4 << 30
    return pages // 4


def _find_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


def release_freed_memory() -> None:
    """Hand memory freed so far back to the system: glibc keeps freed chunks under its mmap
    threshold, and tile after tile of differently sized windows the kept memory grows (by about
    100 MB a window for AdaIN at 1016 x 1016: docs/adain.md, "Memory"). Elsewhere a no-op."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def load_model(name_or_path: str | os.PathLike) -> StyleModel:
    """A bundled style by name (``instyle.list_models()``: ``FILE:STYLE`` for a style inside a
    multi-style file, which it then stylizes in by default) or a model file path."""
    path, style = resolve_model(name_or_path)
    generator, metadata = load_generator(path)
    name = style or metadata.get("style_name") or path.stem
    return StyleModel(generator, metadata, name, source=path, style=style)


def parse_style_mix(text: str, what: str = "style_mix") -> dict[str, float]:
    """``"a=0.6,b=0.4"``, ``"a=1"`` or ``"a"`` (weight 1) as ``{name: weight}``; ValueError naming
    ``what`` where a part is no NAME=WEIGHT, a weight no number, or a name given twice (the weights are
    checked by :func:`mix_weights`)."""
    mix: dict[str, float] = {}
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or not all(parts):
        raise ValueError(f"{what} {text!r}: expected NAME, or NAME=WEIGHT,NAME=WEIGHT,...")
    for part in parts:
        name, sep, number = (p.strip() for p in part.partition("="))
        if not name or (sep and not number):
            raise ValueError(f"{what} {text!r}: {part!r} is not NAME=WEIGHT")
        try:
            weight = float(number) if sep else 1.0
        except ValueError:
            raise ValueError(f"{what} {text!r}: the weight of {name}, {number!r}, is not a number") from None
        if name in mix:
            raise ValueError(f"{what} {text!r}: style {name} is given twice")
        mix[name] = weight
    return mix


def mix_weights(style, names: tuple[str, ...], what: str = "style", model: str = "this model") -> tuple[float, ...] | None:
    """The weight of each style of ``names`` (a multi-style model's) for ``style``: a name, or a
    mapping of names to weights >= 0, normalized to sum 1. None where ``names`` is empty (a
    single-style model) and no style is given. ValueError naming ``what``."""
    if not names:
        if style is not None:
            raise ValueError(f"{what}: {model} is a single-style model; a style or mix is for a multi-style model")
        return None
    if style is None:
        raise ValueError(f"{what} is needed: {model} holds {len(names)} styles ({', '.join(names)}); name one or mix them")
    mix = {style: 1.0} if isinstance(style, str) else style
    if not isinstance(mix, Mapping) or not mix:
        raise ValueError(f"{what} must be a style name or a mapping of style names to weights, got {style!r}")
    unknown = [name for name in mix if name not in names]
    if unknown:
        raise ValueError(f"{what}: {model} has no style {unknown[0]!r}; its styles: {', '.join(names)}")
    for name, weight in mix.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{what}: the weight of {name} must be a finite number >= 0, got {weight!r}")
    total = math.fsum(mix.values())
    if total <= 0:
        raise ValueError(f"{what}: the weights sum to 0; give at least one style a positive weight")
    return tuple(mix.get(name, 0.0) / total for name in names)


def mix_label(weights: tuple[float, ...], names: tuple[str, ...]) -> str:
    """A style or mix as output file names show it: ``wave``, or ``wave60+udnie40`` (percent)."""
    used = [(name, w) for name, w in zip(names, weights) if w > 0]
    if len(used) == 1:
        return used[0][0]
    return "+".join(f"{name}{100 * w:.3g}" for name, w in used)


@dataclass
class FileResult:
    source: Path
    output: Path | None
    seconds: float
    error: str | None = None  # why it failed, in words that never repeat ``source`` itself


def output_paths(sources: list[Path], outdir: Path, model_name: str, suffix: str) -> list[Path]:
    """``outdir / STEM_MODEL.SUFFIX`` for each source; sources that would share a name (``a/img.png``
    and ``b/img.png``, or ``img.png`` and ``img.jpg``) get the folders that tell them apart and then
    their extension in the name instead, so that no output of a run replaces another."""
    names = [source.stem for source in sources]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    for members in (m for m in groups.values() if len(m) > 1):
        paths = [sources[i].resolve() for i in members]
        root = Path(os.path.commonpath([path.parent for path in paths]))
        for i, path in zip(members, paths):
            parts = [*path.parent.relative_to(root).parts, path.stem]
            names[i] = "_".join(parts)
        clashing = {n for n in (names[i] for i in members) if sum(names[j] == n for j in members) > 1}
        for i, path in zip(members, paths):
            if names[i] in clashing:
                names[i] += "_" + path.suffix.lstrip(".").lower()
    targets, used = [], set()
    for name in names:
        target, n = outdir / f"{name}_{model_name}{suffix}", 2
        # a disambiguated name that another file has as its own, or one that differs only by case
        # (``A.png`` and ``a.png``: one file on the disks of macOS and Windows)
        while target.name.casefold() in used:
            target, n = outdir / f"{name}_{n}_{model_name}{suffix}", n + 1
        used.add(target.name.casefold())
        targets.append(target)
    return targets


def stylize_files(
    model, sources: Iterable[Path], outdir: Path, *, suffix: str = ".png", name: str | None = None, **options
) -> Iterator[FileResult]:
    """Stylize each file into ``outdir`` with ``model.stylize(source, **options)`` (a
    :class:`StyleModel` or an :class:`instyle.engine.inference.adain.AdaINModel`), once however often
    it is named (``a.png``, ``./a.png``, a link to it); a failing file is reported and the rest still
    run. Outputs are named ``STEM_NAME`` (``name`` default: the model's)."""
    unique: dict[Path, Path] = {}  # the real file -> the first name it was given by
    for source in map(Path, sources):
        unique.setdefault(source.resolve(), source)
    sources = list(unique.values())
    outdir.mkdir(parents=True, exist_ok=True)
    for source, target in zip(sources, output_paths(sources, outdir, name or model.name, suffix)):
        start = time.perf_counter()
        try:
            if target.resolve() in unique:
                raise ImageError(str(target), "refusing to overwrite an input file")
            result = model.stylize(source, **options)  # a PIL image, never a float copy of the file
            save_image(result, target)
            yield FileResult(source, target, time.perf_counter() - start)
        except (ImageError, ValueError, RuntimeError, OSError) as error:
            # an ImageError about the source itself says only why: the caller names the source
            about_source = isinstance(error, ImageError) and error.source == str(source)
            yield FileResult(source, None, time.perf_counter() - start, error.reason if about_source else str(error))
