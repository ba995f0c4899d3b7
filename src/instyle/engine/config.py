"""How task configs are declared and checked: one place for every config's plumbing.

A task config (TrainConfig, OptimizeConfig, TextureConfig, ...) is a dataclass whose fields are
declared with :func:`option`: the default, the help text, and the bounds or choices, stated once.
:func:`check_config` checks a config against them (nested configs included) and raises
:class:`ConfigError` naming the field; the command line derives its flags, help and parsing from
the same metadata (instyle.apps.cli), and turns field names into flags in one place.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING, dataclass
from typing import Any, Sequence

__all__ = ["ConfigError", "LossConfig", "check_config", "option"]


class ConfigError(ValueError):
    """A config field with a value no task can use. ``field`` is its dotted name (``loss.style_weight``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


def option(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Any = MISSING,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    flag: bool = True,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its help text and bounds: ``min <= value <= max``, ``value > above``,
    ``value in choices`` (None passes every check: it means "not set" only where the help says what
    None stands for). ``flag=False``: not offered on the command line."""
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "min": min, "max": max,
                "above": above, "flag": flag, "metavar": metavar}  # fmt: skip
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _check_value(name: str, value: Any, meta: dict) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    values = value if isinstance(value, tuple) and choices is not None else (value,)
    if choices is not None:
        for v in values:
            if v not in choices:
                raise ConfigError(name, f"must be one of {', '.join(map(str, choices))}; got {v!r}")
    low, high, above = meta.get("min"), meta.get("max"), meta.get("above")
    if low is None and high is None and above is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number, got {value}")
    if low is not None and value < low:
        raise ConfigError(name, f"must be at least {low:g}, got {value:g}")
    if high is not None and value > high:
        raise ConfigError(name, f"must be at most {high:g}, got {value:g}")
    if above is not None and value <= above:
        raise ConfigError(name, f"must be greater than {above:g}, got {value:g}")


def check_config(config: Any, prefix: str = "") -> None:
    """Check every field declared with :func:`option` (and every nested config) against its bounds
    and choices; raise :class:`ConfigError` naming the first bad field."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value, prefix=name + ".")
        elif f.metadata:
            _check_value(name, value, f.metadata)


@dataclass
class LossConfig:
    """The perceptual loss every task config nests: the loss network, its layers and the weights.

    Defaults differ by task (each task config declares its own LossConfig default); a default is a
    value, never a signal: nothing compares a field with its default to guess what the user meant.
    """

    vgg_weights: str = option(
        "imagenet-vgg19",
        help="the loss network: hed-vgg16, imagenet-vgg19, or a torchvision VGG-16/19 state dict "
        "(.pth or .safetensors)", metavar="PATH_OR_NAME",
    )  # fmt: skip
    content_layers: tuple[str, ...] = option(("relu2_2", "relu4_2"), help="VGG layers of the content loss", metavar="LAYER")
    style_layers: tuple[str, ...] = option(
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1"), help="VGG layers whose Gram matrices make the style loss",
        metavar="LAYER",
    )  # fmt: skip
    content_weight: float = option(1.0, help="content loss weight", min=0)
    style_weight: float = option(5.0, help="style loss weight", min=0)
    tv_weight: float = option(50.0, help="total-variation (smoothness) loss weight", min=0)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
