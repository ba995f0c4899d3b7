"""The catalog of bundled styles: the model files shipped in ``instyle/styles``, by name; and the
AdaIN decoder (``instyle/styles/adain/decoder.safetensors``, apart so that it is no style name)."""

from __future__ import annotations

import os
from pathlib import Path

from instyle.engine.config import ConfigError
from instyle.engine.modelfile import ModelFileError, has_style_targets

STYLES_DIR = Path(__file__).resolve().parents[1] / "styles"
# The decoder of arbitrary style transfer (issue #18), trained by `instyle train-adain`.
ADAIN_DECODER = STYLES_DIR / "adain" / "decoder.safetensors"

__all__ = ["ADAIN_DECODER", "STYLES_DIR", "adain_decoder_path", "is_bundled_style", "list_models", "resolve_model_path"]


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


def is_bundled_style(name: str | os.PathLike) -> bool:
    """Whether ``name`` names a bundled style (and no file of that name exists)."""
    return not Path(name).exists() and os.fspath(name) in list_models()


def adain_decoder_path(decoder: str | os.PathLike | None = None) -> Path:
    """The AdaIN decoder file: ``decoder`` as given, else the bundled one; ConfigError naming the
    argument ``decoder`` when none is given and none is bundled."""
    if decoder is not None:
        return Path(decoder)
    if ADAIN_DECODER.is_file():
        return ADAIN_DECODER
    raise ConfigError(
        "decoder",
        "is needed: none given, and the AdaIN decoder is not bundled in this build; "
        "give a decoder file trained with `instyle train-adain`",
    )
