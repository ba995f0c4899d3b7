"""Training a feed-forward stylization generator against the VGG descriptor network.

``train(TrainConfig(...))`` (:mod:`instyle.engine.training.multi`, which also trains multi-style
generators) runs the loop (:func:`~instyle.engine.training.loop.run_training`) and
returns a ``TrainResult``; it prints nothing (the CLI passes ``on_step`` for its progress bar).
Everything a resume needs is saved (:mod:`instyle.engine.training.checkpoint`), and the data order
depends only on ``(seed, step)`` (:mod:`instyle.engine.training.data`), so N steps straight equal
k steps + resume + N - k steps.

Multi-process: launched under ``torchrun``, each rank takes its slice of the same global
batch and DistributedDataParallel averages the gradients, so the loss curve matches one
process with the same global batch (instance norm is per sample).
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import Tensor

from instyle import __version__
from instyle.engine.device import DeviceConfig
from instyle.engine.losses import PerceptualLoss
from instyle.engine.modelfile import StyleTargets
from instyle.engine.targets import adopt_target_weights, apply_targets, compute_style_targets, resolve_style
from instyle.engine.training.config import BASE_LR, DEFAULT_LR, RESUME_MAY_CHANGE, TrainConfig, TrainingError, check_config
from instyle.engine.training.data import batch_for_step, crop_source, heldout_crops, load_content_set
from instyle.engine.training.log import save_samples
from instyle.engine.training.loop import TrainingRun
from instyle.engine.training.schedule import cosine_lr


class Trainer(TrainingRun):
    """One run training a style generator (:class:`~instyle.engine.training.loop.TrainingRun` drives
    it): the style, the generator, the photos and the perceptual loss."""

    resume_may_change = RESUME_MAY_CHANGE

    def __init__(self, config: TrainConfig, extractor: torch.nn.Module | None = None) -> None:
        super().__init__(config)
        self.extractor = extractor

    # ---------------------------------------------------------------------------- setup

    def _resolve(self) -> None:
        """The processes, the device and precision, the style, and every default the run fills in."""
        config = self.config
        if not config.style:
            raise TrainingError("style is required: a style image, a bundled style name or a model file with style targets")
        check_config(config)
        self.rank, self.world = _distributed()
        if config.batch_size % self.world:
            raise TrainingError(f"batch_size {config.batch_size} must be divisible by the {self.world} processes")
        devices = DeviceConfig.resolve(config.device, config.dtype, "train")
        self.config = resolve_defaults(self._resolve_styles(config), devices.device)
        if self.world > 1 and devices.device.type == "cuda":
            devices = dataclasses.replace(devices, device=torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
            torch.cuda.set_device(devices.device)
        self.devices = devices

    def _resolve_styles(self, config: TrainConfig) -> TrainConfig:
        """The style (``self.source``), and the config with the style size and loss it implies."""
        self.source = resolve_style(config.style)  # names the problem: unknown style, no targets, unreadable image
        if self.source.targets is not None:
            config = dataclasses.replace(config, style_size=stored_style_size(self.source, config.style, config.style_size))
        return adopt_target_weights(config, self.source)

    def _build_model(self) -> None:
        """The generator (seeded), its optimizer and learning-rate schedule."""
        from instyle.engine.models import build_generator

        config, device = self.config, self.devices.device
        torch.manual_seed(config.seed)
        options = {"norm": config.norm}
        if config.arch == "transformer":
            options.update(width=config.width, num_residual=config.num_residual)
        self.model = build_generator(config.arch, **options).to(device, memory_format=self.devices.memory_format)
        self._use_adam(config.lr, cosine_lr(config))

    def _load(self) -> None:
        """The photos, the loss network with its style targets, and the held-out crops."""
        config, device = self.config, self.devices.device
        self.content_images = load_content_set(config.content, config.image_size, config.num_content, config.content_size)
        self.crop_source = crop_source(self.content_images, device)
        # the loss network in its own layout: channels_last wherever it computes in 16 bits
        self.loss_fn = PerceptualLoss.from_config(config.loss, self.extractor).to(
            device, memory_format=self.devices.loss_memory_format
        )
        self._load_targets()
        self.eval_data = heldout_crops(config) if config.eval_content else None

    def _load_targets(self) -> None:
        """The style targets, into the loss (and the model file)."""
        self.style_targets = self._targets_of(self.source)
        apply_targets(self.loss_fn, self.style_targets, what=f"style {self.config.style}")

    def _targets_of(self, source) -> StyleTargets:
        """A style's targets: stored ones, or computed once, in fp32 (also under dtype bf16), so that a
        style given by its stored targets trains exactly like the image they were computed from."""
        return source.targets or compute_style_targets(
            source.image, style_size=self.config.style_size, layers=self.config.loss.style_layers,
            extractor=self.loss_fn.extractor, style_name=source.name, style_sha256=source.style_sha256,
            device=self.devices.device,
        )  # fmt: skip

    def _ready(self) -> None:
        """The modules the steps run: DDP under torchrun, compiled with ``config.compile``; the plain
        modules still serve evaluation, samples and the saved file. On CUDA, one process, transformer
        generator, the steps are replayed from a CUDA graph."""
        config = self.config
        self._train_model, self._step_loss = self.model, self.loss_fn
        if self.world > 1:
            device = self.devices.device
            self._train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if config.compile:
            # static shapes: every step has the same; dynamic=False keeps a recompile from turning them symbolic
            self._train_model = torch.compile(self._train_model, dynamic=False)
            self._step_loss = torch.compile(self.loss_fn, dynamic=False)
        # (not for a multi-style run: its style changes from step to step, which a replay would have to
        # read from tensors updated in place; not verified on a GPU yet)
        self._use_graph = (
            config.cuda_graph and self.devices.device.type == "cuda" and self.world == 1 and config.arch == "transformer"
            and not config.multi_style
        )  # fmt: skip
        self._local = config.batch_size // self.world

    # ---------------------------------------------------------------------------- steps

    def _batch(self, step: int) -> Tensor:
        """This process's slice of the global batch of ``step``, on the device."""
        batch = batch_for_step(self.crop_source, self.config, step)[self.rank * self._local : (self.rank + 1) * self._local]
        return batch.to(self.devices.device, memory_format=self.devices.memory_format)

    def _loss(self, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self._step_loss(self._train_model(batch), batch)

    # ---------------------------------------------------------------------------- evaluation, files

    def _heldout_terms(self) -> dict[str, float]:
        return heldout_loss(self.model, self.loss_fn, self.eval_data, self.devices.device, self.devices.memory_format)

    def save_samples(self) -> None:
        path = self.log_dir / f"samples_{self.state.step:06d}.png"
        save_samples(self.model, self.content_images, path, self.devices.device)

    def _metadata(self, best_heldout: dict | None, best_step: int) -> dict:
        return {
            "training": self.config.to_json(),
            "style_name": self.source.name,
            "style_sha256": self.style_targets.style_sha256,
            "style_source": self.source.to_json(),
            **self._run_metadata(best_heldout, best_step),
        }

    def _run_metadata(self, best_heldout: dict | None, best_step: int) -> dict:
        """What the model file records of the run besides its style."""
        return {
            "vgg_weights_sha256": getattr(self.loss_fn.extractor, "weights_sha256", None),
            "final_losses": {k: v for k, v in self.losses.items() if k != "images_per_s"},
            "heldout_losses": best_heldout,
            "iterations": self.state.step,
            "best_step": best_step,
            "stopped_early": self.state.stopped_early,
            "device": self.devices.device.type,
            "precision": self.devices.precision,
            "instyle_version": __version__,
            **self._checkpoint_extra(),  # what a fine-tuned run started from
        }


# ---------------------------------------------------------------------------- helpers


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, loss_fn: PerceptualLoss, crops: Tensor, device, memory_format) -> dict[str, float]:
    """Mean weighted loss terms over ``crops``, in eval mode and fp32."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for i in range(0, len(crops), 8):
        batch = crops[i : i + 8].to(device, memory_format=memory_format)
        total, terms = loss_fn(model(batch), batch)
        for key, value in {"total": total, **terms}.items():
            sums[key] = sums.get(key, 0.0) + float(value) * len(batch)
    model.train(was_training)
    return {key: value / len(crops) for key, value in sums.items()}


def stored_style_size(source, style: str, requested: int | None) -> int:
    """Stored style statistics exist at one size only: the style size is the one they were
    computed at; a different explicit ``style_size`` is an error."""
    recorded = source.targets.style_size
    if requested is not None and requested != recorded:
        raise TrainingError(
            f"style_size {requested} conflicts with style {style}: its style targets were computed at "
            f"{recorded} px; leave style_size unset (or set it to {recorded}), or give the style image"
        )
    return recorded


def resolve_defaults(config: TrainConfig, device: torch.device) -> TrainConfig:
    """Fill in the defaults that depend on the device (crop and style sizes) or on the run (the
    learning rate: higher where only a base's new style rows train)."""
    image_size = config.image_size or (256 if device.type == "cuda" else 128)
    style_size = config.style_size or 3 * image_size
    lr = config.lr or (BASE_LR if config.base is not None else DEFAULT_LR)
    return dataclasses.replace(config, image_size=image_size, style_size=style_size, lr=lr)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world
