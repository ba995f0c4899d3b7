"""The "native" backend: ``torch.nn.functional.instance_norm`` followed by the residual add and the
ReLU as separate ops, the baseline ``backend="auto"`` weighs the fused kernels against on CUDA
(:mod:`instyle.ops.choose`). It has torch's numerics, including where they are wrong (planes near
fp32's largest value, shifted means in fp16): the ``reference``, ``cpu`` and ``triton`` backends are
the exact ones, and ``auto`` only picks this one where it is measured faster.
"""

from __future__ import annotations

import torch
from torch import Tensor

from instyle.ops.registry import register_backend

__all__ = ["instance_norm_native"]


def instance_norm_native(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_input_stats: bool,
    momentum: float,
    eps: float,
    activation: str | None = None,
    residual: Tensor | None = None,
) -> Tensor:
    """torch's instance norm, + residual, then ReLU; the output in the input's memory format (torch
    returns channels_last inputs contiguous)."""
    y = torch.nn.functional.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
    if residual is not None:
        y = y + residual
    if activation == "relu":
        y = torch.relu(y)
    if input.dim() in (4, 5) and not input.is_contiguous():
        layout = torch.channels_last if input.dim() == 4 else torch.channels_last_3d
        if input.is_contiguous(memory_format=layout):
            y = y.contiguous(memory_format=layout)
    return y


def supports(input: Tensor, activation: str | None = None, residual: Tensor | None = None) -> bool:
    return input.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) and (
        residual is None or residual.device == input.device
    )


register_backend("native", instance_norm_native, supports)
