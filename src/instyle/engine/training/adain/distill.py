"""The distilled AdaIN model: ``instyle train-adain --distill-from DECODER`` (issue #18, part 7).

A light encoder-decoder pair (:class:`~instyle.engine.models.adain.FastAdaIN`, half VGG-19's widths:
a quarter of the multiply-adds) learns to do what the trained decoder does with the VGG-19 encoder,
after Wang et al. (CVPR 2020, "Collaborative Distillation for Ultra-Resolution Universal Style
Transfer"): the student runs AdaIN in its own feature space, and its image is judged against the
teacher's image in the VGG-19 features, plus the decoder's own style loss against the painting
(:func:`~instyle.engine.losses.adain.distillation_loss`). It starts from the teacher's strongest
filters (L1 norm, as Li et al., ICLR 2017, prune), each layer refitted by least squares to the
teacher channels it stands for (:func:`prune_into`), not from noise: CPU hours are few.

Everything else (split, crops, validation, checkpoints, resume, signals, NaN guard, logs) is
:class:`~instyle.engine.training.adain.trainer.AdaINTrainer`'s.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from instyle.engine.losses.adain import distillation_loss
from instyle.engine.modelfile import load_generator
from instyle.engine.models.adain import AdaINDecoder, AdaINEncoder, FastAdaIN, adain, feature_stats
from instyle.engine.models.vgg import VGGFeatures
from instyle.engine.training.adain.data import crops_for_step, to_float
from instyle.engine.training.adain.trainer import AdaINTrainer, inverse_decay
from instyle.engine.weights import file_sha256

__all__ = ["AdaINDistiller", "prune_into"]


def _strongest(weight: Tensor, count: int) -> Tensor:
    """The indices of the ``count`` output filters of ``weight`` with the largest L1 norm, in order."""
    if count >= weight.shape[0]:
        return torch.arange(weight.shape[0])
    return weight.abs().sum(dim=(1, 2, 3)).topk(count).indices.sort().values


CALIBRATION_PAIRS = 64  # photo-painting crops the least squares fit on: enough rows at relu4_1's 1/8 scale
SAMPLES = 2048  # output positions per image a layer's least squares takes
RIDGE = 1e-2  # of the mean diagonal: keeps the solve well posed where inputs are nearly collinear
CHUNK = 8  # images unfolded at once


def _fit(student: nn.Conv2d, x_student: Tensor, z_teacher: Tensor, reflect: bool) -> None:
    """Set ``student``'s weights and bias to the least-squares map from its own inputs
    ``x_student`` (what the student's earlier layers make) to the outputs of the teacher channels it
    stands for, ``z_teacher`` (He et al., ICCV 2017, "Channel Pruning": reconstruct, not just cut),
    with a little ridge. ``reflect``: the layer pads by reflection (the decoder's), else by zeros."""
    k = x_student.shape[1] * 9 + 1
    gram = torch.zeros(k, k, dtype=torch.float64)
    cross = torch.zeros(k, z_teacher.shape[1], dtype=torch.float64)
    positions = x_student.shape[-2] * x_student.shape[-1]
    picked = torch.randperm(positions, generator=torch.Generator().manual_seed(0))[:SAMPLES]
    for x, z in zip(x_student.split(CHUNK), z_teacher.split(CHUNK)):
        patches = TF.unfold(TF.pad(x, (1, 1, 1, 1), mode="reflect" if reflect else "constant"), 3)[..., picked]
        rows = patches.permute(0, 2, 1).reshape(-1, k - 1).double()
        rows = torch.cat([rows, torch.ones(len(rows), 1, dtype=rows.dtype)], dim=1)  # the bias
        gram += rows.T @ rows
        cross += rows.T @ z.flatten(2)[..., picked].permute(0, 2, 1).reshape(len(rows), -1).double()
    gram += RIDGE * gram.diagonal().mean() * torch.eye(k, dtype=gram.dtype)
    solution = torch.linalg.solve(gram, cross)  # (C_in * 9 + 1, C_out)
    student.weight.copy_(solution[:-1].T.reshape(student.weight.shape))
    student.bias.copy_(solution[-1])


def _take(teacher: nn.Conv2d, student: nn.Conv2d, keep: Tensor) -> Tensor:
    """``student`` gets the strongest filters of ``teacher`` on the input channels ``keep``; their indices."""
    weight = teacher.weight[:, keep]
    chosen = _strongest(weight, student.out_channels)
    student.weight.copy_(weight[chosen])
    student.bias.copy_(teacher.bias[chosen])
    return chosen


def _prune_encoder(student: AdaINEncoder, encoder: VGGFeatures, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The encoder's layers pruned and matched in order; the channels kept last, and the teacher's
    and the student's relu4_1 features of ``images``."""
    teacher_convs = [getattr(encoder, name) for name in encoder._sequence if name.startswith("conv")]
    if len(teacher_convs) != len(student.convs):
        raise ValueError(f"the student has {len(student.convs)} encoder convolutions, the teacher {len(teacher_convs)}")
    x_t = x_s = encoder.normalize(images)  # the student reads pixels as VGG-19 does
    keep, pairs = torch.arange(3), iter(zip(teacher_convs, student.convs))
    for b, block in enumerate(student.blocks):
        if b:
            x_t, x_s = TF.max_pool2d(x_t, 2, 2), TF.max_pool2d(x_s, 2, 2)
        for _ in block:
            teacher, conv = next(pairs)
            keep = _take(teacher, conv, keep)
            z_t = teacher(x_t)
            _fit(conv, x_s, z_t[:, keep], reflect=False)
            x_t, x_s = TF.relu(z_t), TF.relu(conv(x_s))
    return keep, x_t, x_s


@torch.no_grad()
def prune_into(student: FastAdaIN, encoder: VGGFeatures, decoder: AdaINDecoder, content: Tensor, style: Tensor) -> None:
    """Start ``student`` from the teacher (the VGG-19 ``encoder`` to relu4_1 and its trained
    ``decoder``), layer by layer: each keeps the strongest filters (L1 norm) of the teacher's layer
    on the channels the layer before kept, then each filter is scaled and shifted so that its
    outputs on ``content`` and ``style`` (a calibration batch, (N, 3, H, W) in [0, 1]) have the
    mean and std of the teacher channel it stands for. The decoder reads the channels the encoder
    kept; its calibration inputs are each network's AdaIN target."""
    n = len(content)
    keep, f_t, f_s = _prune_encoder(student.encoder, encoder, torch.cat([content, style]))
    x_t = adain(f_t[:n], *feature_stats(f_t[n:]))
    x_s = adain(f_s[:n], *feature_stats(f_s[n:]))
    for teacher, layer in zip(decoder.layers, student.decoder.layers):
        if isinstance(teacher, nn.Upsample):
            x_t, x_s = teacher(x_t), layer(x_s)
            continue
        keep = _take(teacher.conv, layer.conv, keep)
        z_t = teacher.conv(TF.pad(x_t, (1, 1, 1, 1), mode="reflect"))
        _fit(layer.conv, x_s, z_t[:, keep], reflect=True)
        z_s = layer.conv(TF.pad(x_s, (1, 1, 1, 1), mode="reflect"))
        x_t, x_s = (TF.relu(z_t), TF.relu(z_s)) if teacher.relu else (z_t, z_s)


class AdaINDistiller(AdaINTrainer):
    """A run training the distilled pair against the decoder ``config.distill_from``."""

    def _build_model(self) -> None:
        """The student (its weights come from the teacher once the data is loaded: :meth:`_ready`)."""
        config, devices = self.config, self.devices
        self.teacher_path = Path(config.distill_from)
        teacher, _ = load_generator(self.teacher_path, archs=(AdaINDecoder.arch,))
        torch.manual_seed(config.seed)
        self.teacher = teacher.to(devices.device, memory_format=devices.memory_format).requires_grad_(False)
        self.model = FastAdaIN().to(devices.device, memory_format=devices.memory_format)
        self._use_adam(config.lr, inverse_decay(config.lr_decay))

    def _ready(self) -> None:
        """A new run's student starts from the teacher, fitted on :data:`CALIBRATION_PAIRS` crops
        (those of "step -1", which no training step draws), or from ``init_from``; a resumed one
        has its own weights."""
        super()._ready()
        if not self.config.resume and self.config.init_from is None:
            config, devices = self.config, self.devices
            pairs = crops_for_step(self.photos, self.paintings, CALIBRATION_PAIRS, config.image_size, config.seed, -1)
            with torch.autocast(devices.device.type, enabled=False):
                prune_into(self.model, self.encoder, self.teacher, *(to_float(t, devices.device, devices.memory_format) for t in pairs))

    def _loss(self, pair: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        config = self.config
        return distillation_loss(self.encoder, self.teacher, self.model, *pair, config.distill_weight, config.style_weight)

    def _sample_columns(self, content: Tensor, style: Tensor) -> list[Tensor]:
        """The samples' stylized columns: the teacher's, then the student's."""
        return [self._decoded(self.teacher, content, style), self.model(content, style).clamp(0, 1)]

    def _metadata(self, best_heldout: dict | None, best_step: int) -> dict:
        metadata = super()._metadata(best_heldout, best_step)
        metadata["teacher"] = {"file": self.teacher_path.name, "sha256": file_sha256(self.teacher_path)}
        return metadata
