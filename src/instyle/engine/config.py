"""How task configs are declared and checked: one place for every config's plumbing.

A task config (TrainConfig, OptimizeConfig, TextureConfig, ...) is a dataclass whose fields are
declared with :func:`option`: the default, the help text, and the bounds or choices, stated once.
:func:`check_config` checks a config against them (nested configs included) and raises
:class:`ConfigError` naming the field; the command line derives its flags, help and parsing from
the same metadata (instyle.apps.cli), and turns field names into flags in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Sequence

__all__ = [
    "ConfigError", "LOSS_FIELDS", "LossConfig", "check_config", "device_option", "dtype_option", "flat_json",
    "loss_defaults", "nests_loss", "option",
]  # fmt: skip


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


def device_option() -> Any:
    """The ``device`` field every task config has (resolved by :class:`instyle.engine.device.DeviceConfig`)."""
    from instyle.engine.device import DEVICES_HELP

    return option("auto", help=DEVICES_HELP)


def dtype_option(what: str = "compute precision") -> Any:
    """The ``dtype`` field of a task that trains or optimises under autocast (DeviceConfig, "train")."""
    from instyle.engine.device import DTYPES

    return option(
        "auto", choices=DTYPES, help=f"{what}: auto is bf16 autocast on CUDA and on CPUs with native bf16, else fp32"
    )


def _either(choices: Sequence[Any]) -> str:
    words = [str(c) for c in choices]
    if len(words) <= 2:
        return " or ".join(words)
    return f"one of {', '.join(words[:-1])} or {words[-1]}"


def _bounds_text(integer: bool, meta: dict) -> str:
    """What the bounds ask for, in words: ``at least 1`` for integers, ``a positive number`` for
    the usual float bounds."""
    low, high, above = meta.get("min"), meta.get("max"), meta.get("above")
    if integer and above is None:
        if high is None:
            return f"at least {low:g}"
        return f"at most {high:g}" if low is None else f"in [{low:g}, {high:g}]"
    if (low, high, above) == (None, None, 0):
        return "a positive number"
    if (low, high, above) == (0, None, None):
        return "a non-negative number"
    parts = [f"at least {low:g}" if low is not None else "", f"greater than {above:g}" if above is not None else "",
             f"at most {high:g}" if high is not None else ""]  # fmt: skip
    return "a number " + " and ".join(p for p in parts if p)


def _check_value(name: str, value: Any, meta: dict, integer: bool = False) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    values = value if isinstance(value, tuple) and choices is not None else (value,)
    if choices is not None:
        for v in values:
            if v not in choices:
                raise ConfigError(name, f"must be {_either(choices)}, got {v!r}")
    low, high, above = meta.get("min"), meta.get("max"), meta.get("above")
    if low is None and high is None and above is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number, got {value!r}")
    bad = (
        (isinstance(value, float) and not math.isfinite(value))
        or (low is not None and value < low)
        or (high is not None and value > high)
        or (above is not None and value <= above)
    )
    if bad:
        raise ConfigError(name, f"must be {_bounds_text(integer, meta)}, got {value}")


def check_config(config: Any, prefix: str = "") -> None:
    """Check every field declared with :func:`option` (and every nested config) against its bounds
    and choices; raise :class:`ConfigError` naming the first bad field."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value, prefix=name + ".")
        elif f.metadata:
            kind = str(f.type)  # a string under `from __future__ import annotations`
            _check_value(name, value, f.metadata, integer="int" in kind and "float" not in kind)


# The help of the loss network, shared by every task config (each states its own default).
VGG_WEIGHTS_HELP = (
    "loss network: hed-vgg16, imagenet-vgg19, or a torchvision VGG-16/19 state dict (.pth or .safetensors); "
    "stored style targets pick theirs"
)


@dataclass
class LossConfig:
    """The perceptual loss every task config nests: the loss network, its layers and the weights.

    Defaults differ by task (each task config declares its own LossConfig default with
    :func:`loss_defaults`); a default is a value, never a signal: nothing compares a field with its
    default to guess what the user meant. How the network and the style weight follow a style given
    by stored targets is said by ``follow_style_targets`` and ``rescale_style_weight``
    (:func:`instyle.engine.targets.adopt_target_weights` applies them).
    """

    vgg_weights: str = option("imagenet-vgg19", help=VGG_WEIGHTS_HELP, metavar="PATH_OR_NAME")
    content_layers: tuple[str, ...] = option(("relu2_2", "relu4_2"), help="VGG layers of the content loss", metavar="LAYER")
    style_layers: tuple[str, ...] = option(
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1"), help="VGG layers whose Gram matrices make the style loss",
        metavar="LAYER",
    )  # fmt: skip
    content_weight: float = option(1.0, help="content loss weight", min=0)
    style_weight: float = option(
        5.0, min=0, help="style loss weight, for the command's default loss network (scaled on the other named one "
        "unless given)",
    )  # fmt: skip
    tv_weight: float = option(50.0, help="total-variation (smoothness) loss weight", min=0)
    mean_std_weight: float = option(
        0.0, min=0, help="weight of a second style term beside the Gram matrices: the per-channel mean and std of the "
        "style layers (AdaIN's style loss, what `instyle score` measures); needs the style image, not stored targets",
    )  # fmt: skip
    follow_style_targets: bool = option(
        True, flag=False,
        help="when the style is given by stored targets computed on another network, use that network (and "
        "scale style_weight by the networks' ratio, see rescale_style_weight)",
    )  # fmt: skip
    rescale_style_weight: bool = option(
        True, flag=False,
        help="style_weight is tuned for style_weight_network: on another named network, scale it by their ratio "
        "(instyle.engine.weights.STYLE_WEIGHT_SCALE); the command line turns this off when --style-weight is given",
    )  # fmt: skip
    style_weight_network: str = option(
        "imagenet-vgg19", flag=False, help="the loss network style_weight is tuned for", metavar="NAME"
    )

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> LossConfig:
        """The config :meth:`to_json` wrote (lists back to tuples); keys it does not know are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


LOSS_FIELDS = frozenset(f.name for f in dataclasses.fields(LossConfig))


def loss_defaults(**values: Any) -> Callable[[], LossConfig]:
    """A ``default_factory`` for a task config's ``loss`` field: LossConfig with the task's defaults.
    A value may be a callable, called each time (a default read from the environment)."""

    def make() -> LossConfig:
        return LossConfig(**{k: v() if callable(v) else v for k, v in values.items()})

    return make


def nests_loss(cls: type) -> type:
    """Let a task config dataclass (with a ``loss: LossConfig`` field) also take the loss fields flat,
    as before they were nested: ``TrainConfig(style_weight=10)`` is
    ``TrainConfig(loss=LossConfig(<train's defaults>, style_weight=10))``; so does ``dataclasses.replace``."""
    init = cls.__init__
    factory = next(f.default_factory for f in dataclasses.fields(cls) if f.name == "loss")

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        flat = {k: kwargs.pop(k) for k in list(kwargs) if k in LOSS_FIELDS}
        if flat:
            loss = kwargs.get("loss")
            kwargs["loss"] = dataclasses.replace(loss if loss is not None else factory(), **flat)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def flat_json(config: Any) -> dict:
    """``config.to_json()`` with the nested loss fields at the top level (the layout of the configs
    recorded before LossConfig): for comparing a config with one recorded in either layout."""
    data = dict(config.to_json())
    data.update(data.pop("loss", {}))
    return data
