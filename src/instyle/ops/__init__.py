"""Instance-norm implementations. ``reference`` is always there; fused backends register
themselves with :func:`instyle.functional.register_backend` when their module imports."""

import importlib

# Modules that register a backend on import; a missing optional dependency skips one.
_OPTIONAL_BACKENDS = ("instyle.ops.cpu", "instyle.ops.triton.instance_norm")


def load_backends() -> None:
    for module in _OPTIONAL_BACKENDS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            # Only a missing optional dependency (or module) is skipped; real bugs raise.
            if error.name not in (module, "triton") and not module.startswith(error.name or "\0"):
                raise
