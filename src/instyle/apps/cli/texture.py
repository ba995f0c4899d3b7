"""``instyle texture``: a texture of a style image from noise (flags from TextureConfig)."""

from __future__ import annotations

import argparse
from pathlib import Path

from instyle.apps.cli.common import add_config_flags, add_max_pixels, config_from_args, fail, is_image_name
from instyle.engine.fileio import OutputError, check_writable_output


def add_parser(sub) -> None:
    from instyle.engine.texture import TextureConfig

    texture = sub.add_parser("texture", help="synthesize a texture of a style image from noise (TextureNet)")
    texture.add_argument(
        "--style", required=True, metavar="NAME_OR_IMAGE",
        help="the style (texture) image, a bundled style name or a model file with style targets",
    )  # fmt: skip
    texture.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp)")
    texture.add_argument("--size", type=int, default=512, help="side of the square output (default: 512)")
    texture.add_argument("--seed", type=int, default=0, help="sampling seed: each gives another sample (default: 0)")
    texture.add_argument("--retrain", action="store_true", help="train the generator again even if one is cached")
    # style only: the content fields of the loss are not offered
    add_config_flags(texture, TextureConfig, skip={"style", "content_layers", "content_weight"})
    add_max_pixels(texture)
    texture.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from instyle.engine.image import ImageError, save_image
    from instyle.engine.texture import TextureConfig, synthesize_texture
    from instyle.engine.training import TrainingError
    from instyle.engine.weights import WeightsError

    output = Path(args.output)
    if not is_image_name(output):
        return fail("texture", f"-o {output}: use a .png, .jpg or .webp file name", 2)
    if output.resolve() == Path(args.style).resolve():
        return fail("texture", f"-o {output} would overwrite the style image", 2)
    try:  # before the minutes a generator trains
        check_writable_output(output, field="output")
    except OutputError as error:
        return fail("texture", f"-o {error.reason}", 2)
    bar = None

    def on_step(step: int, losses: dict[str, float]) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=config.iterations, unit="step", desc="training texture", dynamic_ncols=True, disable=None)
        bar.n = step
        bar.set_postfix(style=f"{losses['style']:.3g}", refresh=False)
        bar.update(0)

    try:
        config = config_from_args(TextureConfig, args)
        result = synthesize_texture(config, args.size, args.seed, retrain=args.retrain, on_step=on_step)
        save_image(result.image, output)
    except (ImageError, WeightsError, TrainingError, ValueError, RuntimeError, OSError) as error:
        if bar is not None:
            bar.close()
        return fail("texture", error, 1, names={"size", "seed"}, config=TextureConfig)
    if bar is not None:
        bar.close()
    how = f"trained in {result.train_seconds:.0f} s" if result.trained else "cached"
    print(f"wrote {output} ({args.size}x{args.size}, seed {args.seed}); generator {how}: {result.model_path}")
    return 0
