"""``instyle models``: the bundled styles and what they were trained with."""

from __future__ import annotations

import argparse
from pathlib import Path

from instyle.apps.cli.common import add_device, fail, number
from instyle.apps.demo import SHEET_PHOTO


def add_parser(sub) -> None:
    models = sub.add_parser("models", help="list the bundled styles and the AdaIN decoder (any painting)")
    models.add_argument(
        "--sheet", metavar="OUT.png",
        help="also render one photo in every bundled style on one contact sheet, each style's name under its tile",
    )  # fmt: skip
    models.add_argument(
        "--photo", metavar="FILE",
        help=f"with --sheet: the photo (default: scikit-image's {SHEET_PHOTO}, as in `instyle demo`)",
    )  # fmt: skip
    models.add_argument(
        "--size", type=number(int, 16, 1024), default=256, help="with --sheet: each tile's side in pixels (default: 256)"
    )  # fmt: skip
    add_device(models)
    models.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.sheet is None:
        if args.photo is not None:
            return fail("models", "--photo is for --sheet: give --sheet OUT.png too", 2)
        return _list()
    return _sheet(args)


def _list() -> int:
    from instyle.engine.catalog import bundled_styles
    from instyle.engine.modelfile import read_model_file

    styles = bundled_styles()
    if not styles:
        print("no bundled styles in this installation")
        return 0
    width = max(18, *(len(s.name) + 2 for s in styles))  # multi:composition_vii is longer than a file's stem
    print(f"{'name':<{width}}{'arch':<17}{'width':>6}{'iterations':>12}  {'style targets':<15}{'loss network':<16}trained on")
    files: dict = {}  # each file read once, however many styles it holds
    for style in styles:
        if style.path not in files:
            files[style.path] = read_model_file(style.path)
        config, metadata, _ = files[style.path]
        print(_row(style, config, metadata, width))
    if any("+" in _steps(meta) for _, meta, _ in files.values()):
        print("N+M iterations: N steps of the file's own run after M of the runs it went on from (train --init-from)")
    multi = sorted({s.path.stem for s in styles if s.style is not None})
    if multi:
        print(f"FILE:STYLE is a style of a multi-style model; mix them with `stylize --model {multi[0]} --style-mix A=0.6,B=0.4`")
    print(_adain_line())
    return 0


def _row(style, config: dict, metadata: dict, width: int = 18) -> str:
    """One bundled style's line: its network, training and stored targets."""
    from instyle.engine.weights import source_for_sha256

    training = metadata.get("training", {})
    recorded = (training.get("loss") or training).get("vgg_weights")  # nested since LossConfig, flat before
    targets = metadata.get("style_targets")
    if style.style is not None:  # a multi-style file: this style's entry
        targets = next((e.get("style_targets") for e in metadata.get("styles", []) if e.get("name") == style.style), None)
    stored = f"{targets['style_size']} px" if targets else "none"
    network = source_for_sha256(metadata.get("vgg_weights_sha256")) or recorded or "?"
    return (
        f"{style.name:<{width}}{config.get('arch', '?'):<17}{config.get('width', ''):>6}{_steps(metadata):>12}"
        f"  {stored:<15}{network:<16}{metadata.get('device', '?')}, {training.get('image_size', '?')} px crops"
    )


def _steps(metadata: dict) -> str:
    """The run's steps; "N+M" for a fine-tuned file: N of its own after M of the runs it went on from."""
    steps, before, start = metadata.get("iterations", "?"), 0, metadata.get("init_from")
    while isinstance(start, dict) and isinstance(start.get("iterations"), int):
        before, start = before + start["iterations"], start.get("init_from")
    return f"{steps}+{before}" if before else str(steps)


def _adain_line() -> str:
    """The arbitrary-style model's line: any painting as ``stylize --style PAINTING``."""
    from instyle.engine.catalog import ADAIN_DECODER, ADAIN_FAST
    from instyle.engine.modelfile import read_model_file

    if not ADAIN_DECODER.is_file():
        return "any painting (AdaIN): the decoder is not bundled in this build; `stylize --style PAINTING --decoder FILE`"
    _, metadata, _ = read_model_file(ADAIN_DECODER)
    line = f"any painting (AdaIN): `stylize --style PAINTING`, decoder trained {metadata.get('iterations', '?')} steps"
    if ADAIN_FAST.is_file():
        steps = _steps(read_model_file(ADAIN_FAST)[1])
        line += f"; `--fast`: a distilled half-width pair, {steps} steps"
    return line


def _sheet(args: argparse.Namespace) -> int:
    """``--sheet OUT``: the photo in every bundled style; every argument checked before any work."""
    from instyle.apps.demo import style_sheet
    from instyle.engine.catalog import list_models
    from instyle.engine.device import resolve_device
    from instyle.engine.fileio import OutputError, WriteError, check_writable_output
    from instyle.engine.image import ImageError, default_content_images, load_image, save_image

    out = Path(args.sheet)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        return fail("models", f"--sheet {out}: cannot tell the format from {out.suffix or 'no extension'!r}; use .png, .jpg or .webp", 2)
    try:
        check_writable_output(out, field="sheet")
        device = str(resolve_device(args.device))
        photo = load_image(args.photo) if args.photo is not None else dict(default_content_images())[SHEET_PHOTO]
        sheet = style_sheet(photo, size=args.size, device=device)
    except OutputError as error:
        return fail("models", error, 2, {"sheet"})
    except ImageError as error:
        return fail("models", f"--photo {error}", 2)
    except ValueError as error:
        return fail("models", error, 2)
    try:
        save_image(sheet, out)
    except WriteError as error:
        return fail("models", error.strerror or str(error), 1)
    print(f"wrote {out}: {args.photo or SHEET_PHOTO} in {len(list_models())} styles")
    return 0
