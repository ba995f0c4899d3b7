"""Training a feed-forward stylization generator against the VGG descriptor network.

``train(TrainConfig(...))`` runs the loop and returns a ``TrainResult``; it prints nothing
(the CLI passes ``on_step`` for its progress bar). Everything a resume needs is saved
(:mod:`instyle.engine.training.checkpoint`), and the data order depends only on ``(seed, step)``
(:mod:`instyle.engine.training.data`), so N steps straight equal k steps + resume + N - k steps.

Multi-process: launched under ``torchrun``, each rank takes its slice of the same global
batch and DistributedDataParallel averages the gradients, so the loss curve matches one
process with the same global batch (instance norm is per sample).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from instyle import __version__
from instyle.engine.cuda_graphs import GraphedStep
from instyle.engine.device import DeviceConfig
from instyle.engine.fileio import WriteError
from instyle.engine.losses import PerceptualLoss
from instyle.engine.modelfile import save_model
from instyle.engine.targets import adopt_target_weights, apply_targets, compute_style_targets, resolve_style
from instyle.engine.training import checkpoint as ckpt
from instyle.engine.training.checkpoint import CHECKPOINT_NAME, TrainState
from instyle.engine.training.config import (
    ModelNotSaved, TrainConfig, TrainingError, TrainingInterrupted, TrainResult, check_config, log_dir_of,
)
from instyle.engine.training.data import batch_for_step, crop_source, heldout_crops, load_content_set
from instyle.engine.training.log import save_samples, write_log, write_rows
from instyle.engine.training.schedule import cosine_lr


def train(
    config: TrainConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    handle_signals: bool = True,
    extractor: torch.nn.Module | None = None,
) -> TrainResult:
    """Train the generator ``config`` describes; ``extractor`` replaces the VGG (tests).

    ``on_step(step, losses)`` follows each step. With ``handle_signals``, SIGINT and SIGTERM end
    the run after the step under way: a checkpoint is written and TrainingInterrupted raised."""
    trainer = Trainer(config, extractor)
    trainer.setup()
    with _caught_signals(handle_signals) as caught, _cudnn_autotuning(trainer.devices.device):
        while not trainer.done:
            losses = trainer.step()
            if trainer.evaluation_due():
                trainer.evaluate()
            if on_step is not None and trainer.rank == 0:
                on_step(trainer.state.step, losses)
            if trainer.checkpoint_due():
                trainer.save_checkpoint()
            if trainer.samples_due():
                trainer.save_samples()
            if caught:
                trainer.interrupt(caught[0])
    return trainer.finish()


class Trainer:
    """One training run: :meth:`setup`, then :meth:`step` until :attr:`done`, with :meth:`evaluate`,
    :meth:`save_checkpoint` and :meth:`save_samples` where due, then :meth:`finish`."""

    def __init__(self, config: TrainConfig, extractor: torch.nn.Module | None = None) -> None:
        self.config = config
        self.extractor = extractor
        self.state = TrainState()
        self.losses: dict[str, float] = {}  # the last step's
        self._term_names: list[str] = []
        self._graphed: GraphedStep | None = None
        self._eager_steps = 0
        self._good_checkpoint: Path | None = None  # this run's last checkpoint (written, or resumed from)

    # ---------------------------------------------------------------------------- setup

    def setup(self) -> None:
        """Check and resolve the settings, build the model and optimizer, continue the checkpoint where
        ``config.resume`` asks, load the photos and build the loss. The log folder is made last: a run
        refused on the way leaves nothing behind."""
        self._resolve()
        self._prepare_log_dir()
        self._build_generator()
        rng = self._resume() if self.config.resume else None  # before the photos and the loss network load
        config = self.config
        self.content_images = load_content_set(config.content, config.image_size, config.num_content, config.content_size)
        self.crop_source = crop_source(self.content_images, self.devices.device)
        self._build_loss()
        self.eval_crops = heldout_crops(config) if config.eval_content else None
        if self.rank == 0:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        if rng is not None:  # last: building the loss network draws random numbers
            ckpt.set_rng_state(rng)
        self._wrap_for_steps()
        self._use_graph = (
            config.cuda_graph and self.devices.device.type == "cuda" and self.world == 1 and config.arch == "transformer"
        )
        self._local = config.batch_size // self.world
        self.start = time.perf_counter()

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
        self.source = resolve_style(config.style)  # names the problem: unknown style, no targets, unreadable image
        if self.source.targets is not None:
            config = dataclasses.replace(config, style_size=stored_style_size(self.source, config.style, config.style_size))
        config = adopt_target_weights(config, self.source)
        self.config = resolve_sizes(config, devices.device)
        if self.world > 1 and devices.device.type == "cuda":
            devices = dataclasses.replace(devices, device=torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
            torch.cuda.set_device(devices.device)
        self.devices = devices

    def _prepare_log_dir(self) -> None:
        config = self.config
        self.output = Path(config.output)
        self.log_dir = log_dir_of(config)
        self.checkpoint_path = self.log_dir / CHECKPOINT_NAME
        if not config.resume and self.checkpoint_path.exists():
            ckpt.refuse_to_restart_unfinished(self.checkpoint_path)

    def _build_generator(self) -> None:
        """The generator (seeded), its optimizer and learning-rate schedule."""
        from instyle.engine.models import build_generator

        config, device = self.config, self.devices.device
        torch.manual_seed(config.seed)
        options = {"norm": config.norm}
        if config.arch == "transformer":
            options.update(width=config.width, num_residual=config.num_residual)
        self.model = build_generator(config.arch, **options).to(device, memory_format=self.devices.memory_format)
        # fused: one kernel for the whole update on CUDA instead of several per parameter tensor
        fused = True if device.type == "cuda" else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_lr(config))

    def _resume(self) -> dict:
        """The checkpoint, checked, into the model, optimizer and schedule; its RNG states returned."""
        self.state, rng = ckpt.resume_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.scheduler, self.config)
        self._good_checkpoint = self.checkpoint_path
        if self.state.history:  # a finished run resumed to save its model: the losses of its last step
            self.losses = {k: v for k, v in self.state.history[-1].items() if k != "step"}
        return rng

    def _build_loss(self) -> None:
        """The loss network with its style targets."""
        config, device = self.config, self.devices.device
        # the loss network in its own layout: channels_last wherever it computes in 16 bits
        self.loss_fn = PerceptualLoss.from_config(config.loss, self.extractor).to(
            device, memory_format=self.devices.loss_memory_format
        )
        # The targets are computed once, in fp32 (also under dtype bf16), so a style given by its stored
        # targets trains exactly like the image they were computed from; the model file keeps them.
        self.style_targets = self.source.targets or compute_style_targets(
            self.source.image, style_size=config.style_size, layers=config.loss.style_layers,
            extractor=self.loss_fn.extractor, style_name=self.source.name, style_sha256=self.source.style_sha256,
            device=device,
        )  # fmt: skip
        apply_targets(self.loss_fn, self.style_targets, what=f"style {config.style}")

    def _wrap_for_steps(self) -> None:
        """The modules the steps run: DDP under torchrun, compiled with ``config.compile``; the plain
        modules still serve evaluation, samples and the saved file."""
        self._train_model, self._step_loss = self.model, self.loss_fn
        if self.world > 1:
            device = self.devices.device
            self._train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if self.config.compile:
            # static shapes: every step has the same; dynamic=False keeps a recompile from turning them symbolic
            self._train_model = torch.compile(self._train_model, dynamic=False)
            self._step_loss = torch.compile(self.loss_fn, dynamic=False)

    # ---------------------------------------------------------------------------- steps

    @property
    def done(self) -> bool:
        return self.state.step >= self.config.iterations or self.state.stopped_early

    def step(self) -> dict[str, float]:
        """One optimizer step on this step's batch: its loss terms (the mean over the processes) and
        images_per_s, also appended to the history."""
        config, state, devices = self.config, self.state, self.devices
        batch = batch_for_step(self.crop_source, config, state.step)[self.rank * self._local : (self.rank + 1) * self._local]
        batch = batch.to(devices.device, memory_format=devices.memory_format)
        step_start = time.perf_counter()
        # One device-to-host read per step for every term (each .item() waits for the GPU).
        values = self._forward_backward_step(batch).tolist()
        if not math.isfinite(values[0]):
            raise TrainingError(f"loss became {values[0]} at step {state.step + 1}; stopped without saving ({self._last_good()})")
        self.optimizer.step()
        self.scheduler.step()
        state.step += 1
        losses = dict(zip(["total", *self._term_names], values))
        if self.world > 1:
            packed = torch.tensor(list(losses.values()), dtype=torch.float64, device=devices.device)
            torch.distributed.all_reduce(packed)
            losses = dict(zip(losses, (packed / self.world).tolist()))
        seconds = time.perf_counter() - step_start
        state.train_seconds += seconds
        losses["images_per_s"] = config.batch_size / max(seconds, 1e-9)
        state.history.append({"step": state.step, **losses})
        self.losses = losses
        return losses

    def _forward_backward_step(self, batch: Tensor) -> Tensor:
        """Gradients of ``batch`` into .grad, replayed from the CUDA graph once captured; the loss terms."""
        if self._use_graph and self._graphed is None and self._eager_steps >= GraphedStep.EAGER_STEPS:
            self._graphed = GraphedStep.capture(self._forward_backward, batch, self.optimizer)
            self._use_graph = self._graphed is not None
        if self._graphed is not None:
            return self._graphed(batch)
        self.optimizer.zero_grad(set_to_none=True)
        # without autocast's weight cache where a capture follows, as the capture must run: a
        # compiled step would otherwise recompile for the changed autocast state
        values = self._forward_backward(batch, cache=not self._use_graph)
        self._eager_steps += 1
        return values

    def _forward_backward(self, batch: Tensor, cache: bool = True) -> Tensor:
        """Loss and gradients of one batch (into .grad); the loss terms as one tensor, total first."""
        with self.devices.autocast_context(cache=cache):
            stylized = self._train_model(batch)
            total, terms = self._step_loss(stylized, batch)
        self._term_names[:] = list(terms)
        total.backward()
        return torch.stack([total.detach().float(), *(v.detach().float() for v in terms.values())])

    # ---------------------------------------------------------------------------- evaluation, files

    def evaluation_due(self) -> bool:
        step, config = self.state.step, self.config
        return self.eval_crops is not None and (step % config.eval_every == 0 or step == config.iterations)

    def evaluate(self) -> None:
        """The held-out loss, logged to heldout.csv; with ``config.patience``, the best evaluation's
        weights are kept and the run stops early when they stop improving (rank 0 decides for all)."""
        state = self.state
        if self.rank == 0:
            terms = heldout_loss(self.model, self.loss_fn, self.eval_crops, self.devices.device, self.devices.memory_format)
            state.heldout.append({"step": state.step, "train_seconds": round(state.train_seconds, 3), **terms})
            write_rows(state.heldout, self.log_dir / "heldout.csv")
            if self.config.patience:
                self._track_best(terms["total"])
        if self.world > 1 and self.config.patience:
            flag = torch.tensor([float(state.stopped_early)], device=self.devices.device)
            torch.distributed.broadcast(flag, src=0)
            state.stopped_early = bool(flag.item())

    def _track_best(self, total: float) -> None:
        state = self.state
        if state.best is None or total < state.best["total"]:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            state.best = {"step": state.step, "total": total, "model": weights}
        state.stopped_early = sum(h["step"] > state.best["step"] for h in state.heldout) >= self.config.patience

    def checkpoint_due(self) -> bool:
        step, config = self.state.step, self.config
        return step % config.checkpoint_every == 0 or step == config.iterations or self.state.stopped_early

    def save_checkpoint(self) -> None:
        """The checkpoint and the CSV log (rank 0); weights or optimizer state gone NaN or inf never
        overwrite a good checkpoint (nor would a resume take them)."""
        if self.rank != 0:
            return
        bad = ckpt.nonfinite_state(self.model, self.optimizer)
        if bad:
            raise TrainingError(f"{bad} became NaN or inf by step {self.state.step}; stopped without saving ({self._last_good()})")
        ckpt.save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.scheduler, self.state, self.config)
        self._good_checkpoint = self.checkpoint_path
        write_log(self.state.history, self.log_dir, self.state.heldout, plot=False)  # a plot costs more

    def _last_good(self) -> str:
        """Where this run can be resumed from: never a checkpoint another run left in the log folder."""
        if self._good_checkpoint is None:
            return "no checkpoint of this run yet"
        return f"last good checkpoint: {self._good_checkpoint}"

    def samples_due(self) -> bool:
        every = self.config.sample_every
        return self.rank == 0 and bool(every) and self.state.step % every == 0

    def save_samples(self) -> None:
        path = self.log_dir / f"samples_{self.state.step:06d}.png"
        save_samples(self.model, self.content_images, path, self.devices.device)

    def interrupt(self, signum: int) -> None:
        """Stop after a signal: the checkpoint and the logs, then TrainingInterrupted."""
        self.save_checkpoint()
        if self.rank == 0:
            write_log(self.state.history, self.log_dir, self.state.heldout)
        raise TrainingInterrupted(signum, self.checkpoint_path, self.state.step)

    def finish(self) -> TrainResult:
        """The model of the best evaluation (with patience) or of the last step, saved with its
        metadata (rank 0), and the run's result."""
        state = self.state
        best_heldout = state.heldout[-1] if state.heldout else None
        if state.best is not None:  # the model of the best evaluation, not the last step's
            self.model.load_state_dict(state.best["model"])
            best_heldout = next(h for h in state.heldout if h["step"] == state.best["step"])
        best_step = state.best["step"] if state.best else state.step
        if self.rank == 0:
            try:
                write_log(state.history, self.log_dir, state.heldout)
                save_model(
                    self.model, self.output, self._metadata(best_heldout, best_step),
                    dtype=torch.float16 if self.config.save_dtype == "fp16" else None, style_targets=self.style_targets,
                )  # fmt: skip
            except OSError as error:  # the disk filled up, say: the checkpoint of the last step holds the run
                reason = error.strerror if isinstance(error, WriteError) else str(error)  # WriteError's names the file
                raise ModelNotSaved(reason, self.checkpoint_path, self.log_dir) from error
        if self.world > 1:
            torch.distributed.barrier()
        return TrainResult(
            self.model, state.step, self.losses, self.output, self.log_dir, time.perf_counter() - self.start,
            state.history, best_step=best_step, stopped_early=state.stopped_early,
        )  # fmt: skip

    def _metadata(self, best_heldout: dict | None, best_step: int) -> dict:
        return {
            "training": self.config.to_json(),
            "style_name": self.source.name,
            "style_sha256": self.style_targets.style_sha256,
            "style_source": self.source.to_json(),
            "vgg_weights_sha256": getattr(self.loss_fn.extractor, "weights_sha256", None),
            "final_losses": {k: v for k, v in self.losses.items() if k != "images_per_s"},
            "heldout_losses": best_heldout,
            "iterations": self.state.step,
            "best_step": best_step,
            "stopped_early": self.state.stopped_early,
            "device": self.devices.device.type,
            "precision": self.devices.precision,
            "instyle_version": __version__,
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


def resolve_sizes(config: TrainConfig, device: torch.device) -> TrainConfig:
    """Fill in the device-dependent defaults (crop and style sizes)."""
    image_size = config.image_size or (256 if device.type == "cuda" else 128)
    style_size = config.style_size or 3 * image_size
    return dataclasses.replace(config, image_size=image_size, style_size=style_size)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


@contextlib.contextmanager
def _caught_signals(enabled: bool) -> Iterator[list[int]]:
    """SIGINT and SIGTERM, while inside, only noted (in the list yielded), so that the step under way
    finishes and a checkpoint follows; the previous handlers come back on leaving."""
    caught: list[int] = []
    previous = {}
    if enabled:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda s, _frame: caught.append(s))
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _cudnn_autotuning(device: torch.device) -> Iterator[None]:
    """Every step has the same shapes: let cuDNN time its algorithms once (for this loop only)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
