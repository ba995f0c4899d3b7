"""Benchmark instance norm: torch eager, torch.compile of the reference, instyle (backend="auto").

For each shape x dtype x layout it times forward and forward+backward, and reports ms,
effective GB/s (fwd: read x + write y = 8 bytes per fp32 element; fwd+bwd adds read x, dy
and write dx = 20 bytes; half that for bf16), the percentage of the device's copy rate
measured in the same run (x.copy_ of a large tensor, read + write), and the speed-up over
torch eager. Rows are appended to a CSV under benchmarks/results/ with device, versions,
thread count and date; on CUDA the "launch" column has the Triton launches tuned at the row's first
call (num_warps, programs per multiprocessor).

    python benchmarks/bench_instance_norm.py                 # everything (CPU: ~10-20 min on 2 cores)
    python benchmarks/bench_instance_norm.py --quick --no-compile
    python benchmarks/bench_instance_norm.py --shapes 8x64x256x256 --dtypes fp32 --layouts cl

CPU timings are medians of time.perf_counter over 7 to 25 repeats (fewer for big shapes); CUDA
timings use triton.testing.do_bench when triton is installed, else CUDA events.

Allocation is part of what a forward costs, and on a small VM first-touch page faults on a fresh
output can cost more than the kernel. The script leaves torch's allocator as a user gets it;
instyle's CPU backend puts outputs of 32 MiB and more in huge-page-advised memory itself.
`--thp` sets THP_MEM_ALLOC_ENABLE=1 (torch's own huge-page allocation, for every contender) to
compare with kernels on equal allocation terms; the CSV records the setting.
"""

from __future__ import annotations

import os
import sys

if "--thp" in sys.argv[1:]:  # torch's allocator reads this once, at its first allocation: before any import
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import instyle  # noqa: E402
from instyle.engine.device import describe_device  # noqa: E402
from instyle.functional import instance_norm, select_backend  # noqa: E402
from instyle.ops import choose  # noqa: E402
from instyle.ops.reference import instance_norm_reference  # noqa: E402

SHAPES = ((8, 64, 256, 256), (16, 128, 128, 128), (4, 32, 512, 512), (16, 512, 32, 32), (1, 64, 1024, 1024), (1, 32, 1024, 1024))
QUICK_SHAPES = ((8, 64, 128, 128), (16, 512, 32, 32))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LAYOUTS = ("nchw", "cl")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shapes: {text!r} is not like 8x64x256x256") from None
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shapes: {text!r} must be N x C x H x W with positive sizes")
    return shape


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", type=parse_shape, help="N x C x H x W, e.g. 8x64x256x256")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=list(DTYPES))
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument("--quick", action="store_true", help="two small shapes, fewer repeats")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    p.add_argument("--thp", action="store_true", help="THP_MEM_ALLOC_ENABLE=1: torch allocates in huge pages (all contenders; read before imports)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="CSV to append to (default: benchmarks/results/instance_norm_<device>.csv)")
    return p.parse_args(argv)


def versions() -> dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    return {"torch": torch.__version__, "triton": triton_version, "instyle": instyle.__version__}


def time_ms(fn, device: torch.device, budget_s: float) -> float:
    """Median milliseconds of fn(); repeats fit roughly into budget_s (7 to 25 of them)."""
    if device.type == "cuda":
        try:
            from triton.testing import do_bench

            return do_bench(fn, warmup=25, rep=max(25, int(budget_s * 1000)), return_mode="median")
        except ImportError:
            pass
        fn()
        torch.cuda.synchronize(device)
        times = []
        for _ in range(25):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    fn()  # warm-up (and first-touch of anything cached)
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    # at least 7: this VM stalls a call now and then for hundreds of ms, and a median of 3 caught some
    repeats = max(7, min(25, int(budget_s / max(first, 1e-6))))
    times = [first]
    for _ in range(repeats - 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def copy_gbps(device: torch.device) -> float:
    src = torch.randn(64 * 2**20, device=device)  # 256 MB
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, budget_s=1.0)
    return 2 * src.numel() * 4 / ms / 1e6


def contenders(no_compile: bool, device: torch.device):
    def torch_eager(x):
        return F.instance_norm(x)

    def instyle_auto(x):
        return instance_norm(x)

    yield "torch", torch_eager
    if not no_compile:

        def reference(x):
            return instance_norm_reference(x, None, None, None, None, True, 0.1, 1e-5)

        yield "compiled_reference", torch.compile(reference)
    yield "instyle", instyle_auto
    if device.type == "cuda":  # what auto weighs against torch, forced (auto's choice is its own row)
        yield "instyle[triton]", lambda x: instance_norm(x, backend="triton")


def tuned_launches(before: set) -> str:
    """The Triton launches tuned since ``before`` (a set of choose.choices() keys), as
    "fwd:w8/p1 bwd:w4/p0" (num_warps, programs per SM; p0: one program per tile)."""
    tuned = [(key[1], choice) for key, (choice, _) in choose.choices().items()
             if key not in before and key[0] == "triton-launch"]  # fmt: skip
    return " ".join(f"{kind}:w{launch.num_warps}/p{launch.programs_per_sm}" for kind, launch in tuned)


def append_rows(out: Path, rows: list[dict]) -> None:
    """Append ``rows`` to the CSV ``out``, rewriting it under the wider header when columns were added."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old: list[dict] = []
    fields = list(rows[0])
    if out.exists():
        with out.open(newline="") as f:
            reader = csv.DictReader(f)
            if list(reader.fieldnames or []) != fields:
                old = list(reader)
                fields += [name for name in reader.fieldnames or [] if name not in fields]
    mode = "w" if old or not out.exists() else "a"
    with out.open(mode, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        if mode == "w":
            writer.writeheader()
        writer.writerows(old + rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    budget_s = 0.3 if args.quick else 0.6
    torch._dynamo.config.cache_size_limit = 64  # one graph per shape x dtype x layout
    out = args.out or RESULTS / f"instance_norm_{device.type}.csv"
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": describe_device(device),
        **versions(),
        "threads": torch.get_num_threads(),
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
        # other processes on the machine skew CPU timings; recorded so readers can judge
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else "",
    }
    copy_rate = copy_gbps(device)
    meta["copy_gbps"] = round(copy_rate, 1)
    print(", ".join(f"{k}={v}" for k, v in meta.items()))
    header = f"{'shape':>18} {'dtype':>5} {'layout':>6} {'impl':>19} {'mode':>7} {'ms':>9} {'GB/s':>7} {'%copy':>6} {'vs torch':>8}"
    print(header)
    rows: list[dict] = []
    written = 0
    impls = list(contenders(args.no_compile, device))
    for shape in shapes:
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            for layout in args.layouts:
                x = torch.randn(shape, device=device, dtype=dtype)
                if layout == "cl":
                    x = x.contiguous(memory_format=torch.channels_last)
                dy = torch.randn_like(x)
                xg = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
                scale = x.element_size() / 4
                torch_ms = {}
                for mode, bytes_per in (("fwd", 8), ("fwd+bwd", 20)):
                    for name, fn in impls:
                        if mode == "fwd":

                            def run(fn=fn, x=x):
                                with torch.no_grad():
                                    return fn(x)

                        else:

                            def run(fn=fn, xg=xg, dy=dy):
                                xg.grad = None
                                fn(xg).backward(dy)

                        tuned_before = set(choose.choices())
                        ms = time_ms(run, device, budget_s)
                        launch = tuned_launches(tuned_before)
                        if name == "instyle":  # auto's choice for this call class (timed at its first call)
                            with torch.no_grad() if mode == "fwd" else contextlib.nullcontext():
                                backend = select_backend("auto", x if mode == "fwd" else xg)
                        if name == "torch":
                            torch_ms[mode] = ms
                        gbps = x.numel() * bytes_per * scale / ms / 1e6
                        row = {
                            **meta,
                            "shape": "x".join(map(str, shape)),
                            "dtype": dtype_name,
                            "layout": layout,
                            "impl": name if name != "instyle" else f"instyle[{backend}]",
                            "mode": mode,
                            "ms": round(ms, 3),
                            "gbps": round(gbps, 2),
                            "pct_copy": round(100 * gbps / copy_rate, 1),
                            "speedup_vs_torch": round(torch_ms[mode] / ms, 2),
                            "launch": launch,
                        }
                        rows.append(row)
                        print(
                            f"{row['shape']:>18} {dtype_name:>5} {layout:>6} {row['impl']:>19} {mode:>7} "
                            f"{ms:9.2f} {gbps:7.1f} {row['pct_copy']:6.1f} {row['speedup_vs_torch']:7.2f}x {launch}",
                            flush=True,
                        )
                del x, dy, xg, run  # free this shape's tensors before the next
                append_rows(out, rows[written:])  # as it goes: a run cut off at its limit keeps what it measured
                written = len(rows)
    print(f"appended {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
