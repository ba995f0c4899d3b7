"""Where the CPU kernels should stop waking every thread: instyle's cpu backend on one thread against
all of torch's threads, by call size, with torch's instance norm in the same run.

The backend runs calls below ``PARALLEL_MIN_ELEMENTS`` on one thread (the kernels' bits do not
depend on the thread count). This script sets that bound to 0 (every call on all threads) and to
infinity (every call on one thread) in turn, interleaved with torch eager, and reports microseconds
per call (median of rounds, each round many calls) for the forward without grad and forward +
backward of an affine ``InstanceNorm2d``. Rows go to benchmarks/results/cpu_threads.csv.

    python benchmarks/bench_cpu_threads.py            # about 2 minutes on 2 cores
    python benchmarks/bench_cpu_threads.py --busy 1   # with one busy process beside it (a data loader, say)
    python benchmarks/bench_cpu_threads.py --rounds 3 --shapes 2x8x32x32
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from instyle.nn import InstanceNorm2d
from instyle.ops.cpu import instance_norm as cpu_backend

sys.path.insert(0, str(Path(__file__).parent))
from bench_instance_norm import parse_shape  # noqa: E402
from common import RESULTS, append_csv, provenance  # noqa: E402

SHAPES = ((1, 4, 32, 32), (2, 8, 32, 32), (2, 8, 32, 64), (2, 8, 64, 64), (4, 32, 32, 32), (4, 16, 64, 64),
          (8, 64, 64, 64))  # fmt: skip
LAYOUTS = ("nchw", "cl")


def per_call_us(fn, budget_s: float) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget_s or calls < 3:
        fn()
        calls += 1
    return elapsed / calls * 1e6


@contextlib.contextmanager
def busy_neighbours(count: int):
    """``count`` processes spinning on the CPU for the duration: cores shared as a training job shares
    them with its data-loader workers."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def contenders(shape, layout):
    x = torch.randn(shape)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    xg = x.clone().requires_grad_(True)
    ours, theirs = InstanceNorm2d(shape[1], affine=True), torch.nn.InstanceNorm2d(shape[1], affine=True)

    def bounded(bound, fn):
        def run():
            cpu_backend.PARALLEL_MIN_ELEMENTS = bound
            fn()
        return run

    def fwd(m):
        def run():
            with torch.no_grad():
                m(x)
        return run

    def train(m):
        return lambda: m(xg).sum().backward()

    return {
        ("fwd", "instyle_all_threads"): bounded(0, fwd(ours)),
        ("fwd", "instyle_one_thread"): bounded(float("inf"), fwd(ours)),
        ("fwd", "torch"): fwd(theirs),
        ("fwd+bwd", "instyle_all_threads"): bounded(0, train(ours)),
        ("fwd+bwd", "instyle_one_thread"): bounded(float("inf"), train(ours)),
        ("fwd+bwd", "torch"): train(theirs),
    }


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def positive(text: str) -> int:
    if count(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def measure(shapes, rounds: int, budget: float, info: dict) -> list[dict]:
    rows = []
    for shape in shapes:
        for layout in LAYOUTS:
            runs = contenders(shape, layout)
            times = {key: [] for key in runs}
            for _ in range(rounds):
                for key, fn in runs.items():
                    times[key].append(per_call_us(fn, budget))
            for (direction, who), values in times.items():
                us = statistics.median(values)
                rows.append({**info, "shape": "x".join(map(str, shape)), "elements": torch.Size(shape).numel(),
                             "layout": layout, "direction": direction, "contender": who, "us_per_call": round(us, 1)})
                print(f"{rows[-1]['shape']:>12} {layout:>4} {direction:>7} {who:>20} {us:9.1f} us")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", type=parse_shape, help="NxCxHxW; default: seven from 4K to 2M elements")
    parser.add_argument("--rounds", type=positive, default=7, help="interleaved rounds; the median is reported")
    parser.add_argument("--budget", type=float, default=0.15, help="seconds of calls per contender per round")
    parser.add_argument("--busy", type=count, default=0, metavar="N", help="busy processes running beside the benchmark")
    parser.add_argument("--csv", default="cpu_threads.csv", help="file name under benchmarks/results/, or a path")
    args = parser.parse_args(argv)
    shapes = args.shapes or SHAPES
    info = {**provenance(torch.device("cpu")), "threads": torch.get_num_threads(), "busy": args.busy}
    saved = cpu_backend.PARALLEL_MIN_ELEMENTS
    try:
        with busy_neighbours(args.busy):
            rows = measure(shapes, args.rounds, args.budget, info)
    finally:
        cpu_backend.PARALLEL_MIN_ELEMENTS = saved
    print(append_csv(RESULTS / args.csv, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
