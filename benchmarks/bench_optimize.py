"""End-to-end time of `instyle optimize` (Gatys et al., L-BFGS on VGG features).

The baseline, measured in the same run, is the same optimisation in plain fp32 NCHW eager
mode; instyle's rows add channels_last and bf16 autocast where the device runs them fast.
Targets: GPU 512 px x 500 iterations <= 4 s; CPU (2 cores) 256 px x 100 iterations < 60 s.

    python benchmarks/bench_optimize.py [--size 256 --iterations 100] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

from instyle.engine.optimize import OptimizeConfig, optimize  # noqa: E402
from instyle.engine.device import resolve_device  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", default=str(SHARED / "content" / "chicago.jpg"))
    parser.add_argument("--style", default=str(SHARED / "styles" / "starry_night.jpg"))
    parser.add_argument("--size", type=int, default=None, help="default: 512 on GPU, 256 on CPU")
    parser.add_argument("--iterations", type=int, default=None, help="default: 500 on GPU, 100 on CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--out", default=str(RESULTS / "optimize.csv"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    size = args.size or (512 if device.type == "cuda" else 256)
    iterations = args.iterations or (500 if device.type == "cuda" else 100)
    info = provenance(device)
    rows = []
    print(f"{info['device']}, torch {info['torch']}: {size} px, {iterations} L-BFGS iterations")
    for dtype in args.dtypes:
        config = OptimizeConfig(size=size, iterations=iterations, device=str(device), dtype=dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = optimize(args.content, args.style, config)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        role = "baseline" if dtype == "fp32" else "instyle"
        print(
            f"{role:<9} {dtype:<5} {seconds:8.1f} s  content {result.final_losses['content']:.4g}"
            f"  style {result.final_losses['style']:.4g}  peak {peak:.2f} GiB"
        )
        rows.append(
            {**info, "role": role, "dtype": dtype, "size": size, "iterations": iterations,
             "seconds": round(seconds, 3), "final_content": result.final_losses["content"],
             "final_style": result.final_losses["style"], "peak_gib": peak}
        )  # fmt: skip
    base = rows[0]["seconds"]
    for row in rows[1:]:
        print(f"{row['dtype']}: {base / row['seconds']:.2f}x the fp32 baseline")
    print(f"appended {append_csv(Path(args.out), rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
