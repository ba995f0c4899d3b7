"""``instyle train-adain``: the decoder of arbitrary style transfer (AdaIN), from folders of photos
and paintings (flags from AdaINConfig)."""

from __future__ import annotations

import argparse
import sys

from instyle.apps.cli.common import LazyBar, add_config_flags, add_max_pixels, config_from_args, fail, progress

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
    from tqdm import tqdm

    from instyle.apps.cli.train import _on_step
    from instyle.engine.training import TrainingError, TrainingInterrupted
    from instyle.engine.training.adain import AdaINConfig, check_config, train_adain
    from instyle.engine.weights import WeightsError

    bar = None
    try:
        config = config_from_args(AdaINConfig, args, check=check_config)
        bar = LazyBar(lambda: progress(tqdm, total=config.iterations, unit="step"))
        result = train_adain(config, on_step=_on_step(bar))
    except TrainingInterrupted as stop:
        bar.close()
        print(f"instyle {COMMAND}: {stop}; resume with --resume", file=sys.stderr)
        return 128 + stop.signum
    except (TrainingError, WeightsError, OSError, ValueError) as error:
        if bar is not None:
            bar.close()
        return fail(COMMAND, error, 1, names={"content", "styles"}, config=AdaINConfig)
    bar.close()
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items() if k != "images_per_s")
    print(f"wrote {result.output} after {result.step} steps in {result.seconds:.0f} s ({losses}); log in {result.log_dir}")
    return 0
