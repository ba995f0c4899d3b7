"""TrainConfig (the settings of a training run), its result and its errors."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from instyle.engine.config import (
    LOSS_FIELDS, ConfigError, LossConfig, device_option, dtype_option, loss_defaults, nests_loss, option,
)
from instyle.engine.config import check_config as check_fields
from instyle.engine.fileio import OutputError, check_writable_output
from instyle.engine.image import IMAGE_EXTENSIONS
from instyle.engine.models.transformer import TransformerNet
from instyle.engine.weights import TRAIN_VGG_WEIGHTS

# Losses as in jcjohnson/neural-style (Gram / (C*H*W), MSE, Caffe-convention VGG); weights tuned on
# Starry Night at 128 px crops on the CPU (docs/training.md): content at relu2_2 as well as relu4_2
# keeps faces and edges that relu4_2 alone let the style wash out. The style weight is the ImageNet
# VGG-19's (40 on the HED VGG-16, whose features are smaller: adopt_target_weights scales it).
# the generator's own bounds (those a model file may hold), so a run never trains what cannot load
_WIDTH, _RESIDUAL = TransformerNet.SETTINGS

_TRAIN_LOSS = loss_defaults(
    vgg_weights=TRAIN_VGG_WEIGHTS, content_layers=("relu2_2", "relu4_2"),
    style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1"), content_weight=1.0, style_weight=5.0, tv_weight=50.0,
    style_weight_network=TRAIN_VGG_WEIGHTS,
)  # fmt: skip


# The settings every training run has, declared once (each task config lists them among its own).


def checkpoint_every_option() -> Any:
    return option(200, min=1, help="write the checkpoint (and the CSV log) every N steps")


def log_dir_option() -> Any:
    return option(
        None, help="folder of the checkpoint, logs and samples (default: OUTPUT_STEM.train beside OUTPUT)",
        metavar="LOG_DIR",
    )  # fmt: skip


def resume_option() -> Any:
    return option(False, help="continue from the checkpoint in LOG_DIR, exactly where it stopped")


@nests_loss
@dataclass
class TrainConfig:
    """The settings of a training run: one source of defaults, help and bounds (the CLI derives its
    flags from these fields). The loss fields may also be given flat (:func:`nests_loss`)."""

    # several styles (a tuple of two or more, or any with base): one multi-style generator, whose every
    # instance norm has a (gamma, beta) row per style (docs/multi_style.md)
    style: str | tuple[str, ...] = option(
        "", help="a style image, a bundled style name, or a model file with style targets; several: a multi-style model"
    )
    base: str | None = option(
        None, metavar="MULTI_MODEL",
        help="a multi-style model to add the --style painting(s) to: only their instance-norm scales and shifts "
        "train, the convolutions and the other styles stay as they are",
    )  # fmt: skip
    # Fine-tuning: a new run with its own settings (another scale, weight or loss network) goes on
    # from another run's network instead of new weights (a resume keeps every setting)
    init_from: str | None = option(
        None, metavar="MODEL",
        help="start the generator from this single-style model file's weights instead of new ones: fine-tune it "
        "with other settings (the same architecture, width and residual blocks)",
    )  # fmt: skip
    content: str | None = option(
        None, help="folder of content photos (default: the photos bundled with scikit-image)", metavar="CONTENT"
    )
    output: str = option("model.safetensors", help="model file to write (.safetensors)")
    arch: str = option(
        "transformer", choices=("transformer", "texture"),
        help="generator: transformer (Johnson et al.) or texture (the multi-scale TextureNet of Ulyanov et al.)",
    )  # fmt: skip
    norm: str = option("instance", choices=("instance", "batch", "none"), help="normalization in the generator")
    # IN models keep their quality at half the filters (fast-neural-style)
    width: float = option(0.5, min=_WIDTH.low, max=_WIDTH.high, help="channel multiplier of the transformer generator (1: 32-64-128 filters)")
    num_residual: int = option(5, min=_RESIDUAL.low, max=_RESIDUAL.high, help="residual blocks in the transformer generator")
    iterations: int = option(2000, min=1, help="training steps")
    batch_size: int = option(4, min=1, help="crops per step (split over the processes under torchrun)")
    image_size: int | None = option(
        None, min=1, help="side of the square training crops (default: 256 on CUDA, 128 on CPU)", metavar="IMAGE_SIZE"
    )
    style_size: int | None = option(
        None, min=1, help="style image long side (default: 3 x --image-size, or the stored targets' size)",
        metavar="STYLE_SIZE",
    )  # fmt: skip
    # 1.5 x image_size by default, so that a crop shows most of a photo; the generator learns its
    # strokes at this scale
    content_size: int | None = option(
        None, min=1, help="short side content photos are scaled to before cropping (default: 1.5 x --image-size)",
        metavar="CONTENT_SIZE",
    )  # fmt: skip
    loss: LossConfig = option(
        default_factory=_TRAIN_LOSS,
        help="the perceptual loss; its style weight is for imagenet-vgg19 and becomes 40 on hed-vgg16",
    )
    # with --base only the new styles' scale and shift rows train: Adam moves each about lr a step, and
    # at 1e-3 they take hundreds of steps to leave the base's mean (docs/multi_style.md, measured)
    lr: float | None = option(
        None, above=0, help="Adam learning rate (default: 1e-3; 3e-2 with --base, where only the style rows train)",
        metavar="LR",
    )  # fmt: skip
    lr_final_fraction: float = option(0.1, min=0, help="the learning rate decays on a cosine to lr x this")
    seed: int = option(0, help="seed of the weights, crops and flips")
    device: str = device_option()
    # auto: bf16 autocast on CUDA (generator NCHW, VGG channels_last), bf16 autocast + channels_last
    # on CPUs with native bf16, else fp32
    dtype: str = dtype_option()
    num_content: int | None = option(
        None, min=1, help="train on the first N content photos only (training-set size studies)", metavar="NUM_CONTENT"
    )
    checkpoint_every: int = checkpoint_every_option()
    # logged in eval mode and fp32, to LOG_DIR/heldout.csv with the training seconds so far
    eval_content: str | None = option(None, help="folder of held-out photos to evaluate on", metavar="EVAL_CONTENT")
    eval_every: int = option(500, min=1, help="evaluate on --eval-content every N steps")
    # early stopping on the held-out loss (the paper's 16 photos "with early stopping")
    patience: int = option(
        0, min=0,
        help="with --eval-content: stop when the held-out loss has not improved for N evaluations, "
        "and save the model of the best one; 0: train all --iterations",
    )  # fmt: skip
    sample_every: int = option(500, min=0, help="write a grid of stylized photos every N steps; 0: never")
    log_dir: str | None = log_dir_option()
    resume: bool = resume_option()
    # fewer, fused kernels and less Python per step, after a first step that compiles (about a minute)
    compile: bool = option(False, help="torch.compile the generator and the loss network")
    # On CUDA, one process, transformer generator: after two eager steps, forward, loss and backward
    # are captured as one CUDA graph and replayed, so a step costs one launch of CPU time instead of
    # a thousand (the eager step waits on Python, not on the GPU)
    cuda_graph: bool = option(True, help="replay each CUDA training step as a CUDA graph")
    save_dtype: str = option("fp32", choices=("fp32", "fp16"), help="model file precision")

    @property
    def styles(self) -> tuple[str, ...]:
        """Each style given, as given."""
        return (self.style,) if isinstance(self.style, str) else tuple(self.style)

    @property
    def multi_style(self) -> bool:
        """Whether the run trains a multi-style generator: several styles, or styles added to a base."""
        return self.base is not None or len(self.styles) > 1

    def to_json(self) -> dict:
        """The settings as recorded in checkpoints and model files (the loss nested under "loss")."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if not isinstance(self.style, str):
            data["style"] = list(self.style)
        data["loss"] = self.loss.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        """The config a checkpoint or model file recorded, in either layout: the loss nested under
        "loss" (this version) or its fields flat (before LossConfig). Unknown keys are left out."""
        data = dict(data)
        loss = data.pop("loss", None)
        loss_data = {k: data.pop(k) for k in list(data) if k in LOSS_FIELDS}
        if "vgg_weights" in loss_data:  # the flat layout recorded the settled network and weight
            loss_data["style_weight_network"] = loss_data["vgg_weights"]
        if isinstance(loss, dict):
            loss_data.update(loss)
        names = {f.name for f in fields(cls)} - {"loss"}
        if isinstance(data.get("style"), list):
            data["style"] = tuple(data["style"])
        config = cls(**{k: v for k, v in data.items() if k in names})
        if loss_data:
            defaults = config.loss.to_json()
            config = replace(config, loss=LossConfig.from_json({**defaults, **loss_data}))
        return config


# What a resumed run may change: how long it runs, what it logs and where, and how it computes (not
# what). Every other setting must be the checkpoint's, or the resumed run is not the run it continues.
RESUME_MAY_CHANGE = frozenset({
    "iterations", "checkpoint_every", "sample_every", "eval_every", "eval_content", "patience", "log_dir",
    "resume", "output", "style", "content", "device", "compile", "cuda_graph", "save_dtype",
    # where the paintings and a base model are, not what they are: a multi-style checkpoint records
    # each style's painting and the base's sha256, and a resume compares them
    "base",
    # how the loss network and style weight were chosen, not what they are (both are compared)
    "follow_style_targets", "rescale_style_weight", "style_weight_network",
})  # fmt: skip


@dataclass
class TrainResult:
    model: torch.nn.Module
    step: int
    losses: dict[str, float]
    output: Path
    log_dir: Path
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0  # the step whose weights were saved (the last one unless --patience chose)
    stopped_early: bool = False


class TrainingError(RuntimeError):
    """Training stopped on a fault (NaN loss, bad input); the last good checkpoint is intact."""


class ModelNotSaved(TrainingError):
    """The run finished but its model file could not be written; the checkpoint in ``log_dir`` holds
    the run, and resuming it with another output saves the model."""

    def __init__(self, reason: str, checkpoint: Path, log_dir: Path) -> None:
        super().__init__(
            f"{reason}; the finished run is kept in {checkpoint}: resume it (log_dir {log_dir}) with another output"
        )
        self.reason = reason
        self.checkpoint = checkpoint
        self.log_dir = log_dir


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; the step finished and a checkpoint was written."""

    def __init__(self, signum: int, checkpoint: Path, step: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; checkpoint at {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint
        self.step = step


DEFAULT_LR = 1e-3
BASE_LR = 3e-2  # with base: the new styles' rows alone


def check_config(config: TrainConfig) -> None:
    """Refuse values no training can use before any work is done: the bounds the fields declare
    (:func:`instyle.engine.config.check_config`), then what they cannot say alone. Raises
    :class:`~instyle.engine.config.ConfigError` naming the field."""
    check_fields(config)
    if config.patience and not config.eval_content:
        raise ConfigError("patience", "needs eval_content: the held-out photos it judges by")
    if not all(isinstance(spec, str) and spec for spec in config.styles):
        raise ConfigError("style", f"must name each style (an image, a bundled style or a model file), got {config.style!r}")
    if config.init_from is not None:
        if len(config.styles) > 1 or config.base is not None:
            raise ConfigError("init_from", "starts a single-style run; several styles or a base train a multi-style model")
        if not Path(config.init_from).is_file():
            raise ConfigError("init_from", f"{config.init_from}: no such model file")
    # a model file never replaces a photo, the painting it learns from or the model it extends
    output = Path(config.output)
    if output.suffix.lower() in IMAGE_EXTENSIONS:
        raise ConfigError("output", f"{output}: the model is a safetensors file, not an image; name it MODEL.safetensors")
    for spec in config.styles:
        if output.exists() and Path(spec).exists() and output.samefile(spec):
            style = "style (a model file with style targets)" if output.suffix.lower() == ".safetensors" else "style image"
            raise ConfigError("output", f"{output} is the {style}; choose another output path")
    if config.base is not None and output.exists() and Path(config.base).exists() and output.samefile(config.base):
        raise ConfigError("output", f"{output} is the base model; write the model with more styles to another path")
    check_outputs(config)


def log_dir_of(config) -> Path:
    """The run's folder of checkpoint, logs and samples: ``log_dir``, else OUTPUT_STEM.train beside the output."""
    output = Path(config.output)
    return Path(config.log_dir) if config.log_dir else output.with_name(output.stem + ".train")


def check_outputs(config) -> None:
    """Every place the run writes, before any work: the model file and the log folder (their
    missing folders are made, as the run starts and ends). Raises ConfigError naming the field."""
    check_writable_output(config.output, field="output", make_parents=True)
    if config.log_dir:
        check_writable_output(config.log_dir, field="log_dir", folder=True, make_parents=True)
        return
    try:
        check_writable_output(log_dir_of(config), field="output", folder=True, make_parents=True)
    except OutputError as error:  # the folder beside the output, not one the user named
        raise ConfigError("output", f"{config.output}: the log folder beside it, {error.reason}; choose another log_dir") from error
