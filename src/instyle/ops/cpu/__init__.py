"""The "cpu" backend of :func:`instyle.functional.instance_norm` (registered on import)."""

from instyle.ops.cpu.instance_norm import instance_norm_cpu, supports
from instyle.ops.registry import register_backend

register_backend("cpu", instance_norm_cpu, supports)

__all__ = ["instance_norm_cpu", "supports"]
