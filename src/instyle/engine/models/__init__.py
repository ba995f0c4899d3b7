"""Networks: the VGG feature extractor and the generators (TransformerNet, TextureNet)."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from torch import nn

from instyle.engine.models.adain import AdaINDecoder, FastAdaIN
from instyle.engine.models.blocks import ConvNormAct, NormAct, canonical_arch, kwargs_from_config
from instyle.engine.models.settings import Entry, check_norm, shown
from instyle.engine.models.texture import TextureNet
from instyle.engine.models.transformer import ResidualBlock, TransformerNet
from instyle.engine.models.vgg import VGGFeatures

# One name per architecture: the config's ``arch``, the model file's and the class's ``arch``.
GENERATORS: dict[str, type[nn.Module]] = {cls.arch: cls for cls in (TransformerNet, TextureNet)}
# Every network a model file may hold: the generators, AdaIN's decoder (which stylizes only with
# its encoder: the style commands refuse it as a generator) and the distilled AdaIN pair.
NETWORKS: dict[str, type[nn.Module]] = {**GENERATORS, AdaINDecoder.arch: AdaINDecoder, FastAdaIN.arch: FastAdaIN}


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
    if arch not in NETWORKS:
        raise ValueError(f"unknown architecture {arch!r} in config")
    return NETWORKS[arch].from_config(config)


def generator_state(config: Any) -> tuple[dict[str, Any], dict[str, Entry]]:
    """The checked settings of a stored generator ``config`` (defaults filled in, ``arch`` by its
    one name) and the state dict they imply (name -> :class:`Entry`), derived without building
    anything. ValueError names what is wrong: the architecture, an unknown key, a setting of the
    wrong type or out of its bounds, a norm that a model file cannot name."""
    if not isinstance(config, Mapping):
        raise ValueError(f"the generator config is a {type(config).__name__}, not an object")
    arch = canonical_arch(config.get("arch"))
    if not isinstance(arch, str) or arch not in NETWORKS:
        raise ValueError(f"unknown architecture {shown(config.get('arch'))}; expected one of {', '.join(NETWORKS)}")
    cls = NETWORKS[arch]
    if hasattr(cls, "stored_state"):  # a network whose settings are not a norm and numbers
        return cls.stored_state(config, "config.")
    params = inspect.signature(cls.__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    settings = {**defaults, **kwargs_from_config(cls, config)}
    # "config.width": the stored setting, which the command line must not mistake for its flag
    check_norm(settings["norm"], "config.")
    cls.check_inputs("config.", **{s.name: settings[s.name] for s in cls.SETTINGS})
    return {"arch": arch, **settings}, cls.state_entries(**settings)


__all__ = [
    "ConvNormAct", "NormAct", "ResidualBlock", "TextureNet", "TransformerNet", "VGGFeatures",
    "AdaINDecoder", "GENERATORS", "NETWORKS", "build_generator", "generator_from_config", "generator_state",
]  # fmt: skip
