"""``instyle optimize``: the slow, exact Gatys et al. optimisation of one image (flags from OptimizeConfig)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from instyle.apps.cli.common import (
    LazyBar, add_config_flags, add_max_pixels, config_from_args, fail, is_image_name, progress,
)  # fmt: skip
from instyle.engine.fileio import OutputError, check_writable_output, write_atomic


def add_parser(sub) -> None:
    from instyle.engine.optimize import OptimizeConfig

    optimize = sub.add_parser("optimize", help="the slow, exact Gatys et al. optimisation of one image")
    optimize.add_argument("content", help="the content image")
    optimize.add_argument(
        "style", nargs="+", metavar="STYLE",
        help="one or more style images, bundled style names or model files with style targets "
        "(stored targets keep the style size they were computed at)",
    )  # fmt: skip
    optimize.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp)")
    optimize.add_argument("--style-blend", default=None, help="weights per style image, e.g. 0.7,0.3")
    add_config_flags(optimize, OptimizeConfig)
    add_max_pixels(optimize)
    optimize.set_defaults(func=run)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What makes the command line unusable before any work, in its words; None: nothing."""
    if args.style_blend is not None:
        try:
            args.style_blend = tuple(float(w) for w in args.style_blend.split(","))
        except ValueError:
            return f"--style-blend {args.style_blend!r}: expected numbers like 0.7,0.3"
    output = Path(args.output)
    if not is_image_name(output):
        return f"-o {output}: use a .png, .jpg or .webp file name"
    if output.resolve() in {Path(p).resolve() for p in [args.content, *args.style]}:
        return f"-o {output} would overwrite an input"
    try:  # every place written, before the minutes of work
        check_writable_output(output, field="output")
    except OutputError as error:
        return f"-o {error.reason}"
    if _sidecar(output).is_dir():
        return f"-o {output}: {_sidecar(output)}, where its settings go, is a folder; move it or choose another -o"
    return None


def _sidecar(output: Path) -> Path:
    """The JSON file of the run's settings and losses, beside the image."""
    return output.with_name(output.name + ".json")


def _on_iteration(bar: LazyBar, iterations: int):
    def on_iteration(scale: int, iteration: int, losses: dict[str, float]) -> None:
        bar.n = min(scale * iterations + iteration, bar.total)
        bar.set_postfix(
            content=f"{losses['content']:.3g}", style=f"{losses['style']:.3g}", tv=f"{losses['tv']:.3g}", refresh=False
        )
        bar.update(0)

    return on_iteration


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from instyle.engine.image import ImageError, save_image
    from instyle.engine.optimize import OptimizeConfig, optimize
    from instyle.engine.weights import WeightsError

    problem = _usage_problem(args)
    if problem:
        return fail("optimize", problem, 2)
    output, bar = Path(args.output), None
    try:
        config = config_from_args(OptimizeConfig, args, style_blend=args.style_blend)
        bar = LazyBar(lambda: progress(tqdm, total=config.iterations * config.scales, unit="it"))
        result = optimize(args.content, list(args.style), config, on_iteration=_on_iteration(bar, config.iterations))
        save_image(result.image, output)
        summary = {"content": str(args.content), "style": [str(s) for s in args.style], "output": str(output)}
        summary.update(result.summary())
        sidecar = write_atomic(_sidecar(output), json.dumps(summary, indent=2) + "\n")
    except (ImageError, WeightsError, ValueError, RuntimeError, OSError) as error:
        if bar is not None:
            bar.close()
        return fail("optimize", error, 1, config=OptimizeConfig)
    bar.close()
    print(
        f"wrote {output} ({result.image.shape[2]}x{result.image.shape[1]}) in {result.seconds:.1f} s: "
        f"content {result.initial_losses['content']:.4g} -> {result.final_losses['content']:.4g}, "
        f"style {result.initial_losses['style']:.4g} -> {result.final_losses['style']:.4g}; settings in {sidecar}"
    )
    return 0
