"""Instance-norm implementations and their registry (:mod:`instyle.ops.registry`).

``reference`` (pure torch) is always there; the fused backends ``cpu`` (C++ kernels) and
``triton`` register themselves when their module imports, on the first backend selection.
"""

from instyle.ops.registry import load_optional_backends as load_backends

__all__ = ["load_backends"]
