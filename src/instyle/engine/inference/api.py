"""``instyle.stylize(photo, style=...)``: one call for any style, the result as the photo was given.

``style`` is a painting (a file, PIL image, ndarray, tensor, or a list of them: arbitrary style
transfer, :mod:`instyle.engine.inference.adain`) or a bundled style name or generator model file
(the trained fast generator, :mod:`instyle.engine.inference.stylize`). The models are loaded once
and kept for later calls (the file's size and time of change key them).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Sequence

from instyle.engine.catalog import adain_decoder_path, is_bundled_style
from instyle.engine.inference.adain import DEFAULT_STYLE_SIZE, AdaINModel, load_adain
from instyle.engine.inference.stylize import StyleModel, load_model

__all__ = ["stylize"]


def stylize(
    photo,
    style,
    *,
    style_weights: Sequence[float] | None = None,
    mask=None,
    strength: float = 1.0,
    preserve: str = "none",
    decoder: str | os.PathLike | None = None,
    style_size: int = DEFAULT_STYLE_SIZE,
    max_size: int | None = None,
    tile: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
):
    """``photo`` (a path, PIL image, ndarray or tensor in [0, 1]) in the style of ``style``, returned
    as the kind given: a PIL image for a PIL image or a path, an ndarray (H, W, 3) of the array's
    dtype for an ndarray, a float32 tensor of the tensor's shape for a tensor.

    ``style``: a painting, or a list of paintings mixed by ``style_weights`` (default equal) or
    placed by ``mask`` (an image whose k-th colour, darkest first, takes painting k), with
    ``strength`` AdaIN's alpha and ``decoder`` a file from ``instyle train-adain`` (default: the
    bundled one); or a bundled style name or generator file, ``strength`` then blending with the
    photo. ``preserve``: keep the photo's colours (:data:`instyle.engine.color.PRESERVE_COLOR`).
    """
    common = dict(strength=strength, preserve=preserve, max_size=max_size, tile=tile, device=device, dtype=dtype)
    if _is_generator(style):
        for name, value in (("style_weights", style_weights), ("mask", mask), ("decoder", decoder)):
            if value is not None:
                raise ValueError(f"{name}: only for paintings; style {os.fspath(style)!r} is a trained model")
        return _cached(StyleModel, *_key(Path(style) if Path(style).exists() else style)).stylize(photo, **common)
    model = _cached(AdaINModel, *_key(adain_decoder_path(decoder)))
    return model.stylize(photo, style=style, style_weights=style_weights, mask=mask, style_size=style_size, **common)


def _is_generator(style: Any) -> bool:
    """Whether ``style`` names a trained generator: a bundled style name or a .safetensors file."""
    if not isinstance(style, (str, os.PathLike)):
        return False
    return is_bundled_style(style) or Path(style).suffix.lower() == ".safetensors"


def _key(name_or_path: str | os.PathLike) -> tuple[str, int, int]:
    """A model by name or path with its file's size and time of change (0, 0 for a name or a missing file)."""
    try:
        stat = os.stat(name_or_path)
    except OSError:
        return os.fspath(name_or_path), 0, 0
    return os.fspath(Path(name_or_path).resolve()), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _cached(kind: type, name_or_path: str, size: int, mtime: int):
    """The model of ``kind`` loaded once per (file, size, time of change)."""
    return load_model(name_or_path) if kind is StyleModel else load_adain(name_or_path)
