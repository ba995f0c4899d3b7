"""Instance-norm implementations and their registry (:mod:`instyle.ops.registry`).

``reference`` (pure torch) is always there; the fused backends ``cpu`` (C++ kernels) and
``triton`` register themselves when their module imports, on the first backend selection.
"""
