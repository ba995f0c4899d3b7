"""``instyle models``: the bundled styles and what they were trained with."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    models = sub.add_parser("models", help="list the bundled styles and the AdaIN decoder (any painting)")
    models.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.engine.catalog import list_models, resolve_model_path
    from instyle.engine.modelfile import read_model_file
    from instyle.engine.weights import source_for_sha256

    names = list_models()
    if not names:
        print("no bundled styles in this installation")
        return 0
    print(f"{'name':<18}{'arch':<17}{'width':>6}{'iterations':>12}  {'style targets':<15}{'loss network':<16}trained on")
    for name in names:
        config, metadata, _ = read_model_file(resolve_model_path(name))
        training = metadata.get("training", {})
        recorded = (training.get("loss") or training).get("vgg_weights")  # nested since LossConfig, flat before
        targets = metadata.get("style_targets")
        stored = f"{targets['style_size']} px" if targets else "none"
        network = source_for_sha256(metadata.get("vgg_weights_sha256")) or recorded or "?"
        print(
            f"{name:<18}{config.get('arch', '?'):<17}{config.get('width', ''):>6}{metadata.get('iterations', '?'):>12}"
            f"  {stored:<15}{network:<16}{metadata.get('device', '?')}, {training.get('image_size', '?')} px crops"
        )
    print(_adain_line())
    return 0


def _adain_line() -> str:
    """The arbitrary-style model's line: any painting as ``stylize --style PAINTING``."""
    from instyle.engine.catalog import ADAIN_DECODER
    from instyle.engine.modelfile import read_model_file

    if not ADAIN_DECODER.is_file():
        return "any painting (AdaIN): the decoder is not bundled in this build; `stylize --style PAINTING --decoder FILE`"
    _, metadata, _ = read_model_file(ADAIN_DECODER)
    return f"any painting (AdaIN): `stylize --style PAINTING`, decoder trained {metadata.get('iterations', '?')} steps"
