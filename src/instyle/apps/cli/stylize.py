"""``instyle stylize``: images through a trained or bundled model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from instyle.apps.cli.common import add_device, add_max_pixels, fail, number
from instyle.engine.color import PRESERVE_COLOR


def add_parser(sub) -> None:
    from instyle.engine.device import DTYPES

    stylize = sub.add_parser("stylize", help="stylize images with a trained or bundled model")
    stylize.add_argument("inputs", nargs="+", help="image files, folders or globs")
    stylize.add_argument("--model", required=True, help="bundled style name or model file")
    stylize.add_argument("-o", "--output", default="out", help="output folder (default: out)")
    stylize.add_argument(
        "--recursive", action="store_true",
        help="descend into folders, and let \"**\" in a glob match any depth; links to folders are followed, each real folder once",
    )  # fmt: skip
    stylize.add_argument("--max-size", type=number(int, 1), default=None, help="resize so the long side is at most this")
    stylize.add_argument("--strength", type=number(float, 0, 1), default=1.0, help="blend with the content, 0..1 (default 1)")
    stylize.add_argument(
        "--preserve-color", choices=PRESERVE_COLOR, default="none",
        help="keep the photo's colours: luminance transfer, mean/covariance colour transfer or per-channel "
        "histogram matching (default: none)",
    )  # fmt: skip
    stylize.add_argument("--tile", type=number(int, 1), default=None, help="tile size (default: automatic when needed)")
    add_device(stylize)
    stylize.add_argument(
        "--dtype", default="auto", choices=DTYPES,
        help="auto: fp32 on CUDA (its fastest for these networks), bf16 + channels_last on CPUs with native bf16, else fp32 (default: auto)",
    )  # fmt: skip
    stylize.add_argument("--suffix", default=".png", choices=(".png", ".jpg", ".webp"), help="output format")
    stylize.add_argument(
        "--runtime", default="torch", choices=("torch", "onnxruntime"),
        help="onnxruntime: fp32 on the CPU, exported once to $INSTYLE_HOME/onnx; tiled images use torch (default: torch)",
    )  # fmt: skip
    add_max_pixels(stylize)
    stylize.set_defaults(func=run)


def _load(args: argparse.Namespace):
    """The model, checked with the options before any file: (model, None) or (None, exit code)."""
    from instyle.engine.device import resolve_device
    from instyle.engine.inference.export import ExportError
    from instyle.engine.inference.stylize import load_model
    from instyle.engine.modelfile import ModelFileError

    try:
        model = load_model(args.model)
        if args.runtime == "onnxruntime":
            model.onnx_model()  # export (once) and load before the first image
        resolve_device(args.device)  # once, not as a failure of every file
    except (ModelFileError, ExportError, ValueError) as error:
        return None, fail("stylize", error, 2)
    stride = getattr(model.generator, "tile_stride", None)
    if args.tile is not None and stride and args.tile % stride:
        return None, fail("stylize", f"--tile {args.tile}: must be a multiple of {stride}, the model's stride", 2)
    return model, None


def run(args: argparse.Namespace) -> int:
    from instyle.engine.image import iter_image_files
    from instyle.engine.inference.stylize import stylize_files

    model, code = _load(args)
    if model is None:
        return code
    sources, failed = [], 0
    for pattern in args.inputs:  # a missing input is reported; the others still run
        try:
            sources += iter_image_files([pattern], recursive=args.recursive)
        except FileNotFoundError as error:
            failed += 1
            print(f"FAILED {error}", file=sys.stderr)
    if not sources:
        return fail("stylize", f"no images found in {' '.join(args.inputs)}", 2)
    output = Path(args.output)  # made only once there is something to put in it
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # -o names an existing file, or a folder that cannot be made
        what = "is a file; -o names the output folder" if output.is_file() else f"cannot be made: {error.strerror or error}"
        return fail("stylize", f"-o {output} {what}", 2)
    options = dict(
        strength=args.strength, preserve=args.preserve_color, max_size=args.max_size, tile=args.tile,
        device=args.device, dtype=args.dtype, runtime=args.runtime,
    )  # fmt: skip
    for result in stylize_files(model, sources, output, suffix=args.suffix, **options):
        if result.error:
            failed += 1
            print(f"FAILED {result.source}: {result.error}", file=sys.stderr)
        else:
            print(f"{result.source} -> {result.output} ({result.seconds * 1000:.0f} ms)")
    return 1 if failed else 0
