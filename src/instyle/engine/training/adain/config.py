"""AdaINConfig: the settings of a run of ``instyle train-adain`` (the AdaIN decoder)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from instyle.engine.config import ConfigError, device_option, dtype_option, option
from instyle.engine.config import check_config as check_fields
from instyle.engine.image import IMAGE_EXTENSIONS
from instyle.engine.training.config import check_outputs, checkpoint_every_option, log_dir_option, resume_option

# What a resumed run may change: how long it runs, what it logs and where, where its folders are,
# and the device (not the precision): every other setting must be the checkpoint's.
RESUME_MAY_CHANGE = frozenset({
    "iterations", "checkpoint_every", "eval_every", "sample_every", "log_dir", "resume", "output", "content",
    "styles", "device", "save_dtype",
})  # fmt: skip


@dataclass
class AdaINConfig:
    """The settings of a decoder training run; defaults are the paper's (Huang and Belongie 2017,
    and its reference code): Adam at 1e-4 with inverse decay, batches of 8 crops of 256 px, content
    weight 1, style weight 10. The command line derives its flags from these fields."""

    content: str = option("", help="folder of content photos", metavar="FOLDER")
    styles: str = option("", help="folder of paintings", metavar="FOLDER")
    output: str = option("adain.safetensors", help="decoder file to write (.safetensors)")
    iterations: int = option(20000, min=1, help="training steps")
    batch_size: int = option(8, min=1, help="photo-painting pairs per step")
    image_size: int = option(256, min=8, help="side of the square crops, a multiple of 8")
    # The score and the benchmarks read paintings at 512 px on the long side: crops at that scale
    # teach the strokes they will see.
    max_side: int = option(
        512, min=8, help="long side photos and paintings are scaled down to before cropping (a smaller one is "
        "enlarged only as far as a crop needs)",
    )  # fmt: skip
    validation_fraction: float = option(
        0.1, min=0, max=0.5,
        help="share of the photos and of the paintings held out by a hash of their file names: never trained on, "
        "the validation loss and samples use them",
    )  # fmt: skip
    content_weight: float = option(1.0, min=0, help="weight of the content loss (relu4_1 against the AdaIN target)")
    style_weight: float = option(10.0, min=0, help="weight of the mean/std style loss (relu1_1 to relu4_1)")
    lr: float = option(1e-4, above=0, help="Adam learning rate")
    lr_decay: float = option(5e-5, min=0, help="the learning rate of step s is lr / (1 + lr_decay * s)")
    seed: int = option(0, help="seed of the decoder's weights, the crops and the flips")
    device: str = device_option()
    dtype: str = dtype_option()
    checkpoint_every: int = checkpoint_every_option()
    eval_every: int = option(500, min=1, help="log the loss on the validation split every N steps")
    sample_every: int = option(1000, min=0, help="write a grid of validation pairs stylized every N steps; 0: never")
    log_dir: str | None = log_dir_option()
    resume: bool = resume_option()
    save_dtype: str = option("fp32", choices=("fp32", "fp16"), help="decoder file precision")
    distill_from: str | None = option(
        None, metavar="DECODER",
        help="train instead a light encoder-decoder pair (half VGG-19's widths) that imitates this trained "
        "decoder with the VGG-19 encoder: the model of `instyle stylize --fast`",
    )  # fmt: skip
    distill_weight: float = option(1.0, min=0, help="with --distill-from: weight of the match to the teacher's images")
    # Fine-tuning: a run with other weights of its losses goes on from where another one ended
    # instead of from scratch (resume keeps every setting; this keeps only the network's weights).
    init_from: str | None = option(
        None, metavar="MODEL",
        help="start the network from this model file (a decoder; with --distill-from a fast pair) instead of new "
        "weights: fine-tune it with other settings",
    )  # fmt: skip

    def to_json(self) -> dict:
        """The settings as recorded in checkpoints and decoder files."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> AdaINConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def check_config(config: AdaINConfig) -> None:
    """Refuse values no run can use, and outputs that cannot be written, before any work is done;
    ConfigError names the field."""
    check_fields(config)
    for name in ("content", "styles"):
        if not getattr(config, name):
            raise ConfigError(name, "is required: a folder of images")
    if config.image_size % 8:
        raise ConfigError("image_size", f"must be a multiple of 8 (the encoder pools three times), got {config.image_size}")
    if config.max_side < config.image_size:
        raise ConfigError("max_side", f"must be at least image_size ({config.image_size}), got {config.max_side}")
    if config.distill_from is not None and not Path(config.distill_from).is_file():
        raise ConfigError("distill_from", f"{config.distill_from}: no such decoder file")
    if config.init_from is not None and not Path(config.init_from).is_file():
        raise ConfigError("init_from", f"{config.init_from}: no such model file")
    output = Path(config.output)
    if output.suffix.lower() in IMAGE_EXTENSIONS:
        raise ConfigError("output", f"{output}: the decoder is a safetensors file, not an image; name it NAME.safetensors")
    check_outputs(config)
