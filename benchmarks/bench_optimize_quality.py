"""Where `instyle optimize` ends: neural-style's L-BFGS (fixed steps, free pixels; the baseline)
against a strong-Wolfe line search, and against that with the pixels clamped to [0, 1] inside the
loss (instyle's default), in fp32 and bf16.

Every run starts from the same photo with the same settings and step budget. Every result, the
image `optimize` returns (clamped to [0, 1], as it is saved), is scored by one fp32 loss (the
default VGG-16 and OptimizeConfig's weights): the score is the saved image's loss, whatever the
run reported (``own_final_total``), and a bf16 run is not judged by its own rounding. ``worst`` is
the highest loss of any evaluation (an overshoot); ``score_vs_baseline`` is the row's score over
the baseline fp32 run's on the same photo (lower is better).

    python benchmarks/bench_optimize_quality.py                       # CPU: 256 px, 100 steps
    python benchmarks/bench_optimize_quality.py --size 512 --iterations 500
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

from instyle.engine.image import load_image, resize_long_side  # noqa: E402
from instyle.engine.losses import PerceptualLoss  # noqa: E402
from instyle.engine.models.vgg import VGGFeatures  # noqa: E402
from instyle.engine.optimize import OptimizeConfig, optimize  # noqa: E402
from instyle.engine.device import resolve_device  # noqa: E402

# the module (the package's attribute of that name is the function)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# (line search, pixels clamped in the loss): neural-style's L-BFGS (the baseline), then each change
VARIANTS = [(None, False), ("strong_wolfe", False), ("strong_wolfe", True)]


@torch.no_grad()
def fp32_score(image: torch.Tensor, content: str, style: str, config: OptimizeConfig, extractor, device) -> dict:
    """The loss terms of ``image`` (3, H, W) in fp32, set up as `optimize` sets up its one scale."""
    loss_fn = PerceptualLoss.from_config(config.loss, extractor)
    loss_fn.set_style([resize_long_side(load_image(style), round(config.size * config.style_scale)).to(device)], None)
    loss_fn.set_content(resize_long_side(load_image(content), config.size).unsqueeze(0).to(device))
    total, terms = loss_fn(image.unsqueeze(0).to(device))
    return {"total": total.item(), **{k: v.item() for k, v in terms.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", nargs="+", default=[str(SHARED / "content" / n) for n in ("amber.jpg", "chicago.jpg")])
    parser.add_argument("--style", default=str(SHARED / "styles" / "starry_night.jpg"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--out", default=str(RESULTS / "optimize_quality.csv"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    info = provenance(device)
    base_config = OptimizeConfig(size=args.size, iterations=args.iterations, device=str(device))
    scorer = VGGFeatures(tuple(base_config.loss.content_layers) + tuple(base_config.loss.style_layers), weights="default").to(device)
    print(f"{info['device']}, torch {info['torch']}: {args.size} px, {args.iterations} steps, style {Path(args.style).name}")
    rows = []
    for content in args.content:
        baseline = None
        for line_search, clamp in VARIANTS:
            for dtype in args.dtypes:
                config = OptimizeConfig(
                    size=args.size, iterations=args.iterations, device=str(device), dtype=dtype, line_search=line_search,
                    clamp_pixels_in_loss=clamp,
                )  # fmt: skip
                start = time.perf_counter()
                result = optimize(content, args.style, config)
                seconds = time.perf_counter() - start
                score = fp32_score(result.image, content, args.style, config, scorer, device)
                baseline = baseline or score["total"]
                row = {
                    **info, "content": Path(content).name, "style": Path(args.style).name, "size": args.size,
                    "iterations": args.iterations, "line_search": line_search or "none", "pixels_in_loss": "clamped" if clamp else "free",
                    "dtype": dtype,
                    "seconds": round(seconds, 2), "evaluations": len(result.history),
                    "initial_total": result.initial_losses["total"], "own_final_total": result.final_losses["total"],
                    "worst": max(h["total"] for h in result.history), "fp32_total": score["total"],
                    "fp32_content": score["content"], "fp32_style": score["style"], "fp32_tv": score["tv"],
                    "score_vs_baseline": round(score["total"] / baseline, 5),
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{row['content']:<12} {row['line_search']:<13} {row['pixels_in_loss']:<8} {dtype:<5} {seconds:7.1f} s "
                    f"{row['evaluations']:4d} evals  fp32 score {score['total']:10.4g} "
                    f"({row['score_vs_baseline']:.3g}x baseline)  worst {row['worst']:.3g}",
                    flush=True,
                )
    print(f"appended {append_csv(Path(args.out), rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
