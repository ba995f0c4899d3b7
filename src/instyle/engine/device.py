"""Device and dtype choices shared by training, optimisation and stylization."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``--device``: auto (CUDA when there is one), cpu, cuda or cuda:N, checked against this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--dtype`` (None: plain fp32)."""
    table = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16}
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" or cpu_has_fast_bf16() else None
    if name not in table:
        raise ValueError(f"--dtype must be one of auto, fp32, bf16, fp16; got {name!r}")
    return table[name]


def resolve_inference_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The dtype a generator's forward runs in for ``--dtype`` at inference. ``auto``: bf16 on CPUs
    with native bf16, fp32 (TF32 convolutions) on CUDA, where TransformerNet ran fastest in fp32:
    1024 px on an H100, bundled architecture, 4.5 ms fp32 against 6.9 ms bf16 and 8.8 ms fp16
    (benchmarks/gpu_variants.py, 2026-11-26)."""
    if name == "auto" and device.type == "cuda":
        return None
    return resolve_autocast_dtype(name, device)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively here (AVX512-BF16 or AMX)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe())


def preferred_memory_format(device: torch.device, autocast: torch.dtype | None) -> torch.memory_format:
    """channels_last on CPUs in bf16 (what oneDNN's fast convolutions want), else NCHW. On CUDA,
    channels_last made TransformerNet 1.3 to 2.8x slower than NCHW in fp32, bf16 and fp16 alike,
    torch's own modules included (reflection padding, 9x9 convolutions of 3 channels; H100,
    benchmarks/gpu_variants.py and bench_stylize.py, 2026-11-26)."""
    if device.type == "cpu" and autocast is not None:
        return torch.channels_last
    return torch.contiguous_format


def loss_memory_format(device: torch.device, autocast: torch.dtype | None) -> torch.memory_format:
    """The loss network's (VGG-16's) layout: channels_last wherever it computes in 16 bits. On CUDA,
    cuDNN's bf16 convolutions work in NHWC, and NCHW features cost a conversion into and out of every
    convolution (13 % of a training step's GPU time on an H100, benchmarks/gpu_variants.py,
    2026-11-26); the small generator keeps :func:`preferred_memory_format`."""
    if autocast is not None:
        return torch.channels_last
    return torch.contiguous_format
