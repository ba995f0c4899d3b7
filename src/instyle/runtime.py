"""Device and dtype choices shared by training, optimisation and stylization."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def resolve_autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--dtype`` (None: plain fp32)."""
    table = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16}
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" or cpu_has_fast_bf16() else None
    if name not in table:
        raise ValueError(f"--dtype must be one of auto, fp32, bf16, fp16; got {name!r}")
    return table[name]


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively here (AVX512-BF16 or AMX)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe())


def preferred_memory_format(device: torch.device, autocast: torch.dtype | None) -> torch.memory_format:
    """channels_last is what cuDNN's and oneDNN's fast (bf16) convolutions want."""
    if device.type == "cuda" or autocast is not None:
        return torch.channels_last
    return torch.contiguous_format
