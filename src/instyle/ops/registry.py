"""The backend registry of :func:`instyle.functional.instance_norm`.

A backend is a function with ``instance_norm_reference``'s arguments and a ``supports``
predicate. ``reference`` is always registered; the fused backends (``cpu``, ``triton``) and
``native`` (torch's own) register themselves when their module imports, which happens on the
first call of :func:`select_backend`, so that ``import instyle`` stays as light as torch and a
missing optional dependency (triton, say) only removes its backend.

``backend="auto"`` takes ``INSTYLE_BACKEND`` when it is set; else, on a device type with timed
candidates (:data:`instyle.ops.choose.TIMED`: CUDA), the fastest of them for calls like this one;
else the first backend of :data:`AUTO_ORDER` that supports the call.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable, NamedTuple

from torch import Tensor

from instyle.ops import choose
from instyle.ops.reference import instance_norm_reference

__all__ = [
    "Backend",
    "register_backend",
    "available_backends",
    "select_backend",
    "get_backend",
    "load_optional_backends",
    "AUTO_ORDER",
    "forced_backend",
]


class Backend(NamedTuple):
    fn: Callable[..., Tensor]
    # supports(input, activation, residual) -> bool: whether the backend handles this call.
    supports: Callable[..., bool]


_BACKENDS: dict[str, Backend] = {}
_version = 0  # bumped by each registration: the cached candidates below are remade
# Preference order of backend="auto" per device type; names not registered are skipped.
# A mutable dict on purpose: a benchmark may pin a device to the reference by editing it.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "reference"),
    "cpu": ("cpu", "reference"),
}
# Modules that register a backend on import; a missing optional dependency skips one.
OPTIONAL_BACKENDS = ("instyle.ops.native", "instyle.ops.cpu", "instyle.ops.triton.instance_norm")
FORCE_VARIABLE = "INSTYLE_BACKEND"


def _always(*args, **kwargs) -> bool:
    return True


def register_backend(name: str, fn: Callable[..., Tensor], supports: Callable[..., bool] | None = None) -> None:
    """Make ``fn`` (same arguments as ``instance_norm_reference``) selectable as ``backend=name``."""
    global _version
    _BACKENDS[name] = Backend(fn, supports or _always)
    _version += 1


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The registered backend ``name`` (a name :func:`select_backend` returned)."""
    return _BACKENDS[name]


register_backend("reference", instance_norm_reference)


def forced_backend() -> str | None:
    """The backend ``INSTYLE_BACKEND`` names for every ``backend="auto"`` call (None: unset or "auto")."""
    raw = os.environ.get(FORCE_VARIABLE)
    if raw is None:  # the common case, first: every eager call comes through here
        return None
    value = raw.strip()
    if not value or value == "auto":
        return None
    if value not in _BACKENDS:
        raise ValueError(f"{FORCE_VARIABLE}={value!r}: unknown backend; available: 'auto', " + ", ".join(map(repr, available_backends())))
    return value


# kind -> (what the names were made from: AUTO_ORDER's and TIMED's tuples, the registry and its
# version; the names): made once per device type, not per call (a benchmark that edits AUTO_ORDER,
# or a test that swaps the registry, gets fresh ones)
_CANDIDATES: dict[str, tuple] = {}


def _candidates(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the registered backends ``auto`` tries on ``kind`` in order, reference last; the timed ones)."""
    order, timed = AUTO_ORDER.get(kind, ()), choose.TIMED.get(kind, ())
    made = _CANDIDATES.get(kind)
    if made is None or made[0] is not order or made[1] is not timed or made[2] is not _BACKENDS or made[3] != _version:
        registered = lambda names: tuple(n for n in names if n in _BACKENDS)  # noqa: E731
        made = _CANDIDATES[kind] = (order, timed, _BACKENDS, _version, registered(order + ("reference",)), registered(timed))
    return made[4], made[5]


def _auto(input: Tensor, activation: str | None, residual: Tensor | None) -> str:
    ordered, timed = _candidates(input.device.type)
    if len(timed) > 1:  # CUDA: the fastest of the timed backends for calls like this one
        names = [n for n in timed if _BACKENDS[n].supports(input, activation, residual)]
        if len(names) > 1 and names[0] in ordered:
            return choose.choose(names, lambda name: _BACKENDS[name].fn, input, activation, residual)
    for name in ordered:
        if _BACKENDS[name].supports(input, activation, residual):
            return name
    return "reference"


def select_backend(name: str, input: Tensor, activation: str | None = None, residual: Tensor | None = None) -> str:
    """Resolve ``backend`` (a name or "auto") to the registered backend that runs this call."""
    load_optional_backends()
    if name == "auto":
        name = forced_backend() or "auto"
    if name == "auto":
        return _auto(input, activation, residual)
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: 'auto', " + ", ".join(map(repr, available_backends())))
    if not _BACKENDS[name].supports(input, activation, residual):
        raise ValueError(
            f"backend {name!r} does not support this input "
            f"(device={input.device.type}, dtype={input.dtype}, shape={tuple(input.shape)})"
        )
    return name


_optional_loaded = False


def load_optional_backends() -> None:
    """Import the fused backends once (they register themselves on import)."""
    global _optional_loaded
    if _optional_loaded:
        return
    _optional_loaded = True
    for module in OPTIONAL_BACKENDS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            # Only a missing optional dependency (or module) is skipped; real bugs raise.
            if error.name not in (module, "triton") and not module.startswith(error.name or "\0"):
                raise
