"""Training the AdaIN decoder (``train_adain(AdaINConfig(...))``, :mod:`.run`).

:class:`AdaINTrainer` says what is trained and on what: the decoder, the photos and paintings
(:mod:`.data`), the loss (:mod:`instyle.engine.losses.adain`), the validation loss and samples.
The rest is ``instyle train``'s machinery, run by the same driver
(:func:`~instyle.engine.training.loop.run_training`): the checkpoint format, its atomic writes and
the resume checks (:mod:`instyle.engine.training.checkpoint`), the CSV logs and the loss curve,
SIGINT/SIGTERM ending the run after the step under way with a checkpoint, the refusal to overwrite
an unfinished run, and a NaN loss or weight stopping the run without overwriting the last good
checkpoint. The crops of a step depend on (seed, step) alone and the RNG states are saved, so N
steps straight equal k steps + resume + N - k steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from instyle import __version__
from instyle.engine.device import DeviceConfig
from instyle.engine.fileio import write_atomic
from instyle.engine.image import save_image
from instyle.engine.losses.adain import FEATURE_SCALE, decoder_loss
from instyle.engine.models.adain import (
    CONTENT_LAYER, ENCODER_WEIGHTS, STYLE_LAYERS, AdaINDecoder, adain, build_encoder, feature_stats,
)  # fmt: skip
from instyle.engine.training.adain.config import RESUME_MAY_CHANGE, AdaINConfig, check_config
from instyle.engine.training.adain.data import (
    SPLIT_SALT, crops_for_step, load_images, split_folder, to_float, validation_listing, validation_pairs,
)  # fmt: skip
from instyle.engine.training.data import crop_source
from instyle.engine.training.loop import TrainingRun


def inverse_decay(lr_decay: float) -> Callable[[int], float]:
    """The factor of the learning rate at each step, for ``LambdaLR``: 1 / (1 + lr_decay * step), as
    the paper's code decays it."""
    return lambda step: 1.0 / (1.0 + lr_decay * step)


class AdaINTrainer(TrainingRun):
    """One run training the AdaIN decoder (:class:`~instyle.engine.training.loop.TrainingRun` drives
    it): the split photos and paintings, the decoder, the frozen encoder that judges it."""

    resume_may_change = RESUME_MAY_CHANGE

    # ---------------------------------------------------------------------------- setup

    def _resolve(self) -> None:
        check_config(self.config)
        self.devices = DeviceConfig.resolve(self.config.device, self.config.dtype, "train")

    def _build_model(self) -> None:
        """The decoder (seeded), its optimizer and learning-rate schedule."""
        config, devices = self.config, self.devices
        torch.manual_seed(config.seed)
        self.model = AdaINDecoder().to(devices.device, memory_format=devices.memory_format)
        self._use_adam(config.lr, inverse_decay(config.lr_decay))

    def _load(self) -> None:
        """The split first (errors before any decoding), then the training images and the validation
        images, each loaded on its own (training never reads a validation file), then the encoder."""
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
        if photos.validation and paintings.validation:
            held = load_images(photos.validation, side, size), load_images(paintings.validation, side, size)
            self.eval_data = validation_pairs(*held, size)
        self._listing = validation_listing((config.content, photos), (config.styles, paintings))
        self.encoder = build_encoder().to(device, memory_format=self.devices.loss_memory_format)

    def _ready(self) -> None:
        """The list of held-out files, in the log folder."""
        write_atomic(self.log_dir / "validation.txt", self._listing)  # what this run holds out

    # ---------------------------------------------------------------------------- steps

    def _batch(self, step: int) -> tuple[Tensor, Tensor]:
        """The photo and painting crops of ``step``, as floats on the device."""
        config, devices = self.config, self.devices
        pair = crops_for_step(self.photos, self.paintings, config.batch_size, config.image_size, config.seed, step)
        return tuple(to_float(batch, devices.device, devices.memory_format) for batch in pair)

    def _loss(self, pair: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        config = self.config
        return decoder_loss(self.encoder, self.model, *pair, config.content_weight, config.style_weight)

    # ---------------------------------------------------------------------------- evaluation, files

    @torch.no_grad()
    def _heldout_terms(self) -> dict[str, float]:
        """The mean loss terms over the validation pairs, without gradients and in fp32."""
        content, style = self.eval_data
        sums: dict[str, float] = {}
        batch = self.config.batch_size
        for i in range(0, len(content), batch):
            pair = tuple(to_float(t[i : i + batch], self.devices.device, self.devices.memory_format) for t in (content, style))
            total, terms = self._loss(pair)
            for key, value in {"total": total, **terms}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * len(pair[0])
        return {key: value / len(content) for key, value in sums.items()}

    def samples_due(self) -> bool:
        return self.eval_data is not None and super().samples_due()

    @torch.no_grad()
    def save_samples(self) -> None:
        """Up to four validation pairs, a row each: photo, painting, then :meth:`_sample_columns`."""
        content, style = (t[:4].float().div(255).to(self.devices.device) for t in self.eval_data)
        rows = [torch.cat(list(images), dim=2) for images in zip(content, style, *self._sample_columns(content, style))]
        save_image(torch.cat(rows, dim=1).cpu(), self.log_dir / f"samples_{self.state.step:06d}.png")

    def _sample_columns(self, content: Tensor, style: Tensor) -> list[Tensor]:
        """The samples' stylized columns: the decoder's."""
        return [self._decoded(self.model, content, style)]

    def _decoded(self, decoder: torch.nn.Module, content: Tensor, style: Tensor) -> Tensor:
        """``decoder``'s images of the photos ``content`` with the paintings ``style``, through the
        VGG-19 encoder and AdaIN, clamped."""
        features = self.encoder(torch.cat([content, style]))[CONTENT_LAYER]
        n = len(content)
        return decoder(adain(features[:n], *feature_stats(features[n:]))).clamp(0, 1)

    def _metadata(self, best_heldout: dict | None, best_step: int) -> dict:
        return {
            "training": self.config.to_json(),
            "encoder": {
                "weights": ENCODER_WEIGHTS, "sha256": self.encoder.weights_sha256, "layer": CONTENT_LAYER,
                "style_layers": list(STYLE_LAYERS), "feature_scale": FEATURE_SCALE,
            },
            "data": {**self.counts, "validation_rule": f"sha256({SPLIT_SALT!r} + file name) < fraction"},
            "final_losses": {k: v for k, v in self.losses.items() if k != "images_per_s"},
            "validation_losses": best_heldout,
            "iterations": self.state.step,
            "train_seconds": round(self.state.train_seconds, 1),
            "device": self.devices.device.type,
            "precision": self.devices.precision,
            "instyle_version": __version__,
            **self._checkpoint_extra(),  # what a fine-tuned run started from
        }  # fmt: skip
