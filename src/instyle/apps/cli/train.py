"""``instyle train``: a feed-forward style model from one painting (flags from TrainConfig)."""

from __future__ import annotations

import argparse
import os
import sys

from instyle.apps.cli.common import LazyBar, add_config_flags, add_max_pixels, config_from_args, fail, progress


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


def _on_step(bar: LazyBar):
    def on_step(step: int, losses: dict[str, float]) -> None:
        bar.n = step
        bar.set_postfix(
            total=f"{losses['total']:.3g}",
            content=f"{losses.get('content', 0):.3g}",
            style=f"{losses.get('style', 0):.3g}",
            img_s=f"{losses['images_per_s']:.1f}",
            refresh=False,
        )
        bar.update(0)

    return on_step


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from instyle.engine.training import ModelNotSaved, TrainConfig, TrainingError, TrainingInterrupted, check_config, train
    from instyle.engine.weights import WeightsError

    bar = None
    try:
        config = config_from_args(TrainConfig, args, check=check_config)
        bar = LazyBar(lambda: progress(tqdm, total=config.iterations, unit="step"))
        result = train(config, on_step=_on_step(bar))
    except TrainingInterrupted as stop:
        bar.close()
        print(f"instyle train: {stop}; resume with --resume", file=sys.stderr)
        return 128 + stop.signum
    except ModelNotSaved as unsaved:
        bar.close()
        rescue = f"--resume --log-dir {unsaved.log_dir} -o OTHER.safetensors"
        return fail("train", f"{unsaved.reason}; the finished run is kept in {unsaved.checkpoint}: "
                    f"run the same command with {rescue} to save its model", 1)  # fmt: skip
    except (TrainingError, WeightsError, OSError, ValueError) as error:
        if bar is not None:
            bar.close()
        return fail("train", error, 1, config=TrainConfig)
    bar.close()
    if os.environ.get("RANK", "0") != "0":  # under torchrun the first process speaks for all
        return 0
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items() if k != "images_per_s")
    if result.stopped_early:
        print(f"stopped early at step {result.step}: the held-out loss last improved at step {result.best_step}")
    elif result.best_step != result.step:
        print(f"the held-out loss was lowest at step {result.best_step}")
    weights = f" with the weights of step {result.best_step}" if result.best_step != result.step else ""
    print(f"wrote {result.output}{weights} after {result.step} steps in {result.seconds:.0f} s ({losses}); log in {result.log_dir}")
    return 0
