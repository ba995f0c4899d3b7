"""``instyle stylize``: images in the style of any painting (AdaIN), or through a trained or bundled model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from instyle.apps.cli import ray_engine
from instyle.apps.cli.common import add_device, add_max_pixels, fail, number
from instyle.engine.color import PRESERVE_COLOR


def add_parser(sub) -> None:
    from instyle.engine.device import DTYPES

    stylize = sub.add_parser(
        "stylize", help="stylize images with any painting (AdaIN) or a trained or bundled model",
        description="Give --style PAINTING (any image: arbitrary style transfer with AdaIN, no training) "
        "or a bundled style name, or --model NAME_OR_FILE (a trained fast generator).",
    )  # fmt: skip
    stylize.add_argument("inputs", nargs="+", help="image files, folders or globs")
    stylize.add_argument(
        "--style", action="append", metavar="PAINTING",
        help="a painting (any image file), or a bundled style name (as --model); repeat it to mix paintings "
        "(--style-weights) or to give each --mask region its painting",
    )  # fmt: skip
    stylize.add_argument("--model", help="bundled style name or generator model file (instead of --style)")
    stylize.add_argument(
        "--style-mix", metavar="MIX",
        help="with a multi-style --model: the style to use, NAME (or NAME=1), or a mix of its styles, "
        "NAME=W,NAME=W,... (weights >= 0, normalized to sum 1; the model's instance-norm scales and shifts "
        "are interpolated)",
    )  # fmt: skip
    stylize.add_argument(
        "--style-weights", type=number(float, 0), nargs="+", metavar="W",
        help="one weight per --style painting, >= 0, normalized to sum 1 (default: equal)",
    )  # fmt: skip
    stylize.add_argument(
        "--mask", metavar="IMAGE",
        help="spatial control: each distinct colour of IMAGE is a region, ordered by colour value (for grey "
        "levels, black first), and region k takes the k-th --style painting; resized to each photo",
    )  # fmt: skip
    stylize.add_argument(
        "--decoder", metavar="FILE",
        help="AdaIN decoder, trained with `instyle train-adain`, or a distilled pair from `instyle train-adain "
        "--distill-from` (default: the bundled decoder)",
    )  # fmt: skip
    stylize.add_argument(
        "--fast", action="store_true", default=None,
        help="with --style: the bundled distilled AdaIN model, an encoder-decoder pair of half the widths "
        "(a quarter of the work; docs/adain.md has its speed and quality)",
    )  # fmt: skip
    stylize.add_argument(
        "--style-size", type=number(int, 64), default=None,
        help="long side the paintings are scaled to before their statistics are taken (default: 512)",
    )  # fmt: skip
    stylize.add_argument("-o", "--output", default="out", help="output folder (default: out)")
    stylize.add_argument(
        "--recursive", action="store_true",
        help="descend into folders, and let \"**\" in a glob match any depth; links to folders are followed, each real folder once",
    )  # fmt: skip
    stylize.add_argument("--max-size", type=number(int, 1), default=None, help="resize so the long side is at most this")
    stylize.add_argument(
        "--strength", type=number(float, 0, 1), default=1.0,
        help="how much style, 0..1: with a painting AdaIN's content-style interpolation in feature space (0: "
        "the photo as the decoder rebuilds it), with a model a blend with the photo (default 1)",
    )  # fmt: skip
    stylize.add_argument(
        "--preserve-color", choices=PRESERVE_COLOR, default="none",
        help="keep the photo's colours: luminance transfer, mean/covariance colour transfer or per-channel "
        "histogram matching (default: none)",
    )  # fmt: skip
    stylize.add_argument(
        "--tile", type=number(int, 1), default=None,
        help="tile size, a multiple of 8 with a painting (default: automatic when needed)",
    )  # fmt: skip
    add_device(stylize)
    stylize.add_argument(
        "--dtype", default="auto", choices=DTYPES,
        help="auto: fp32 on CUDA (its fastest for these networks), bf16 + channels_last on CPUs with native bf16, else fp32 (default: auto)",
    )  # fmt: skip
    stylize.add_argument("--suffix", default=".png", choices=(".png", ".jpg", ".webp"), help="output format")
    stylize.add_argument(
        "--runtime", default="torch", choices=("torch", "onnxruntime"),
        help="onnxruntime (models only): fp32 on the CPU, exported once to $INSTYLE_HOME/onnx; tiled images use torch (default: torch)",
    )  # fmt: skip
    add_max_pixels(stylize)
    ray_engine.add_flags(stylize)  # --engine ray and its options
    stylize.set_defaults(func=run)


# the flags only a painting takes, by their field names in library errors
PAINTING_ONLY = {
    "style_weights": "--style-weights", "mask": "--mask", "decoder": "--decoder", "style_size": "--style-size", "fast": "--fast",
}  # fmt: skip
ERROR_NAMES = {**PAINTING_ONLY, "tile": "--tile", "runtime": "--runtime", "strength": "--strength", "max_pixels": "--max-pixels"}
MODEL_NAMES = {"style_mix": "--style-mix"}


def _generator_name(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(the generator to load, None), (None, None) for paintings, or (None, what is wrong)."""
    from instyle.engine.catalog import is_bundled_style, list_models

    if args.model and args.style:
        return None, "give --style or --model, not both"
    if not args.model and not args.style:
        return None, "give --style PAINTING (any image) or --model NAME (a bundled style or a model file)"
    styles = args.style or []
    models = [s for s in styles if is_bundled_style(s) or Path(s).suffix.lower() == ".safetensors"]
    if models and len(styles) > 1:
        return None, f"--style {models[0]}: a trained model cannot be mixed with other styles; give paintings only"
    missing = [s for s in styles if not models and not Path(s).exists()]
    if missing:
        bundled = ", ".join(list_models()) or "none"
        return None, f"--style {missing[0]}: no such painting file or bundled style (bundled: {bundled})"
    name = args.model or (models[0] if models else None)
    given = [flag for field, flag in PAINTING_ONLY.items() if getattr(args, field, None) is not None]  # video has no --fast
    if name and given:
        return None, f"{given[0]}: only with a painting as --style; {name} is a trained model"
    if not name and args.style_mix is not None:
        return None, "--style-mix: only with a multi-style model (--model); to mix paintings give --style-weights"
    return name, None


def _load(args: argparse.Namespace):
    """The model and its options, checked before any file: (model, options) or (None, exit code)."""
    from instyle.engine.device import resolve_device
    from instyle.engine.inference.export import ExportError
    from instyle.engine.inference.stylize import load_model

    name, problem = _generator_name(args)
    if problem:
        return None, fail("stylize", problem, 2)
    if name is None:
        return _load_adain(args)
    try:
        model = load_model(name)
        extra = _style_mix(model, args.style_mix)
        if args.runtime == "onnxruntime":
            model.onnx_model()  # export (once) and load before the first image
        resolve_device(args.device)  # once, not as a failure of every file
    except (ExportError, ValueError) as error:  # ModelFileError is a ValueError
        return None, fail("stylize", error, 2, MODEL_NAMES)
    stride = getattr(model.generator, "tile_stride", None)
    if args.tile is not None and stride and args.tile % stride:
        return None, fail("stylize", f"--tile {args.tile}: must be a multiple of {stride}, the model's stride", 2)
    return model, {"runtime": args.runtime, **extra}


def _style_mix(model, text: str | None) -> dict:
    """The stylize options of ``--style-mix`` (checked against the model's styles): the style or mix,
    and the name outputs take from it. A multi-style model needs one unless loaded as FILE:STYLE."""
    from instyle.engine.inference.stylize import mix_label, parse_style_mix

    if text is None:
        if model.styles and model.style is None:
            raise ValueError(
                f"style_mix is needed: {model.name} is a multi-style model; choose one of its styles "
                f"({', '.join(model.styles)}) with --style-mix NAME, or mix them with --style-mix NAME=W,NAME=W"
            )
        return {}
    if not model.styles:
        raise ValueError(f"style_mix {text}: {model.name} is a single-style model; --style-mix picks or mixes the styles of a multi-style model")
    mix = parse_style_mix(text)
    weights = model.style_weights(mix, what=f"style_mix {text}")
    return {"style": mix, "name": mix_label(weights, model.styles)}


def _load_adain(args: argparse.Namespace):
    """The AdaIN model, the paintings' statistics and the mask's regions, once for every photo."""
    from instyle.engine.device import resolve_device
    from instyle.engine.inference.adain import DEFAULT_STYLE_SIZE, check_options, load_adain, mask_regions
    from instyle.engine.weights import WeightsError

    try:
        check_options(args.strength, args.preserve_color, args.tile, args.runtime)
        resolve_device(args.device)
        model = load_adain(args.decoder, bool(args.fast))
        size = args.style_size or DEFAULT_STYLE_SIZE
        style = model.style(args.style, args.style_weights, style_size=size, device=args.device, dtype=args.dtype)
        mask = None if args.mask is None else mask_regions(args.mask, style)
    except (ValueError, WeightsError) as error:  # ModelFileError and ImageError are ValueErrors
        return None, fail("stylize", error, 2, ERROR_NAMES)
    return model, {"style": style, "mask": mask, "name": style.name}


def run(args: argparse.Namespace) -> int:
    from instyle.engine.image import iter_image_files
    from instyle.engine.inference.stylize import stylize_files

    if args.engine == "ray" or ray_engine.check_flags(args):  # a Ray cluster: apps/cli/ray_engine.py
        return ray_engine.run(args, _load)
    model, extra = _load(args)
    if model is None:
        return extra
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
        device=args.device, dtype=args.dtype, **extra,
    )  # fmt: skip
    for result in stylize_files(model, sources, output, suffix=args.suffix, **options):
        if result.error:
            failed += 1
            print(f"FAILED {result.source}: {result.error}", file=sys.stderr)
        else:
            print(f"{result.source} -> {result.output} ({result.seconds * 1000:.0f} ms)")
    return 1 if failed else 0
