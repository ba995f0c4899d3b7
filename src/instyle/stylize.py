"""Stylizing images with a trained generator: ``load_model(name_or_path).stylize(image)``.

``stylize`` returns what it was given: a PIL image for a PIL image, a tensor for a tensor
((3, H, W) or (N, 3, H, W) in [0, 1]). Large images go through whole-image instance-norm
statistics and overlapping tiles (:mod:`instyle.tiling`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import Tensor

from .color import preserve_color
from .image import ImageError, load_image, resize_long_side, save_image, to_pil
from .modelfile import ModelFileError, has_style_targets, load_generator
from .tiling import auto_tile, stylize_tiled
from .runtime import preferred_memory_format, resolve_autocast_dtype, resolve_device

STYLES_DIR = Path(__file__).parent / "styles"
RUNTIMES = ("torch", "onnxruntime")


def list_models(*, with_style_targets: bool = False) -> list[str]:
    """Names of the styles bundled with instyle; ``with_style_targets=True``: only those whose model
    file carries the painting's style statistics, so that the name can stand for the style in
    ``instyle train/optimize/texture/experiment --style NAME`` (see :mod:`instyle.style_targets`)."""
    paths = sorted(STYLES_DIR.glob("*.safetensors"))
    if with_style_targets:
        paths = [p for p in paths if has_style_targets(p)]
    return [p.stem for p in paths]


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or path.exists():
        return path
    bundled = STYLES_DIR / f"{name_or_path}.safetensors"
    if bundled.exists():
        return bundled
    available = ", ".join(list_models()) or "none bundled"
    raise ModelFileError(f"model {name_or_path}: no such file or bundled style (bundled: {available})")


class StyleModel:
    """A generator ready for inference, with its metadata."""

    def __init__(self, generator: torch.nn.Module, metadata: dict, name: str, source: Path | None = None) -> None:
        self.generator = generator
        self.metadata = metadata
        self.name = name
        self.source = source  # the model file, which keys the ONNX cache
        self._onnx = None

    def onnx_model(self):
        """The generator exported to ``$INSTYLE_HOME/onnx/<model sha256>.onnx`` (on first use)
        and loaded into onnxruntime; see :mod:`instyle.export`."""
        if self._onnx is None:
            from .export import load_cached_onnx

            self._onnx = load_cached_onnx(self.generator, self.source, {"style_name": self.name})
        return self._onnx

    def __repr__(self) -> str:
        return f"StyleModel({self.name!r}, arch={self.generator.config.get('arch')!r})"

    @torch.no_grad()
    def stylize(
        self,
        image,
        *,
        strength: float = 1.0,
        preserve: str = "none",
        max_size: int | None = None,
        tile: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        runtime: str = "torch",
    ):
        """Stylize ``image`` (PIL image, path, or tensor in [0, 1]) and return the same kind.

        ``runtime="onnxruntime"`` runs the exported generator in fp32 on the CPU; images that
        need tiles still go through torch (tiling freezes statistics inside the network).
        """
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        onnx = None
        if runtime == "onnxruntime":
            if device not in ("auto", "cpu"):
                raise ValueError(f"runtime onnxruntime runs on the CPU; got device {device!r}")
            if dtype not in ("auto", "fp32", "float32"):
                raise ValueError(f"runtime onnxruntime computes in fp32; got dtype {dtype!r}")
            device, dtype = "cpu", "fp32"
            onnx = self.onnx_model()
        as_pil = not isinstance(image, Tensor)
        x = load_image(image) if as_pil else image
        unbatched = x.dim() == 3
        batch = x.unsqueeze(0) if unbatched else x
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected an RGB image (3, H, W) or batch (N, 3, H, W), got shape {tuple(x.shape)}")
        if max_size is not None:
            batch = torch.stack([resize_long_side(img, max_size) for img in batch])
        dev = resolve_device(device)
        autocast = resolve_autocast_dtype(dtype, dev)
        # channels_last with bf16/fp16 autocast or CUDA: what oneDNN's and cuDNN's fast convolutions want.
        memory_format = preferred_memory_format(dev, autocast)
        generator = self.generator.to(dev, memory_format=memory_format)
        content = batch.to(dev, torch.float32)
        out = []
        for single in content.split(1):
            h, w = single.shape[-2:]
            chosen = tile if tile is not None else auto_tile(h, w, _memory_budget(dev))
            with torch.autocast(dev.type, dtype=autocast, enabled=autocast is not None):
                if chosen and chosen < max(h, w):
                    y = stylize_tiled(generator, single, tile=chosen)
                elif onnx is not None:
                    y = onnx.run(single)
                else:
                    y = generator(single.contiguous(memory_format=memory_format))
            out.append(y.float())
        stylized = torch.cat(out)
        if not torch.isfinite(stylized).all():
            raise RuntimeError(f"model {self.name} produced NaN or inf values; nothing was written")
        stylized = preserve_color(stylized, content, preserve)
        if strength < 1.0:
            stylized = strength * stylized + (1 - strength) * content
        stylized = stylized.clamp(0, 1).cpu()
        if as_pil:
            return to_pil(stylized[0])
        return stylized[0] if unbatched else stylized


def _memory_budget(device: torch.device) -> int:
    """Bytes an untiled forward may use: a quarter of free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 4
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        pages = 4 << 30
    return pages // 4


def load_model(name_or_path: str | os.PathLike) -> StyleModel:
    """A bundled style by name (``instyle.list_models()``) or a model file path."""
    path = resolve_model_path(name_or_path)
    generator, metadata = load_generator(path)
    return StyleModel(generator, metadata, metadata.get("style_name") or path.stem, source=path)


@dataclass
class FileResult:
    source: Path
    output: Path | None
    seconds: float
    error: str | None = None


def output_path_for(source: Path, outdir: Path, model_name: str, suffix: str) -> Path:
    return outdir / f"{source.stem}_{model_name}{suffix}"


def stylize_files(
    model: StyleModel, sources: Iterable[Path], outdir: Path, *, suffix: str = ".png", **options
) -> Iterator[FileResult]:
    """Stylize each file into ``outdir``; a failing file is reported and the rest still run."""
    sources = [Path(p) for p in sources]
    outdir.mkdir(parents=True, exist_ok=True)
    inputs = {p.resolve() for p in sources}
    for source in sources:
        start = time.perf_counter()
        target = output_path_for(source, outdir, model.name, suffix)
        try:
            if target.resolve() in inputs:
                raise ImageError(str(target), "refusing to overwrite an input file")
            result = model.stylize(load_image(source), **options)
            save_image(result, target)
            yield FileResult(source, target, time.perf_counter() - start)
        except (ImageError, ValueError, RuntimeError, OSError) as error:
            yield FileResult(source, None, time.perf_counter() - start, str(error))
