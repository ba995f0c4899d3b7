"""``instyle score IMAGE... --style PAINTING [--content PHOTO] [--json]``: the style distance of each
image to a painting and its content distance to a photo (definitions in :mod:`instyle.engine.score`)."""

from __future__ import annotations

import argparse
import json
import sys

from instyle.apps.cli.common import add_device, add_max_pixels, fail, number

COMMAND = "score"


def add_parser(sub) -> None:
    score = sub.add_parser(
        COMMAND, help="how far images are from a painting in style and from a photo in content",
        description="Style distance (per-channel mean/std, and Gram matrices, on the ImageNet VGG-19 at relu1_1.."
        "relu4_1) of each IMAGE to PAINTING and, with --content, content distance (relu4_1) to PHOTO; every "
        "image at --size px on its long side, the photo resized to each image. Lower is closer; 0 is the same image.",
    )  # fmt: skip
    score.add_argument("images", nargs="+", metavar="IMAGE", help="images to score: files, folders or glob patterns")
    score.add_argument("--style", required=True, metavar="PAINTING", help="the painting the style distance is measured to")
    score.add_argument("--content", metavar="PHOTO", help="the photo the content distance is measured to (default: none)")
    score.add_argument(
        "--json", action="store_true",
        help="one JSON object per image and line: style_distance (mean/std), style_distance_gram, content_distance "
        "(null without --content), layers",
    )  # fmt: skip
    score.add_argument(
        "--size", type=number(int, 64, 4096), default=512,
        help="long side the images are measured at; numbers at different sizes do not compare (default: 512)",
    )  # fmt: skip
    score.add_argument("--recursive", action="store_true", help="look for images in subfolders of folders too")
    add_device(score)
    add_max_pixels(score)
    score.set_defaults(func=run)


def _scorer(args: argparse.Namespace):
    """The Scorer with the painting read, and the photo checked, before any image: (scorer, None) or (None, code)."""
    from instyle.engine.device import resolve_device
    from instyle.engine.image import ImageError
    from instyle.engine.score import Scorer, read_image
    from instyle.engine.weights import WeightsError

    try:
        resolve_device(args.device)
    except ValueError as error:
        return None, fail(COMMAND, error, 2)
    try:
        if args.content is not None:
            read_image(args.content, args.size)
    except ImageError as error:
        return None, fail(COMMAND, f"--content {error}", 1)
    try:
        return Scorer(args.style, size=args.size, device=args.device), None
    except ImageError as error:
        return None, fail(COMMAND, f"--style {error}", 1)
    except (WeightsError, RuntimeError, OSError) as error:
        return None, fail(COMMAND, error, 1)


def _line(result, json_lines: bool) -> str:
    if json_lines:
        return json.dumps(result.to_json())
    content = "-" if result.content_distance is None else f"{result.content_distance:.4f}"
    return f"{result.style_distance:>8.4f} {result.style_distance_gram:>10.4f} {content:>8}  {result.image}"


def run(args: argparse.Namespace) -> int:
    from instyle.engine.image import ImageError, iter_image_files

    sources, failed = [], 0
    for pattern in args.images:  # a missing input is reported; the others are still scored
        try:
            sources += iter_image_files([pattern], recursive=args.recursive)
        except FileNotFoundError as error:
            failed += 1
            print(f"FAILED {error}", file=sys.stderr)
    if not sources:
        return fail(COMMAND, f"no images found in {' '.join(args.images)}", 2)
    scorer, code = _scorer(args)
    if scorer is None:
        return code
    if not args.json:
        against = f"style to {args.style}" + (f", content to {args.content}" if args.content else "")
        print(f"{'style':>8} {'style_gram':>10} {'content':>8}  image ({against}; {args.size} px)")
    for source in sources:
        try:
            result = scorer.score(source, args.content)
        except ImageError as error:  # names the file
            failed += 1
            print(f"FAILED {error}", file=sys.stderr)
            continue
        except (RuntimeError, OSError) as error:
            failed += 1
            print(f"FAILED {source}: {error}", file=sys.stderr)
            continue
        print(_line(result, args.json), flush=True)
    return 1 if failed else 0
