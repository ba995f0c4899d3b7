"""``instyle models``: the bundled styles and what they were trained with."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    models = sub.add_parser("models", help="list the bundled styles and the AdaIN decoder (any painting)")
    models.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.engine.catalog import bundled_styles
    from instyle.engine.modelfile import read_model_file

    styles = bundled_styles()
    if not styles:
        print("no bundled styles in this installation")
        return 0
    print(f"{'name':<18}{'arch':<17}{'width':>6}{'iterations':>12}  {'style targets':<15}{'loss network':<16}trained on")
    files: dict = {}  # each file read once, however many styles it holds
    for style in styles:
        if style.path not in files:
            files[style.path] = read_model_file(style.path)
        config, metadata, _ = files[style.path]
        print(_row(style, config, metadata))
    multi = sorted({s.path.stem for s in styles if s.style is not None})
    if multi:
        print(f"FILE:STYLE is a style of a multi-style model; mix them with `stylize --model {multi[0]} --style-mix A=0.6,B=0.4`")
    print(_adain_line())
    return 0


def _row(style, config: dict, metadata: dict) -> str:
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
        f"{style.name:<18}{config.get('arch', '?'):<17}{config.get('width', ''):>6}{metadata.get('iterations', '?'):>12}"
        f"  {stored:<15}{network:<16}{metadata.get('device', '?')}, {training.get('image_size', '?')} px crops"
    )


def _adain_line() -> str:
    """The arbitrary-style model's line: any painting as ``stylize --style PAINTING``."""
    from instyle.engine.catalog import ADAIN_DECODER
    from instyle.engine.modelfile import read_model_file

    if not ADAIN_DECODER.is_file():
        return "any painting (AdaIN): the decoder is not bundled in this build; `stylize --style PAINTING --decoder FILE`"
    _, metadata, _ = read_model_file(ADAIN_DECODER)
    return f"any painting (AdaIN): `stylize --style PAINTING`, decoder trained {metadata.get('iterations', '?')} steps"
