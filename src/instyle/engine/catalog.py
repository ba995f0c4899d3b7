"""The catalog of bundled styles: the model files shipped in ``instyle/styles``, by name."""

from __future__ import annotations

import os
from pathlib import Path

from instyle.engine.modelfile import ModelFileError, has_style_targets

STYLES_DIR = Path(__file__).resolve().parents[1] / "styles"

__all__ = ["STYLES_DIR", "list_models", "resolve_model_path"]


def list_models(*, with_style_targets: bool = False) -> list[str]:
    """Names of the styles bundled with instyle; ``with_style_targets=True``: only those whose model
    file carries the painting's style statistics, so that the name can stand for the style in
    ``instyle train/optimize/texture/experiment --style NAME`` (see :mod:`instyle.engine.targets`)."""
    paths = sorted(STYLES_DIR.glob("*.safetensors"))
    if with_style_targets:
        paths = [p for p in paths if has_style_targets(p)]
    return [p.stem for p in paths]


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A model file path as given, or the bundled style of that name."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or path.exists():
        return path
    bundled = STYLES_DIR / f"{name_or_path}.safetensors"
    if bundled.exists():
        return bundled
    available = ", ".join(list_models()) or "none bundled"
    raise ModelFileError(f"model {name_or_path}: no such file or bundled style (bundled: {available})")
