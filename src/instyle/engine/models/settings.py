"""What a generator's stored settings may be, and the state dict they imply, without building it.

A model file's config is untrusted input: building the network it describes before looking at the
weights lets a 1 KB file ask for gigabytes. Each generator lists its settings (:class:`Setting`:
type and bounds, checked by its constructor too, so that no generator is built that a model file
could not describe) and derives from them the names, shapes and kinds of its state-dict entries
(:class:`Entry`) with :func:`conv_state` and :func:`norm_state`; a loader compares those with the
file's header before reading a tensor. ``tests/test_models.py`` checks the derived state against
real modules for every architecture and norm, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

__all__ = [
    "CONDITIONAL", "Setting", "Entry", "NORM_STATE", "check_norm", "check_settings", "conv_state", "norm_state", "shown",
]


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: a stored value may be any size."""
    if isinstance(value, int) and not -(10**limit) < value < 10**limit:
        return f"an integer of more than {limit} digits"  # repr() of a huge one may even raise
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Setting:
    """One numeric constructor keyword of a generator: ``int`` or ``float`` (which accepts an
    integer too), within ``[low, high]``."""

    name: str
    kind: type
    low: float
    high: float

    def check(self, value: Any, prefix: str = "") -> None:
        """ValueError naming the setting (after ``prefix``) unless ``value`` is a number of the right
        kind in bounds."""
        kinds = (int,) if self.kind is int else (int, float)
        noun = "an integer" if self.kind is int else "a number"
        # the bounds refuse NaN and inf too; comparing (not converting) keeps huge JSON integers harmless
        ok = not isinstance(value, bool) and isinstance(value, kinds) and self.low <= value <= self.high
        if not ok:
            raise ValueError(f"{prefix}{self.name} must be {noun} from {self.low:g} to {self.high:g}, got {shown(value)}")


def check_settings(settings: tuple[Setting, ...], values: Mapping[str, Any], prefix: str = "") -> None:
    """Check each of ``settings`` in ``values`` (a constructor's keywords); errors name them after
    ``prefix`` (a model file's errors say ``config.width``: the setting, not a command-line flag)."""
    for setting in settings:
        setting.check(values[setting.name], prefix)


class Entry(NamedTuple):
    """One state-dict entry: its shape, and whether it holds floating-point values (else integers)."""

    shape: tuple[int, ...]
    floating: bool = True


# The state of each norm a model file may name, per channel count C (``instyle.nn.make_norm``'s
# layers with their default options). Norms registered at run time are not here: a model file
# describes a network any instyle can rebuild.
_AFFINE = {"weight": Entry((-1,)), "bias": Entry((-1,))}
NORM_STATE: dict[str, dict[str, Entry]] = {
    "instance": _AFFINE,
    "batch": {**_AFFINE, "running_mean": Entry((-1,)), "running_var": Entry((-1,)), "num_batches_tracked": Entry((), False)},
    "group": _AFFINE,
    "layer": _AFFINE,
    "none": {},
}


# Conditional instance norm (``instyle.nn.ConditionalInstanceNorm2d``): one (gamma, beta) row per style,
# weight and bias (num_styles, C). Only a generator that takes a style (TransformerNet) may name it.
CONDITIONAL = "conditional_instance"


def check_norm(norm: Any, prefix: str = "", extra: tuple[str, ...] = ()) -> None:
    """ValueError naming the setting unless ``norm`` is one a model file may name (or one of ``extra``)."""
    names = (*NORM_STATE, *extra)
    if not isinstance(norm, str) or norm not in names:
        raise ValueError(f"{prefix}norm must be one of {', '.join(names)}, got {shown(norm)}")


def norm_state(prefix: str, norm: str, channels: int, num_styles: int | None = None) -> dict[str, Entry]:
    """The entries of ``make_norm(norm, channels)`` stored under ``prefix``; conditional instance norm's
    rows (``num_styles``, C)."""
    if norm == CONDITIONAL:
        return {f"{prefix}.weight": Entry((num_styles, channels)), f"{prefix}.bias": Entry((num_styles, channels))}
    return {
        f"{prefix}.{name}": Entry(tuple(channels if d == -1 else d for d in entry.shape), entry.floating)
        for name, entry in NORM_STATE[norm].items()
    }


def conv_state(
    prefix: str, in_channels: int, out_channels: int, kernel: int, norm: str, num_styles: int | None = None
) -> dict[str, Entry]:
    """The entries of a ``ConvNormAct`` under ``prefix``: the conv has a bias only without a norm."""
    state = {f"{prefix}.conv.weight": Entry((out_channels, in_channels, kernel, kernel))}
    if norm == "none":
        state[f"{prefix}.conv.bias"] = Entry((out_channels,))
    state.update(norm_state(f"{prefix}.norm_act.norm", norm, out_channels, num_styles))
    return state
