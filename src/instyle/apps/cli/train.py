"""``instyle train``: a feed-forward style model from one painting (flags from TrainConfig)."""

from __future__ import annotations

import argparse

from instyle.apps.cli.common import add_config_flags, add_max_pixels, run_training


def add_parser(sub) -> None:
    from instyle.engine.training import TrainConfig

    train = sub.add_parser("train", help="train a feed-forward style model from one painting")
    train.add_argument(
        "--style", required=True, metavar="NAME_OR_IMAGE",
        help="a style image, a bundled style name or a model file with style targets "
        "(then --style-size is the size the targets were computed at)",
    )  # fmt: skip
    train.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    add_config_flags(train, TrainConfig, skip={"style", "output"})
    add_max_pixels(train)
    train.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.engine.training import TrainConfig, check_config, train

    return run_training("train", args, TrainConfig, check_config, train)
