"""Style-loss Gram matrices, forward and backward, on bf16 features: instyle against autograd, same run.

The features are what the VGG gives under bf16 autocast at the CPU training defaults (batch 4, 128 px
crops): relu1_1 (64 x 128 x 128), relu2_1 (128 x 64 x 64), relu3_1 (256 x 32 x 32) and relu4_1
(512 x 16 x 16), channels_last as the loss network runs on the CPU. Each row times one
``gram(features)`` with a backward of a random upstream gradient (median of ``--repeats``):

- ``autograd``: the fp32 Gram of upcast copies, differentiated by autograd (two fp32 GEMMs in the
  backward), which ``instyle.engine.losses.gram_matrix`` did for CPU features before;
- ``instyle``: ``instyle.engine.losses.gram_matrix`` (the same fp32 forward; the backward is one bf16 GEMM,
  dF = (dG + dG^T) F).

It also reports the gradient's relative error against a float64 reference for both. Rows go to
``benchmarks/results/gram.csv``.

    python benchmarks/bench_gram.py
    python benchmarks/bench_gram.py --device cuda --batch-size 8 --image-size 256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, cuda_sync, median_seconds, provenance  # noqa: E402

from instyle.engine.losses import gram_matrix  # noqa: E402
from instyle.engine.losses._precision import upcast  # noqa: E402
from instyle.engine.losses.gram import _positions_by_channels  # noqa: E402

LAYERS = (("relu1_1", 64, 1), ("relu2_1", 128, 2), ("relu3_1", 256, 4), ("relu4_1", 512, 8))  # name, C, downsampling


def autograd_gram(features: torch.Tensor) -> torch.Tensor:
    """gram_matrix's former path for CPU features: fp32 copies, GEMMs that autograd differentiates."""
    n, c, h, w = features.shape
    f, positions_first = _positions_by_channels(upcast(features))
    gram = torch.bmm(f.transpose(1, 2), f) if positions_first else torch.bmm(f, f.transpose(1, 2))
    return gram / (c * h * w)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, channels, down in LAYERS:
        side = args.image_size // down
        base = torch.randn(args.batch_size, channels, side, side, generator=g).clamp_min(0)  # after a ReLU
        features = base.to(device, torch.bfloat16).contiguous(memory_format=torch.channels_last)
        upstream = torch.randn(args.batch_size, channels, channels, generator=g).to(device)
        exact = features.detach().double().requires_grad_()
        autograd_gram(exact).backward(upstream.double())
        row = {"layer": name, "shape": "x".join(map(str, features.shape)), "dtype": "bf16"}
        for label, fn in (("autograd", autograd_gram), ("instyle", gram_matrix)):
            x = features.detach().requires_grad_()

            def step():
                x.grad = None
                fn(x).backward(upstream)
                cuda_sync()

            row[f"{label}_ms"] = round(median_seconds(step, args.repeats) * 1e3, 3)
            row[f"{label}_grad_rel_err"] = f"{((x.grad.double() - exact.grad).norm() / exact.grad.norm()).item():.2e}"
        row["speedup"] = round(row["autograd_ms"] / row["instyle_ms"], 2)
        rows.append({**row, **provenance(device)})
        print(row)
    path = append_csv(RESULTS / "gram.csv", rows)
    print(f"appended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
