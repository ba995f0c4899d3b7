"""Why does instyle's CPU forward + backward scatter from run to run at 4x32x32x32 NCHW, where torch's
holds steady? (docs/performance.md, "CPU eager dispatch")

Rounds of calls of an affine InstanceNorm2d, instyle and torch interleaved in one process, run twice:
with glibc's defaults, and with its mmap and trim thresholds pinned (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``), so that freed 512 KB buffers stay in the heap instead of being
returned and faulted back in. Each round's microseconds per call go to
benchmarks/results/cpu_scatter.csv with device, versions and date.

    python benchmarks/probe_cpu_scatter.py              # about a minute on 2 cores
    python benchmarks/probe_cpu_scatter.py --rounds 30 --calls 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

SHAPE = (4, 32, 32, 32)
PINNED = {"MALLOC_MMAP_THRESHOLD_": "67108864", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def rounds(count: int, calls: int) -> dict[str, list[float]]:
    """Per round, microseconds per forward + backward call of each contender, interleaved."""
    import torch

    from instyle.nn import InstanceNorm2d

    x = torch.randn(SHAPE, requires_grad=True)
    modules = {"instyle": InstanceNorm2d(SHAPE[1], affine=True), "torch": torch.nn.InstanceNorm2d(SHAPE[1], affine=True)}

    def per_call(m, n):
        start = time.perf_counter()
        for _ in range(n):
            m(x).sum().backward()
        return (time.perf_counter() - start) / n * 1e6

    for m in modules.values():
        per_call(m, 50)
    out = {name: [] for name in modules}
    for _ in range(count):
        for name, m in modules.items():
            out[name].append(round(per_call(m, calls), 1))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one allocator setting, in a process of its own (glibc reads them at start-up)
        print(json.dumps(rounds(args.rounds, args.calls)))
        return 0
    import torch

    from common import RESULTS, append_csv, provenance

    rows, info = [], provenance(torch.device("cpu"))
    for setting, env in (("glibc defaults", {}), ("mmap/trim pinned", PINNED)):
        child = [sys.executable, __file__, "--child", "--rounds", str(args.rounds), "--calls", str(args.calls)]
        done = subprocess.run(child, env={**os.environ, **env}, capture_output=True, text=True, check=True)
        for contender, times in json.loads(done.stdout.splitlines()[-1]).items():
            print(f"{setting:>16} {contender:>8}: {times}")
            rows += [{**info, "shape": "x".join(map(str, SHAPE)), "malloc": setting, "contender": contender,
                      "round": i, "us_per_call": t} for i, t in enumerate(times)]  # fmt: skip
    print(append_csv(RESULTS / "cpu_scatter.csv", rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
