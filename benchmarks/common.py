"""Provenance shared by the benchmark scripts: device, versions, date, appended to a CSV."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from instyle.engine.device import DeviceConfig, describe_device

RESULTS = Path(__file__).parent / "results"


def provenance(device: torch.device) -> dict[str, str]:
    import instyle

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return {
        "date": datetime.date.today().isoformat(),
        "device": describe_device(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "instyle": instyle.__version__,
        "python": platform.python_version(),
    }


def append_csv(path: Path, rows: list[dict]) -> Path:
    """Append rows to ``path``, writing a header for a new file; the columns are every key of the rows
    (blank where a row lacks one). A file whose header lacks some of them is rewritten with them added."""
    if not rows:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    if path.exists() and os.path.getsize(path) > 0:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            old_fields, old_rows = list(reader.fieldnames or []), list(reader)
        merged = old_fields + [k for k in fields if k not in old_fields]
        if merged != old_fields:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=merged, restval="")
                writer.writeheader()
                writer.writerows(old_rows + rows)
            return path
        fields = old_fields
    new = not path.exists() or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return path


def register_torch_baseline_norm() -> str:
    """Register stock ``torch.nn.InstanceNorm2d`` (affine) as the norm "torch_instance", the baselines'
    normalization, and return that name."""
    from instyle.nn import register_norm

    register_norm("torch_instance", lambda c, **kw: torch.nn.InstanceNorm2d(c, affine=True, **kw))
    return "torch_instance"


def profile_training(config, warmup: int, title: str, path: Path, keys=("self_device_time_total", "self_cuda_time_total")) -> str:
    """Train ``config`` (its iterations: ``warmup`` steps, then the profiled ones) under ``torch.profiler``
    from step ``warmup`` on, and write the kernel tables sorted by each of ``keys`` to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    from instyle.engine.training import train

    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def start(step, _losses) -> None:
        if step == warmup:
            sync()
            prof.__enter__()

    train(config, on_step=start, handle_signals=False)
    sync()
    prof.__exit__(None, None, None)
    averages = prof.key_averages()
    text = [title]
    for key in keys:
        try:
            text += [f"\n## sorted by {key}", averages.table(sort_by=key, row_limit=30, max_name_column_width=70)]
        except Exception as exc:  # the key's name changed across torch versions
            text += [f"\n## sorted by {key}: {exc}"]
    path.write_text("\n".join(text))
    return "\n".join(text)


def cuda_sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` (CUDA synchronized around each)."""
    for _ in range(warmup):
        fn()
    cuda_sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        cuda_sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def layout_override(generator: torch.memory_format | None = None, loss: torch.memory_format | None = None):
    """Inside the block every DeviceConfig the product resolves puts the generator (and the images)
    and/or the loss network in the given memory formats instead of its own choice: the layouts the
    product did not pick, measured with its own loop."""
    original = DeviceConfig.__dict__["resolve"]

    def resolve(cls, *args, **kwargs):
        config = original.__func__(cls, *args, **kwargs)
        changes = {"memory_format": generator, "loss_memory_format": loss}
        return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})

    DeviceConfig.resolve = classmethod(resolve)
    try:
        yield
    finally:
        DeviceConfig.resolve = original
