"""The backend registry of :func:`instyle.functional.instance_norm`.

A backend is a function with ``instance_norm_reference``'s arguments and a ``supports``
predicate. ``reference`` is always registered; the fused backends (``cpu``, ``triton``)
register themselves when their module imports, which happens on the first call of
:func:`select_backend`, so that ``import instyle`` stays as light as torch and a missing
optional dependency (triton, say) only removes its backend.
"""

from __future__ import annotations

import importlib
from typing import Callable, NamedTuple

from torch import Tensor

from instyle.ops.reference import instance_norm_reference

__all__ = [
    "Backend",
    "register_backend",
    "available_backends",
    "select_backend",
    "get_backend",
    "load_optional_backends",
    "AUTO_ORDER",
]


class Backend(NamedTuple):
    fn: Callable[..., Tensor]
    # supports(input, activation, residual) -> bool: whether the backend handles this call.
    supports: Callable[..., bool]


_BACKENDS: dict[str, Backend] = {}
# Preference order of backend="auto" per device type; names not registered are skipped.
# A mutable dict on purpose: a benchmark may pin a device to the reference by editing it.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "reference"),
    "cpu": ("cpu", "reference"),
}
# Modules that register a backend on import; a missing optional dependency skips one.
OPTIONAL_BACKENDS = ("instyle.ops.cpu", "instyle.ops.triton.instance_norm")


def _always(*args, **kwargs) -> bool:
    return True


def register_backend(name: str, fn: Callable[..., Tensor], supports: Callable[..., bool] | None = None) -> None:
    """Make ``fn`` (same arguments as ``instance_norm_reference``) selectable as ``backend=name``."""
    _BACKENDS[name] = Backend(fn, supports or _always)


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The registered backend ``name`` (a name :func:`select_backend` returned)."""
    return _BACKENDS[name]


register_backend("reference", instance_norm_reference)


def select_backend(name: str, input: Tensor, activation: str | None = None, residual: Tensor | None = None) -> str:
    """Resolve ``backend`` (a name or "auto") to the registered backend that runs this call."""
    load_optional_backends()
    if name == "auto":
        for candidate in AUTO_ORDER.get(input.device.type, ()) + ("reference",):
            backend = _BACKENDS.get(candidate)
            if backend is not None and backend.supports(input, activation, residual):
                return candidate
        return "reference"
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
