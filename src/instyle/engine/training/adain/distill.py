"""The distilled AdaIN model: ``instyle train-adain --distill-from DECODER`` (issue #18, part 7).

A light encoder-decoder pair (:class:`~instyle.engine.models.adain.FastAdaIN`, half VGG-19's widths:
a quarter of the multiply-adds) learns to do what the trained decoder does with the VGG-19 encoder,
after Wang et al. (CVPR 2020, "Collaborative Distillation for Ultra-Resolution Universal Style
Transfer"): the student runs AdaIN in its own feature space, and its image is judged against the
teacher's image in the VGG-19 features, plus the decoder's own style loss against the painting
(:func:`~instyle.engine.losses.adain.distillation_loss`). It starts from the teacher's strongest
filters (L1 norm, as Li et al., ICLR 2017, prune), not from noise: CPU hours are few.

Everything else (split, crops, validation, checkpoints, resume, signals, NaN guard, logs) is
:class:`~instyle.engine.training.adain.trainer.AdaINTrainer`'s.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from instyle.engine.image import save_image
from instyle.engine.losses.adain import distillation_loss
from instyle.engine.modelfile import load_generator
from instyle.engine.models.adain import CONTENT_LAYER, AdaINDecoder, FastAdaIN, adain, build_encoder, feature_stats
from instyle.engine.models.vgg import VGGFeatures
from instyle.engine.training.adain.trainer import AdaINTrainer, inverse_decay

__all__ = ["AdaINDistiller", "prune_into"]


def _strongest(weight: Tensor, count: int) -> Tensor:
    """The indices of the ``count`` output filters of ``weight`` with the largest L1 norm, in order."""
    if count >= weight.shape[0]:
        return torch.arange(weight.shape[0])
    return weight.abs().sum(dim=(1, 2, 3)).topk(count).indices.sort().values


@torch.no_grad()
def _copy_pruned(pairs: list[tuple[nn.Conv2d, nn.Conv2d]], keep: Tensor) -> Tensor:
    """Each student convolution of ``pairs`` takes its teacher's strongest filters, on the input
    channels kept before it (``keep``); the channels its last layer kept returned."""
    for teacher, student in pairs:
        weight = teacher.weight[:, keep]
        keep = _strongest(weight, student.out_channels)
        student.weight.copy_(weight[keep])
        student.bias.copy_(teacher.bias[keep])
    return keep


def prune_into(student: FastAdaIN, encoder: VGGFeatures, decoder: AdaINDecoder) -> None:
    """Start ``student`` from the teacher (the VGG-19 ``encoder`` to relu4_1 and its trained
    ``decoder``): each layer keeps the strongest filters of the teacher's layer, reading the
    channels the layer before kept; the decoder reads the channels the encoder kept."""
    teacher_convs = [getattr(encoder, name) for name in encoder._sequence if name.startswith("conv")]
    if len(teacher_convs) != len(student.encoder.convs):
        raise ValueError(f"the student has {len(student.encoder.convs)} encoder convolutions, the teacher {len(teacher_convs)}")
    keep = _copy_pruned(list(zip(teacher_convs, student.encoder.convs)), torch.arange(3))
    decoder_pairs = [
        (t.conv, s.conv) for t, s in zip(decoder.layers, student.decoder.layers) if not isinstance(t, nn.Upsample)
    ]  # fmt: skip
    _copy_pruned(decoder_pairs, keep)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class AdaINDistiller(AdaINTrainer):
    """A run training the distilled pair against the decoder ``config.distill_from``."""

    def _build_model(self) -> None:
        """The student, pruned from the teacher (a resume then loads its own weights)."""
        config, devices = self.config, self.devices
        self.teacher_path = Path(config.distill_from)
        teacher, _ = load_generator(self.teacher_path, archs=(AdaINDecoder.arch,))
        torch.manual_seed(config.seed)
        student = FastAdaIN()
        prune_into(student, build_encoder(), teacher)
        self.teacher = teacher.to(devices.device, memory_format=devices.memory_format).requires_grad_(False)
        self.model = student.to(devices.device, memory_format=devices.memory_format)
        self._use_adam(config.lr, inverse_decay(config.lr_decay))

    def _loss(self, pair: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        config = self.config
        return distillation_loss(self.encoder, self.teacher, self.model, *pair, config.distill_weight, config.style_weight)

    @torch.no_grad()
    def save_samples(self) -> None:
        """Up to four validation pairs, a row each: photo, painting, the teacher's, the student's."""
        content, style = (t[:4].float().div(255).to(self.devices.device) for t in self.eval_data)
        features = self.encoder(torch.cat([content, style]))[CONTENT_LAYER]
        n = len(content)
        teacher = self.teacher(adain(features[:n], *feature_stats(features[n:]))).clamp(0, 1)
        student = self.model(content, style).clamp(0, 1)
        rows = [torch.cat(list(images), dim=2) for images in zip(content, style, teacher, student)]
        save_image(torch.cat(rows, dim=1).cpu(), self.log_dir / f"samples_{self.state.step:06d}.png")

    def _metadata(self, best_heldout: dict | None, best_step: int) -> dict:
        metadata = super()._metadata(best_heldout, best_step)
        metadata["teacher"] = {"file": self.teacher_path.name, "sha256": _digest(self.teacher_path)}
        return metadata
