"""Peak memory and time of tiled vs untiled TransformerNet inference, written as CSV.

Each (size, mode) runs in a fresh subprocess, because a process's peak RSS
(``resource.getrusage().ru_maxrss``) only ever grows; ``setup_rss_mb`` is the RSS after
building the model and the image, before inference, so ``peak - setup`` is the inference's
own working set (image and output included in both). tracemalloc is not used: it sees
Python's allocations, not torch's. On CUDA the peak of ``torch.cuda.max_memory_allocated``
is reported too. ``--check`` also runs both paths in one process and reports the largest
difference between them.

    python benchmarks/bench_tiling.py --sizes 512 1024 --max-untiled 1024
    python benchmarks/bench_tiling.py --check 2048 --width 1.0
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

FIELDS = [
    "date", "device", "device_name", "python", "torch", "instyle", "threads", "size", "mode", "tile",
    "overlap", "halo", "width", "num_residual", "seconds", "setup_rss_mb", "peak_rss_mb", "cuda_peak_mb",
    "max_abs_diff",
]  # fmt: skip


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def setup(args):
    import torch

    from instyle.engine.models import TransformerNet

    torch.manual_seed(0)
    model = TransformerNet(width=args.width, num_residual=args.num_residual).to(args.device).eval()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, args.size, args.size, generator=g).to(args.device)
    return model, image


def run_one(args, model, image, mode: str):
    import torch

    from instyle.engine.inference.tiling import stylize_tiled

    if mode == "untiled":
        with torch.no_grad():
            return model(image)
    return stylize_tiled(model, image, tile=args.tile, overlap=args.overlap, halo=args.halo)


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    model, image = setup(args)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    setup_rss = current_rss_mb()
    start = time.perf_counter()
    if args.mode == "check":
        tiled = run_one(args, model, image, "tiled")
        untiled = run_one(args, model, image, "untiled")
        diff = (tiled.float() - untiled.float()).abs().max().item()
    else:
        run_one(args, model, image, args.mode)
        diff = ""
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "setup_rss_mb": round(setup_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else "",
        "max_abs_diff": diff,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--max-untiled", type=int, default=2048, help="skip untiled runs above this size")
    parser.add_argument("--check", type=int, nargs="*", default=[], help="sizes at which to compare tiled vs untiled")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--halo", type=int, default=None)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--num-residual", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tiling.csv")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import torch

    import instyle
    from instyle.engine.device import describe_device
    from instyle.engine.models import TransformerNet
    from instyle.engine.inference.tiling import tile_halo

    halo = tile_halo(TransformerNet(width=args.width, num_residual=args.num_residual)) if args.halo is None else args.halo
    jobs = [(s, m) for s in args.sizes for m in ("tiled", "untiled") if m == "tiled" or s <= args.max_untiled]
    jobs += [(s, "check") for s in args.check]
    common = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "device_name": describe_device(args.device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "instyle": instyle.__version__,
        "threads": args.threads,
        "tile": args.tile,
        "overlap": args.overlap,
        "halo": halo,
        "width": args.width,
        "num_residual": args.num_residual,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not args.out.exists()
    with args.out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for size, mode in jobs:
            cmd = [sys.executable, __file__, "--worker", "--size", str(size), "--mode", mode]
            for name in ("tile", "overlap", "width", "num_residual", "device", "threads"):
                cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            if args.halo is not None:
                cmd += ["--halo", str(args.halo)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{size} {mode}: failed\n{done.stderr}", file=sys.stderr)
                continue
            row = {**common, "size": size, "mode": mode, **json.loads(done.stdout.strip().splitlines()[-1])}
            writer.writerow(row)
            f.flush()
            print(", ".join(f"{k}={row[k]}" for k in ("size", "mode", "seconds", "setup_rss_mb", "peak_rss_mb",
                                                       "cuda_peak_mb", "max_abs_diff")))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
