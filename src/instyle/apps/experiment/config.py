"""The settings of ``instyle experiment in-vs-bn``: the training both generators share, nested, and
the measurements' own."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

from instyle.engine.config import LossConfig
from instyle.engine.training import TrainConfig

__all__ = ["HELD_OUT", "NORMS", "ExperimentConfig", "ExperimentError", "validate"]

NORMS = ("instance", "batch")
# Two ordinary photographs of scikit-image's eight are held back for evaluation.
HELD_OUT = ("chelsea", "motorcycle")


class ExperimentError(ValueError):
    """A bad experiment setting or input (names the setting or file)."""


def full_training() -> TrainConfig:
    """The generator and its training for the full run (both norms get exactly these). The loss is
    explicit here, not TrainConfig's defaults, which are tuned for other purposes. The network is
    "default" (``$INSTYLE_VGG_WEIGHTS``, else the HED VGG-16), or the one a style's stored targets
    were computed on; ``style_weight`` is stated for the HED VGG-16 and scaled to the network used
    (``loss.rescale_style_weight``)."""
    loss = LossConfig(
        vgg_weights="default", content_layers=("relu4_2",), style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
        content_weight=1.0, style_weight=20.0, tv_weight=10.0, style_weight_network="hed-vgg16",
    )  # fmt: skip
    return TrainConfig(
        width=0.5, num_residual=5, iterations=2000, batch_size=4, image_size=256, style_size=384, lr=1e-3,
        loss=loss, dtype="auto",
    )  # fmt: skip


def quick_training() -> TrainConfig:
    """:func:`full_training` at the sizes of ``--quick``: 64 px crops, a quarter-width generator, 200 steps."""
    return dataclasses.replace(full_training(), width=0.25, iterations=200, image_size=64, style_size=96)


@dataclass
class ExperimentConfig:
    """Settings of ``instyle experiment in-vs-bn``; the defaults are the full run (a GPU's work),
    :meth:`quick_preset` the small one for a CPU.

    ``train`` is the training both generators get (generator width, steps, batch, crop and style
    sizes, learning rate, loss, training dtype). The experiment sets, per run, what differs or what
    it owns: the norm, the content photos, the output and log folder, the step count of the
    training-set-size study, and ``style``, ``seed`` and ``device`` (from the fields below); every
    measurement runs in fp32.
    """

    # a style image, a bundled style name or a model file with style targets; "": the first bundled
    # style that carries style targets (the painting is not shipped; its statistics are)
    style: str = ""
    output: str = "out/in_vs_bn"
    eval_dir: str | None = None  # held-out photos; None: HELD_OUT from the default content set
    train: TrainConfig = field(default_factory=full_training)
    # measurements; evaluation crops are train.image_size, at the training scale
    eval_crops_per_image: int = 5
    eval_max_images: int = 16
    contrast_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    batch_sizes: tuple[int, ...] = (2, 4, 8)
    set_sizes: tuple[int, ...] = (1, 4, 16, 64)
    set_size_iterations: int | None = None  # None: train.iterations
    set_size_norms: tuple[str, ...] = NORMS
    speed_size: int = 512
    optimize_iterations: int = 500  # OptimizeConfig's standard; fewer are extrapolated to it
    speed_repeats: int = 20
    figure_size: int = 512
    seed: int = 0
    device: str = "auto"
    command: str | None = None  # recorded at the top of report.md
    quick: bool = False

    @classmethod
    def quick_preset(cls, **overrides) -> ExperimentConfig:
        """Small enough for a CPU (times in docs/experiments/): 64 px crops, a quarter-width
        generator, a few hundred steps, IN alone in the training-set-size study."""
        preset = dict(
            train=quick_training(), set_size_iterations=120, set_size_norms=("instance",), speed_size=256,
            optimize_iterations=10, speed_repeats=5, figure_size=192, quick=True,
        )  # fmt: skip
        return cls(**{**preset, **overrides})

    def to_json(self) -> dict:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "train"}
        return {**data, "train": self.train.to_json()}


def validate(config: ExperimentConfig) -> None:
    """Refuse settings no experiment can use, naming the field, before any work is done."""
    train = config.train
    if config.eval_dir is not None and not Path(config.eval_dir).is_dir():
        raise ExperimentError(f"eval_dir {config.eval_dir}: not a folder")
    if any(k <= 0 for k in config.contrast_factors) or 1.0 not in config.contrast_factors:
        raise ExperimentError(f"contrast_factors must be positive and include 1, got {config.contrast_factors}")
    if any(b < 2 for b in config.batch_sizes) or any(n < 1 for n in config.set_sizes):
        raise ExperimentError("batch_sizes must be >= 2 and set_sizes >= 1")
    if train.iterations < 1 or train.image_size is None or train.image_size < 16 or config.speed_size < 16:
        raise ExperimentError("train.iterations must be >= 1, and train.image_size and speed_size >= 16")
    unknown = [n for n in config.set_size_norms if n not in NORMS]
    if unknown:
        raise ExperimentError(f"set_size_norms: unknown norm(s) {unknown}; choose from {NORMS}")
