"""Networks: the VGG feature extractor and the generators (TransformerNet, TextureNet)."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from instyle.engine.models.blocks import ConvNormAct, NormAct, canonical_arch
from instyle.engine.models.texture import TextureNet
from instyle.engine.models.transformer import ResidualBlock, TransformerNet
from instyle.engine.models.vgg import VGGFeatures

# One name per architecture: the config's ``arch``, the model file's and the class's ``arch``.
GENERATORS: dict[str, type[nn.Module]] = {cls.arch: cls for cls in (TransformerNet, TextureNet)}


def build_generator(arch: str, **options: Any) -> nn.Module:
    """A generator by architecture name; ``options`` are its constructor's keywords."""
    try:
        cls = GENERATORS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(GENERATORS)}") from None
    return cls(**options)


def generator_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a generator from its ``.config`` (as stored in a model file)."""
    arch = canonical_arch(config.get("arch"))
    if arch not in GENERATORS:
        raise ValueError(f"unknown architecture {arch!r} in config")
    return GENERATORS[arch].from_config(config)


__all__ = [
    "ConvNormAct", "NormAct", "ResidualBlock", "TextureNet", "TransformerNet", "VGGFeatures",
    "GENERATORS", "build_generator", "generator_from_config",
]  # fmt: skip
