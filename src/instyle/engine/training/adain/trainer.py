"""Training the AdaIN decoder: ``train_adain(AdaINConfig(...))``.

The run has the machinery of ``instyle train`` and shares its code: the checkpoint format and its
atomic writes (:mod:`instyle.engine.training.checkpoint`), the CSV logs and the loss curve
(:mod:`instyle.engine.training.log`), SIGINT/SIGTERM ending the run after the step under way with a
checkpoint, the refusal to overwrite an unfinished run, and a NaN loss or weight stopping the run
without overwriting the last good checkpoint. The crops of a step depend on (seed, step) alone and
the RNG states are saved, so N steps straight equal k steps + resume + N - k steps.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from instyle import __version__
from instyle.engine.device import DeviceConfig
from instyle.engine.fileio import write_atomic
from instyle.engine.image import save_image
from instyle.engine.losses.adain import FEATURE_SCALE, decoder_loss
from instyle.engine.modelfile import save_model
from instyle.engine.models.adain import (
    CONTENT_LAYER, ENCODER_WEIGHTS, STYLE_LAYERS, AdaINDecoder, adain, build_encoder, feature_stats,
)  # fmt: skip
from instyle.engine.training import checkpoint as ckpt
from instyle.engine.training.adain.config import AdaINConfig, check_config
from instyle.engine.training.adain.data import (
    SPLIT_SALT, crops_for_step, load_images, split_folder, to_float, validation_listing, validation_pairs,
)  # fmt: skip
from instyle.engine.training.checkpoint import CHECKPOINT_NAME, TrainState
from instyle.engine.training.config import TrainingError, TrainingInterrupted, TrainResult
from instyle.engine.training.data import crop_source
from instyle.engine.training.log import write_log, write_rows
from instyle.engine.training.trainer import _caught_signals, _cudnn_autotuning

# What a resumed run may change: how long it runs, what it logs and where, where its folders are,
# and the device (not the precision): every other setting must be the checkpoint's.
_RESUME_MAY_CHANGE = frozenset({
    "iterations", "checkpoint_every", "eval_every", "sample_every", "log_dir", "resume", "output", "content",
    "styles", "device", "save_dtype",
})  # fmt: skip
TERMS = ("total", "content", "style")


def train_adain(
    config: AdaINConfig, on_step: Callable[[int, dict[str, float]], None] | None = None, handle_signals: bool = True
) -> TrainResult:
    """Train the decoder ``config`` describes and write it to ``config.output``.

    ``on_step(step, losses)`` follows each step. With ``handle_signals``, SIGINT and SIGTERM end the
    run after the step under way: a checkpoint is written and TrainingInterrupted raised."""
    trainer = AdaINTrainer(config)
    trainer.setup()
    with _caught_signals(handle_signals) as caught, _cudnn_autotuning(trainer.devices.device):
        while not trainer.done:
            losses = trainer.step()
            if trainer.evaluation_due():
                trainer.evaluate()
            if on_step is not None:
                on_step(trainer.state.step, losses)
            if trainer.checkpoint_due():
                trainer.save_checkpoint()
            if trainer.samples_due():
                trainer.save_samples()
            if caught:
                trainer.interrupt(caught[0])
    return trainer.finish()


def inverse_decay(lr_decay: float) -> Callable[[int], float]:
    """The factor of the learning rate at each step, for ``LambdaLR``: 1 / (1 + lr_decay * step), as
    the paper's code decays it."""
    return lambda step: 1.0 / (1.0 + lr_decay * step)


class AdaINTrainer:
    """One run: :meth:`setup`, then :meth:`step` until :attr:`done`, with :meth:`evaluate`,
    :meth:`save_checkpoint` and :meth:`save_samples` where due, then :meth:`finish`."""

    def __init__(self, config: AdaINConfig) -> None:
        self.config = config
        self.state = TrainState()
        self.losses: dict[str, float] = {}

    # ---------------------------------------------------------------------------- setup

    def setup(self) -> None:
        """Check the settings, split and load the images, build the networks and the optimizer, and
        continue the checkpoint where ``config.resume`` asks."""
        config = self.config
        check_config(config)
        self.devices = DeviceConfig.resolve(config.device, config.dtype, "train")
        self.output = Path(config.output)
        self.log_dir = Path(config.log_dir) if config.log_dir else self.output.with_name(self.output.stem + ".train")
        self.checkpoint_path = self.log_dir / CHECKPOINT_NAME
        if not config.resume and self.checkpoint_path.exists():
            ckpt.refuse_to_restart_unfinished(self.checkpoint_path)
        self._load_data()
        self._build()
        if config.resume:
            self.state = self._resume()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.log_dir / "validation.txt", self._listing)  # what this run holds out
        self.start = time.perf_counter()

    def _load_data(self) -> None:
        """The split first (errors before any decoding), then the training images and the
        validation images, each loaded on its own: training never reads a validation file."""
        config, device = self.config, self.devices.device
        photos = split_folder(config.content, config.validation_fraction, "content")
        paintings = split_folder(config.styles, config.validation_fraction, "styles")
        self.counts = {
            "photos": len(photos.train), "paintings": len(paintings.train),
            "validation_photos": len(photos.validation), "validation_paintings": len(paintings.validation),
        }  # fmt: skip
        size, side = config.image_size, config.max_side
        self.photos = crop_source(load_images(photos.train, side, size), device)
        self.paintings = crop_source(load_images(paintings.train, side, size), device)
        self.validation: tuple[Tensor, Tensor] | None = None
        if photos.validation and paintings.validation:
            held = load_images(photos.validation, side, size), load_images(paintings.validation, side, size)
            self.validation = validation_pairs(*held, size)
        self._listing = validation_listing((config.content, photos), (config.styles, paintings))

    def _build(self) -> None:
        config, devices = self.config, self.devices
        torch.manual_seed(config.seed)
        self.decoder = AdaINDecoder().to(devices.device, memory_format=devices.memory_format)
        self.encoder = build_encoder().to(devices.device, memory_format=devices.loss_memory_format)
        fused = True if devices.device.type == "cuda" else None
        self.optimizer = torch.optim.Adam(self.decoder.parameters(), lr=config.lr, fused=fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, inverse_decay(config.lr_decay))

    def _resume(self) -> TrainState:
        """The checkpoint's weights, optimizer, schedule, RNG states and progress, after checking that
        this run's settings continue the run it holds."""
        if not self.checkpoint_path.exists():
            raise TrainingError(f"resume: no checkpoint at {self.checkpoint_path}")
        saved = ckpt.load_checkpoint(self.checkpoint_path)
        before, now = json.loads(saved.get("config", "{}")), self.config.to_json()
        changed = [n for n in now if n not in _RESUME_MAY_CHANGE and n in before and before[n] != now[n]]
        if changed:
            settings = ", ".join(f"{n} {before[n]} (now {now[n]})" for n in changed)
            raise TrainingError(
                f"resume: {self.checkpoint_path} was made with {settings}; resume with its settings, "
                "or start a new run in another log_dir"
            )
        self.decoder.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        ckpt.set_rng_state(saved["rng"])
        return TrainState(
            step=int(saved["step"]), history=list(saved.get("history", [])), heldout=list(saved.get("heldout", [])),
            train_seconds=float(saved.get("train_seconds", 0.0)),
        )  # fmt: skip

    # ---------------------------------------------------------------------------- steps

    @property
    def done(self) -> bool:
        return self.state.step >= self.config.iterations

    def step(self) -> dict[str, float]:
        """One optimizer step on this step's crops: its loss terms and images_per_s, also appended
        to the history. A loss that is not finite stops the run before the weights change."""
        config, state, devices = self.config, self.state, self.devices
        pair = crops_for_step(self.photos, self.paintings, config.batch_size, config.image_size, config.seed, state.step)
        content, style = (to_float(batch, devices.device, devices.memory_format) for batch in pair)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with devices.autocast_context():
            total, terms = self._loss(content, style)
        total.backward()
        values = torch.stack([total.detach().float(), *(t.detach().float() for t in terms.values())]).tolist()
        if not math.isfinite(values[0]):
            last_good = self.checkpoint_path if self.checkpoint_path.exists() else "none"
            raise TrainingError(
                f"loss became {values[0]} at step {state.step + 1}; stopped without saving "
                f"(last good checkpoint: {last_good})"
            )
        self.optimizer.step()
        self.scheduler.step()
        state.step += 1
        seconds = time.perf_counter() - start
        state.train_seconds += seconds
        self.losses = {**dict(zip(TERMS, values)), "images_per_s": config.batch_size / max(seconds, 1e-9)}
        state.history.append({"step": state.step, **self.losses})
        return self.losses

    def _loss(self, content: Tensor, style: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return decoder_loss(self.encoder, self.decoder, content, style, self.config.content_weight, self.config.style_weight)

    # ---------------------------------------------------------------------------- evaluation, files

    def evaluation_due(self) -> bool:
        step, config = self.state.step, self.config
        return self.validation is not None and (step % config.eval_every == 0 or step == config.iterations)

    @torch.no_grad()
    def evaluate(self) -> None:
        """The mean loss terms over the validation pairs, without gradients and in fp32, logged to heldout.csv
        with the training seconds so far."""
        content, style = self.validation
        sums = dict.fromkeys(TERMS, 0.0)
        batch = self.config.batch_size
        for i in range(0, len(content), batch):
            pair = (to_float(t[i : i + batch], self.devices.device, self.devices.memory_format) for t in (content, style))
            total, terms = self._loss(*pair)
            for key, value in zip(TERMS, (total, *terms.values())):
                sums[key] += float(value) * len(content[i : i + batch])
        state = self.state
        state.heldout.append({
            "step": state.step, "train_seconds": round(state.train_seconds, 3),
            **{key: value / len(content) for key, value in sums.items()},
        })  # fmt: skip
        write_rows(state.heldout, self.log_dir / "heldout.csv")

    def checkpoint_due(self) -> bool:
        return self.state.step % self.config.checkpoint_every == 0 or self.state.step == self.config.iterations

    def save_checkpoint(self) -> None:
        """The checkpoint and the CSV log; weights gone NaN or inf never overwrite a good one."""
        if not all(torch.isfinite(p).all() for p in self.decoder.parameters()):
            raise TrainingError(
                f"weights became NaN or inf by step {self.state.step}; stopped without overwriting {self.checkpoint_path}"
            )
        ckpt.save_checkpoint(self.checkpoint_path, self.decoder, self.optimizer, self.scheduler, self.state, self.config)
        write_log(self.state.history, self.log_dir, self.state.heldout, plot=False)  # a plot costs more

    def samples_due(self) -> bool:
        every = self.config.sample_every
        return self.validation is not None and bool(every) and self.state.step % every == 0

    @torch.no_grad()
    def save_samples(self) -> None:
        """Up to four validation pairs, a row each: photo, painting, the decoder's stylization."""
        content, style = (t[:4].float().div(255).to(self.devices.device) for t in self.validation)
        features = self.encoder(torch.cat([content, style]))[CONTENT_LAYER]
        n = len(content)
        stylized = self.decoder(adain(features[:n], *feature_stats(features[n:]))).clamp(0, 1)
        rows = [torch.cat(list(images), dim=2) for images in zip(content, style, stylized)]
        save_image(torch.cat(rows, dim=1).cpu(), self.log_dir / f"samples_{self.state.step:06d}.png")

    def interrupt(self, signum: int) -> None:
        """Stop after a signal: the checkpoint and the logs, then TrainingInterrupted."""
        self.save_checkpoint()
        write_log(self.state.history, self.log_dir, self.state.heldout)
        raise TrainingInterrupted(signum, self.checkpoint_path, self.state.step)

    def finish(self) -> TrainResult:
        """The decoder file with its metadata, the logs and the loss curve; the run's result."""
        state = self.state
        write_log(state.history, self.log_dir, state.heldout)
        dtype = torch.float16 if self.config.save_dtype == "fp16" else None
        save_model(self.decoder, self.output, self._metadata(), dtype=dtype)
        seconds = time.perf_counter() - self.start
        return TrainResult(
            self.decoder, state.step, self.losses, self.output, self.log_dir, seconds, state.history, best_step=state.step
        )

    def _metadata(self) -> dict:
        return {
            "training": self.config.to_json(),
            "encoder": {
                "weights": ENCODER_WEIGHTS, "sha256": self.encoder.weights_sha256, "layer": CONTENT_LAYER,
                "style_layers": list(STYLE_LAYERS), "feature_scale": FEATURE_SCALE,
            },
            "data": {**self.counts, "validation_rule": f"sha256({SPLIT_SALT!r} + file name) < fraction"},
            "final_losses": {k: v for k, v in self.losses.items() if k != "images_per_s"},
            "validation_losses": self.state.heldout[-1] if self.state.heldout else None,
            "iterations": self.state.step,
            "train_seconds": round(self.state.train_seconds, 1),
            "device": self.devices.device.type,
            "precision": self.devices.precision,
            "instyle_version": __version__,
        }  # fmt: skip
