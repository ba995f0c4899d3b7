"""Training throughput (images/s) of ``instyle.train`` with the real VGG-16 loss, baseline in the same run.

Every case runs the product's own loop, ``instyle.engine.training.train(TrainConfig(...))``, for
``--warmup + --steps`` steps at ``--image-size`` px with batch ``--batch-size``, on the
scikit-image photos, and reports the median of the timed per-step rates (the
loop's ``images_per_s``: forward, loss, backward and the Adam step; batch assembly excluded):

- ``baseline``: torch eager, full-width TransformerNet (width 1) with
  ``torch.nn.InstanceNorm2d`` (registered as the norm "torch_instance"), fp32 NCHW and
  ``--dtype auto`` (bf16 autocast + channels_last where the product uses them);
- ``instyle``: full width with instyle's instance norm, fp32 then ``--dtype auto``
  (bf16 autocast + channels_last on CUDA and on CPUs with native bf16);
- ``instyle-defaults``: ``TrainConfig``'s defaults (width 0.5, --dtype auto);
- ``instyle-compiled`` (with ``--compile``): the defaults with ``torch.compile``; its warm-up
  steps must cover the compilation (pass ``--warmup`` of a few steps; compiling happens once
  per round).

``speedup`` is the row's rate over the fp32 baseline's, ``speedup_vs_baseline_auto`` over the
``--dtype auto`` baseline's. Each row carries the mean 1-minute load average over the run.

    python benchmarks/bench_train.py                  # CPU: batch 4, 2 rounds of 2 warm-up + 3 timed steps
    python benchmarks/bench_train.py --device cuda --batch-size 8 --warmup 10 --steps 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance, register_torch_baseline_norm  # noqa: E402


def main(argv=None) -> int:
    from instyle.engine.device import DeviceConfig, resolve_device
    from instyle.engine.training import TrainConfig, train

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case and round")
    parser.add_argument("--rounds", type=int, default=2, help="times each case runs, interleaved")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--style", default=None, help="style image (default: ../shared/data/styles/starry_night.jpg)")
    parser.add_argument("--compile", action="store_true", help="add the defaults with torch.compile (--compile)")
    parser.add_argument("--content", default=None, help="folder of training photos (default: scikit-image's)")
    parser.add_argument("--out", type=Path, default=None, help="CSV (default results/train_<device>.csv)")
    parser.add_argument("--vgg-weights", default="default",
                        help="loss network (default: the HED VGG-16 or $INSTYLE_VGG_WEIGHTS: the target is stated for a VGG-16 loss)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    style = args.style or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "styles" / "starry_night.jpg")
    if not Path(style).is_file():
        parser.error(f"--style {style}: no such file (pass a style image)")
    register_torch_baseline_norm()
    device = resolve_device(args.device)
    # (label, width, norm, dtype)
    cases = [
        ("baseline", 1.0, "torch_instance", "fp32"),
        ("baseline", 1.0, "torch_instance", "auto"),
        ("instyle", 1.0, "instance", "fp32"),
        ("instyle", 1.0, "instance", "auto"),
        ("instyle-defaults", defaults.width, defaults.norm, defaults.dtype),
    ]
    if args.compile:
        cases.append(("instyle-compiled", defaults.width, defaults.norm, defaults.dtype))
    base = {**provenance(device), "threads": torch.get_num_threads()}
    rates = {i: [] for i in range(len(cases))}
    loads, losses = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        # Rounds interleave the cases, so a change in the shared machine's load hits them alike.
        for _ in range(args.rounds):
            for i, (label, width, norm, dtype) in enumerate(cases):
                config = TrainConfig(
                    style=style, content=args.content, output=str(Path(tmp) / f"{label}.safetensors"), width=width, norm=norm,
                    dtype=dtype, iterations=args.warmup + args.steps, batch_size=args.batch_size,
                    image_size=args.image_size, device=str(device), checkpoint_every=10**9, sample_every=0,
                    compile=label == "instyle-compiled", vgg_weights=args.vgg_weights,
                )  # fmt: skip
                loads.append(os.getloadavg()[0])
                result = train(config, handle_signals=False)
                rates[i] += [h["images_per_s"] for h in result.history[args.warmup :]]
                losses[i] = result.losses["total"]
    rows = []
    baseline_rate = statistics.median(rates[0])
    baseline_auto_rate = statistics.median(rates[1])
    for i, (label, width, norm, dtype) in enumerate(cases):
        rate = statistics.median(rates[i])
        devices = DeviceConfig.resolve(str(device), dtype, "train")
        row = {
            **base,
            "loadavg_1m": round(statistics.mean(loads), 2),
            "case": label,
            "width": width,
            "num_residual": defaults.num_residual,
            "norm": "torch" if norm == "torch_instance" else "instyle",
            "dtype": "fp32" if devices.autocast is None else str(devices.autocast).removeprefix("torch."),
            "memory_format": "channels_last" if devices.memory_format == torch.channels_last else "nchw",
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "steps": args.steps * args.rounds,
            "images_per_s": round(rate, 3),
            "min_images_per_s": round(min(rates[i]), 3),
            "max_images_per_s": round(max(rates[i]), 3),
            "speedup": round(rate / baseline_rate, 2),
            "speedup_vs_baseline_auto": round(rate / baseline_auto_rate, 2),
            "final_loss": round(losses[i], 4),
        }
        rows.append(row)
        print(
            f"{label:<17} w={width:<4} {row['norm']:<7} {row['dtype']:<8} {row['memory_format']:<13} "
            f"{rate:7.2f} img/s (min {min(rates[i]):.2f}, max {max(rates[i]):.2f})  x{row['speedup']:.2f}",
            flush=True,
        )
    out = append_csv(args.out or RESULTS / f"train_{device.type}.csv", rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
