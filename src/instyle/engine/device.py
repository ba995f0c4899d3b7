"""Devices, precisions and memory layouts: resolved once per task, in one place.

``DeviceConfig.resolve(device, dtype, purpose)`` turns the user's words ("auto", "cuda:1", "bf16")
into the torch objects a task computes with: the device, the autocast dtype (None: plain fp32)
and the memory formats of the generator and of the loss network. The measurements behind each
choice are in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch

__all__ = [
    "DEVICES_HELP",
    "DTYPES",
    "DeviceConfig",
    "cpu_has_fast_bf16",
    "describe_device",
    "resolve_device",
    "synchronize",
    "time_call",
]

# The precisions a user can name; "auto" picks per device and purpose (DeviceConfig.resolve).
DTYPES = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16}
_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
DEVICES_HELP = "auto (CUDA, else MPS, else the CPU), cpu, cuda, cuda:N or mps"
Purpose = Literal["train", "inference"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """``device``: auto (CUDA, else MPS, else the CPU), cpu, cuda, cuda:N or mps, checked against this
    machine. Raises ValueError naming the value."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r}: expected {DEVICES_HELP}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"device {name!r}: MPS (Apple GPU) is not available on this machine")
    return device


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively here (AVX512-BF16 or AMX)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe())


def _autocast_dtype(name: str, device: torch.device, purpose: Purpose) -> torch.dtype | None:
    if name not in DTYPES and name not in _AUTOCAST:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {name!r}")
    if name != "auto":
        return _AUTOCAST[name]
    if device.type == "cuda":
        # Inference: TransformerNet runs fastest in fp32 (TF32) on CUDA (docs/performance.md).
        return None if purpose == "inference" else torch.bfloat16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return None  # MPS: fp32 until measured


@dataclass(frozen=True)
class DeviceConfig:
    """Where a task computes and in what precision and layout.

    - ``autocast``: the dtype of autocast (training, optimisation) or of the generator's copy
      (inference); None for plain fp32.
    - ``memory_format``: the generator's and the images' layout: channels_last on CPUs in 16 bits
      (oneDNN's fast convolutions), NCHW elsewhere (channels_last was slower on CUDA).
    - ``loss_memory_format``: the loss network's layout: channels_last wherever it computes in
      16 bits (cuDNN's bf16 convolutions work in NHWC).
    """

    device: torch.device
    autocast: torch.dtype | None
    memory_format: torch.memory_format
    loss_memory_format: torch.memory_format

    @classmethod
    def resolve(cls, device: str = "auto", dtype: str = "auto", purpose: Purpose = "train") -> DeviceConfig:
        """Resolve the user's ``device`` and ``dtype`` words once (ValueError names a bad one)."""
        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        autocast = _autocast_dtype(dtype, dev, purpose)
        channels_last = autocast is not None and dev.type == "cpu"
        generator_format = torch.channels_last if channels_last else torch.contiguous_format
        loss_format = torch.channels_last if autocast is not None else torch.contiguous_format
        return cls(dev, autocast, generator_format, loss_format)

    @property
    def precision(self) -> str:
        """The resolved precision by name (fp32, bf16, fp16), for logs and metadata."""
        return _NAMES[self.autocast]

    def autocast_context(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in this precision (a no-op context for fp32)."""
        return torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None, cache_enabled=cache)

    def describe(self) -> str:
        return f"{describe_device(self.device)}, {self.precision}"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a clock reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_call(fn: Callable[[], object], device: torch.device, repeats: int = 10, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` ones, the device synchronized
    around each: the one timer of the package and its benchmarks."""
    times = []
    for i in range(warmup + repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device | str) -> str:
    """The device in words for reports and benchmark CSVs: the GPU's name, or the CPU's model with
    its core count and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps: Apple GPU"
    return f"cpu: {_cpu_model()}, {os.cpu_count()} cores, torch using {torch.get_num_threads()} threads"
