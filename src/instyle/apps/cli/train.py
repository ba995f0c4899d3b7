"""``instyle train``: a feed-forward style model from one painting, or a multi-style model from several
(or more styles for one, ``--base``); flags from TrainConfig."""

from __future__ import annotations

import argparse

from instyle.apps.cli.common import add_config_flags, add_max_pixels, run_training


def add_parser(sub) -> None:
    from instyle.engine.training import TrainConfig

    train = sub.add_parser("train", help="train a feed-forward style model from one painting, or one model of several")
    train.add_argument(
        "--style", required=True, metavar="NAME_OR_IMAGE", nargs="+",
        help="a style image, a bundled style name or a model file with style targets "
        "(then --style-size is the size the targets were computed at); several: one multi-style model, each "
        "style named by its painting's file stem (docs/multi_style.md)",
    )  # fmt: skip
    train.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    add_config_flags(train, TrainConfig, skip={"style", "output"})
    add_max_pixels(train)
    train.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.engine.training import TrainConfig, check_config, train

    if len(args.style) == 1:  # one style: the single-style run it always was (unless --base)
        args.style = args.style[0]
    return run_training("train", args, TrainConfig, check_config, train)
