"""The precision rules every loss term shares: statistics and losses in at least fp32, outside autocast."""

from __future__ import annotations

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


def no_autocast(tensor: torch.Tensor):
    """Autocast off on ``tensor``'s device: the losses pick their own precision."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 unchanged."""
    return tensor.float() if tensor.dtype in HALF_DTYPES else tensor
