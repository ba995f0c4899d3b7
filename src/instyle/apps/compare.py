"""Side-by-side check of instyle's instance norm against torch's: accuracy against a
float64 oracle on the inputs where torch goes wrong, and speed on a few shapes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as torch_F

from instyle.engine.device import time_call
from instyle.functional import instance_norm, select_backend


@dataclass
class AccuracyRow:
    case: str
    torch_error: float  # max |torch - float64 oracle|
    instyle_error: float  # max |instyle - float64 oracle|


@dataclass
class SpeedRow:
    shape: tuple[int, ...]
    layout: str
    backend: str
    torch_ms: float
    instyle_ms: float


def _max_error(y: torch.Tensor, oracle: torch.Tensor) -> float:
    if y.numel() == 0:
        return 0.0
    return float((y.double() - oracle).abs().nan_to_num(float("inf")).max())


def accuracy_rows(seed: int = 0) -> list[AccuracyRow]:
    g = torch.Generator().manual_seed(seed)
    shape = (2, 4, 32, 32)
    cases = {
        "randn fp32": torch.randn(shape, generator=g),
        "1e3 + randn fp32": 1e3 + torch.randn(shape, generator=g),
        "1e4 + randn fp32": 1e4 + torch.randn(shape, generator=g),
        "200 +- 50 fp16": (200 + 50 * torch.randn(shape, generator=g)).half(),
        "1e19 * randn fp32": 1e19 * torch.randn(shape, generator=g),
    }
    rows = []
    for case, x in cases.items():
        oracle = instance_norm(x.double(), backend="reference")
        rows.append(
            AccuracyRow(case, _max_error(torch_F.instance_norm(x), oracle), _max_error(instance_norm(x), oracle))
        )
    return rows


def speed_rows(shapes=((8, 64, 64, 64), (4, 32, 128, 128)), repeats: int = 10) -> list[SpeedRow]:
    rows = []
    for shape in shapes:
        for layout, fmt in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
            x = torch.randn(shape).contiguous(memory_format=fmt)
            rows.append(
                SpeedRow(
                    shape,
                    layout,
                    select_backend("auto", x),
                    1000 * time_call(lambda: torch_F.instance_norm(x), x.device, repeats),
                    1000 * time_call(lambda: instance_norm(x), x.device, repeats),
                )
            )
    return rows
