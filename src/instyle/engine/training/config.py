"""TrainConfig (the settings of a training run), its result and its errors."""

from __future__ import annotations

import math
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from instyle.engine.image import IMAGE_EXTENSIONS
from instyle.engine.weights import TRAIN_VGG_WEIGHTS, TRAIN_VGG_WEIGHTS_HELP

@dataclass
class TrainConfig:
    """One source of defaults: the CLI derives its flags from these fields."""

    # the loss network vgg_weights=None stands for (instyle.engine.targets.adopt_target_weights)
    default_vgg_weights: ClassVar[str] = TRAIN_VGG_WEIGHTS

    style: str = ""  # a style image, a bundled style name, or a model file with style targets
    content: str | None = None  # folder of photos; None: scikit-image's bundled photos
    output: str = "model.safetensors"
    arch: str = field(default="transformer", metadata={"choices": ("transformer", "texture")})
    norm: str = field(default="instance", metadata={"choices": ("instance", "batch", "none")})
    width: float = 0.5  # IN models keep their quality at half the filters (fast-neural-style)
    num_residual: int = 5
    iterations: int = 2000
    batch_size: int = 4
    image_size: int | None = None  # crop size; None: 256 on CUDA, 128 on CPU (the reduced CPU configuration)
    # style image long side; None: 3 x image_size (384 for the CPU's 128 px crops), or the size stored
    # style targets were computed at
    style_size: int | None = None
    # content photos are scaled to this short side before cropping; None: 1.5 x image_size, so that a
    # crop shows most of a photo. The generator learns its strokes at this scale.
    content_size: int | None = None
    # Losses as in jcjohnson/neural-style (Gram / (C*H*W), MSE, Caffe-convention VGG); weights tuned
    # on Starry Night at 128 px crops on CPU (docs/training.md): content at relu2_2 as well as relu4_2
    # keeps faces and edges that relu4_2 alone let the style wash out. The style weight is the ImageNet
    # VGG-19's (40 on the HED VGG-16, whose features are smaller; adopt_target_weights scales it).
    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 50.0
    content_layers: tuple[str, ...] = ("relu2_2", "relu4_2")
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    lr: float = 1e-3
    lr_final_fraction: float = 0.1  # cosine decay to lr * this
    seed: int = 0
    device: str = "auto"
    # auto: bf16 autocast on CUDA (generator NCHW, VGG channels_last), bf16 autocast + channels_last on CPUs with
    # native bf16, else fp32
    dtype: str = field(default="auto", metadata={"choices": ("auto", "fp32", "bf16", "fp16")})
    num_content: int | None = None  # use only the first N content images (training-set size studies)
    checkpoint_every: int = 200
    # held-out photos (a folder) whose perceptual loss is logged every eval_every steps and at the end,
    # in eval mode and fp32, to LOG_DIR/heldout.csv with the training seconds so far
    eval_content: str | None = None
    eval_every: int = 500
    # early stopping on the held-out loss (the paper's 16 photos "with early stopping"); 0: off
    patience: int = 0
    sample_every: int = 500
    log_dir: str | None = None  # CSV log, loss curve, samples and checkpoint; default: OUTPUT's folder / OUTPUT_stem.train
    resume: bool = False
    # torch.compile of the generator and the loss network for the training steps: fewer, fused kernels
    # and less Python per step, after a first step that compiles (about a minute)
    compile: bool = False
    # On CUDA, one process, transformer generator (with or without --compile): after two eager steps,
    # forward, loss and backward are captured as one CUDA graph and replayed, so a step costs one launch
    # of CPU time instead of a thousand (the eager step waits on Python, not on the GPU)
    cuda_graph: bool = True
    vgg_weights: str | None = None
    save_dtype: str = field(default="fp32", metadata={"choices": ("fp32", "fp16")})

    # the --help text of each flag
    FLAG_HELP: ClassVar[dict[str, str]] = {
        "content": "folder of content photos (default: the photos bundled with scikit-image)",
        "arch": "generator: transformer (Johnson et al.) or texture (the multi-scale TextureNet of Ulyanov et al.)",
        "norm": "normalization in the generator",
        "width": "channel multiplier of the transformer generator (1: 32-64-128 filters)",
        "num_residual": "residual blocks in the transformer generator",
        "iterations": "training steps",
        "batch_size": "crops per step (split over the processes under torchrun)",
        "image_size": "side of the square training crops (default: 256 on CUDA, 128 on CPU)",
        "style_size": "style image long side (default: 3 x --image-size, or the stored targets' size)",
        "content_size": "short side content photos are scaled to before cropping (default: 1.5 x --image-size)",
        "content_weight": "content loss weight",
        "style_weight": "style loss weight, for imagenet-vgg19; the default becomes 40 on hed-vgg16",
        "tv_weight": "total-variation (smoothness) loss weight",
        "content_layers": "VGG layers of the content loss",
        "style_layers": "VGG layers whose Gram matrices make the style loss",
        "lr": "Adam learning rate",
        "lr_final_fraction": "the learning rate decays on a cosine to lr x this",
        "seed": "seed of the weights, crops and flips",
        "device": "auto, cpu, cuda or cuda:N",
        "dtype": "compute precision: auto is bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
        "num_content": "train on the first N content photos only",
        "checkpoint_every": "write the checkpoint (and the CSV log) every N steps",
        "eval_content": "folder of held-out photos to evaluate on",
        "eval_every": "evaluate on --eval-content every N steps",
        "patience": "with --eval-content: stop when the held-out loss has not improved for N evaluations, "
        "and save the model of the best one; 0: train all --iterations",
        "sample_every": "write a grid of stylized photos every N steps; 0: never",
        "log_dir": "folder of the checkpoint, logs and samples (default: OUTPUT_STEM.train beside OUTPUT)",
        "resume": "continue from the checkpoint in LOG_DIR, exactly where it stopped",
        "compile": "torch.compile the generator and the loss network",
        "cuda_graph": "replay each CUDA training step as a CUDA graph",
        "vgg_weights": TRAIN_VGG_WEIGHTS_HELP,
        "save_dtype": "model file precision",
    }

    def to_json(self) -> dict:
        data = asdict(self)
        data["content_layers"] = list(self.content_layers)
        data["style_layers"] = list(self.style_layers)
        return data


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


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; the step finished and a checkpoint was written."""

    def __init__(self, signum: int, checkpoint: Path, step: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; checkpoint at {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint
        self.step = step


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(config: TrainConfig) -> None:
    """Refuse values no training can use, naming the flag, before any work is done."""
    at_least = {"iterations": 1, "batch_size": 1, "num_residual": 0, "checkpoint_every": 1, "sample_every": 0,
                "eval_every": 1, "patience": 0, "image_size": 1, "style_size": 1, "content_size": 1, "num_content": 1}
    for name, low in at_least.items():
        value = getattr(config, name)
        if value is not None and value < low:
            raise TrainingError(f"{_flag(name)} must be at least {low}, got {value}")
    for name in ("content_weight", "style_weight", "tv_weight", "lr", "width", "lr_final_fraction"):
        value = getattr(config, name)
        positive = name in ("lr", "width")
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise TrainingError(f"{_flag(name)} must be a {'positive' if positive else 'non-negative'} number, got {value}")
    if config.patience and not config.eval_content:
        raise TrainingError("--patience needs --eval-content DIR: the held-out photos it judges by")
    # a model file never replaces a photo or the painting it learns from
    output = Path(config.output)
    if output.suffix.lower() in IMAGE_EXTENSIONS:
        raise TrainingError(f"-o {output}: the model is a safetensors file, not an image; name it MODEL.safetensors")
    if output.exists() and Path(config.style).exists() and output.samefile(config.style):
        raise TrainingError(f"-o {output} is the style image; choose another output path")
