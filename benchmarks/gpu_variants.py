"""Where the GPU time goes: stylization precision/layout/cuDNN variants and a training-step profile.

The first GPU measurements (bench_stylize.py, bench_train.py on an H100, 2026-11-26) found bf16 and
channels_last slower than fp32 NCHW for TransformerNet, torch's own modules included, and a
training step bound by a fixed cost per step rather than by the batch. This script measures what
to change, on a CUDA device:

1. ``stylize``: TransformerNet forward at ``--sizes`` for the bundled architecture (width 0.375,
   3 blocks) and full width, torch eager baseline (``nn.InstanceNorm2d``, fp32 NCHW) in the same
   run; instyle's instance norm in fp32 / bf16 / fp16 (weights cast, no autocast), NCHW and
   channels_last, cuDNN heuristics and ``cudnn.benchmark``. Median of ``--repeats`` after warm-up.
2. ``train``: ``instyle.engine.training.train`` with the defaults at batch 4, 8 and 16 (images/s, median over
   the timed steps), then a ``torch.profiler`` table of a few batch-8 steps, by CUDA and CPU time.

Rows go to results/gpu_variants.csv (device, versions, date); the profile tables to
results/train_profile_<device>.txt.

    python benchmarks/gpu_variants.py --style starry.jpg
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    RESULTS, append_csv, layout_override, median_seconds, profile_training, provenance, register_torch_baseline_norm,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_fn(fn, repeats: int) -> float:
    return median_seconds(fn, repeats)


def stylize_rows(args, base: dict) -> list[dict]:
    from instyle.engine.models import TransformerNet

    register_torch_baseline_norm()
    rows = []
    for size in args.sizes:
        x = torch.rand(1, 3, size, size, device=args.device)
        cases = [("baseline", 1.0, 5, "torch_instance", "fp32", "nchw")]
        for width, blocks in ((0.375, 3), (1.0, 5)):
            for dtype in DTYPES:
                for layout in ("nchw", "cl"):
                    cases.append(("instyle", width, blocks, "instance", dtype, layout))
        for cudnn_benchmark in (False, True):
            torch.backends.cudnn.benchmark = cudnn_benchmark
            baseline = None
            for label, width, blocks, norm, dtype, layout in cases:
                torch.manual_seed(0)
                fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
                model = TransformerNet(width=width, num_residual=blocks, norm=norm).to(args.device).eval()
                model = model.to(DTYPES[dtype], memory_format=fmt)
                xi = x.to(DTYPES[dtype]).contiguous(memory_format=fmt)

                def run(model=model, xi=xi):
                    with torch.no_grad():
                        return model(xi)

                seconds = time_fn(run, args.repeats)
                baseline = baseline or seconds
                rows.append({**base, "part": "stylize", "size": size, "case": label, "width": width,
                             "num_residual": blocks, "dtype": dtype, "layout": layout,
                             "cudnn_benchmark": cudnn_benchmark, "batch_size": 1, "median_ms": round(seconds * 1e3, 4),
                             "images_per_s": "", "speedup": round(baseline / seconds, 2)})  # fmt: skip
                print(f"stylize {size} {label:<8} w={width:<5} r={blocks} {dtype} {layout:<4} "
                      f"benchmark={cudnn_benchmark!s:<5} {seconds * 1e3:8.3f} ms  x{baseline / seconds:.2f}", flush=True)  # fmt: skip
                del model
    torch.backends.cudnn.benchmark = False
    return rows


def train_rows(args, base: dict) -> list[dict]:

    from instyle.engine.training import TrainConfig, train

    formats = {"auto": None, "nchw": torch.contiguous_format, "cl": torch.channels_last}
    # (batch, dtype, layout): the defaults at each batch, then the other precision and layouts at batch 8
    cases = [(b, "auto", "auto") for b in args.batches]
    cases += [(8, "auto", "cl"), (8, "auto", "nchw"), (8, "fp32", "nchw")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch, dtype, layout in cases:
            config = TrainConfig(style=args.style, content=args.content, output=str(Path(tmp) / f"b{batch}.safetensors"),
                                 iterations=args.warmup + args.steps, batch_size=batch, device=args.device,
                                 dtype=dtype, checkpoint_every=10**9, sample_every=0, vgg_weights="default")  # fmt: skip
            with layout_override(generator=formats[layout]):
                result = train(config, handle_signals=False)
            rate = statistics.median(h["images_per_s"] for h in result.history[args.warmup :])
            rows.append({**base, "part": "train", "size": 256, "case": "instyle-defaults", "width": config.width,
                         "num_residual": config.num_residual, "dtype": dtype, "layout": layout,
                         "cudnn_benchmark": True, "batch_size": batch, "median_ms": round(batch / rate * 1e3, 4),
                         "images_per_s": round(rate, 2), "speedup": ""})  # fmt: skip
            print(f"train defaults batch {batch} dtype {dtype} layout {layout}: {rate:.1f} img/s, "
                  f"{batch / rate * 1e3:.2f} ms/step", flush=True)

        config = TrainConfig(style=args.style, content=args.content, output=str(Path(tmp) / "prof.safetensors"),
                             iterations=args.warmup + 6, batch_size=8, device=args.device, checkpoint_every=10**9,
                             sample_every=0, vgg_weights="default")  # fmt: skip
        title = f"# {base['device']} torch {base['torch']} {base['date']}: 6 training steps, defaults, batch 8"
        path = RESULTS / f"train_profile_{base['device'].replace(' ', '_').replace(',', '')}.txt"
        keys = ("device_time_total", "cuda_time_total", "cpu_time_total", "self_cpu_time_total")
        print(profile_training(config, args.warmup, title, path, keys)[:2000])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--style", required=True)
    p.add_argument("--content", default=None)
    p.add_argument("--sizes", type=int, nargs="*", default=[1024])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batches", type=int, nargs="*", default=[4, 8, 16])
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda")
    p.add_argument("--parts", nargs="*", default=["stylize", "train"])
    args = p.parse_args(argv)
    base = provenance(torch.device(args.device))
    for part in args.parts:
        rows = stylize_rows(args, base) if part == "stylize" else train_rows(args, base)
        append_csv(RESULTS / "gpu_variants.csv", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
