"""Networks: the VGG feature extractor and the generators (TransformerNet, TextureNet)."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from instyle.engine.models.blocks import ConvNormAct, NormAct
from instyle.engine.models.texture import TextureNet
from instyle.engine.models.transformer import ResidualBlock, TransformerNet
from instyle.engine.models.vgg import VGGFeatures

# CLI names (--arch); model files store each class's own ``arch`` string.
GENERATORS: dict[str, type[nn.Module]] = {"transformer": TransformerNet, "texture": TextureNet}
_BY_CONFIG_ARCH = {cls.arch: cls for cls in GENERATORS.values()}


def build_generator(arch: str, **options: Any) -> nn.Module:
    """A generator by architecture name; ``options`` are its constructor's keywords."""
    try:
        cls = GENERATORS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(GENERATORS)}") from None
    return cls(**options)


def generator_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a generator from its ``.config`` (as stored in a model file)."""
    arch = config.get("arch")
    if arch not in _BY_CONFIG_ARCH:
        raise ValueError(f"unknown architecture {arch!r} in config")
    return _BY_CONFIG_ARCH[arch].from_config(config)


__all__ = [
    "ConvNormAct", "NormAct", "ResidualBlock", "TextureNet", "TransformerNet", "VGGFeatures",
    "GENERATORS", "build_generator", "generator_from_config",
]  # fmt: skip
