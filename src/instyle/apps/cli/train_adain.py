"""``instyle train-adain``: the decoder of arbitrary style transfer (AdaIN), from folders of photos
and paintings (flags from AdaINConfig)."""

from __future__ import annotations

import argparse

from instyle.apps.cli.common import add_config_flags, add_max_pixels, run_training

COMMAND = "train-adain"


def add_parser(sub) -> None:
    from instyle.engine.training.adain import AdaINConfig

    parser = sub.add_parser(
        COMMAND, help="train the decoder that stylizes with any painting (AdaIN)",
        description="Train the AdaIN decoder (Huang and Belongie 2017) on photos and paintings. A share of "
        "each folder, chosen by a hash of the file names, is held out as the validation split.",
    )  # fmt: skip
    parser.add_argument("--content", required=True, metavar="FOLDER", help="folder of content photos")
    parser.add_argument("--styles", required=True, metavar="FOLDER", help="folder of paintings")
    parser.add_argument("-o", "--output", required=True, help="decoder file to write (.safetensors)")
    add_config_flags(parser, AdaINConfig, skip={"content", "styles", "output"})
    add_max_pixels(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.engine.training.adain import AdaINConfig, check_config, train_adain

    # its errors name the folders first: "content FOLDER: no images found"
    return run_training(COMMAND, args, AdaINConfig, check_config, train_adain, names={"content", "styles"})
