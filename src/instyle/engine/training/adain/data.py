"""The photos and paintings of AdaIN training: the validation split, the decoded images kept in
memory, and the crops of each step.

The split is a property of each file name alone (:func:`is_validation`): a file is held out or not
whatever else is in its folder, so adding images never moves one across, and a run never trains on
what it is judged on. Images are decoded and resized once at the start and kept as uint8 (a quarter
of the memory of floats); a step only cuts crops. The crops of a step depend on (seed, step) alone,
so a resumed run sees the batches the uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from instyle.engine.image import iter_image_files, pixels_to_float, resize_long_side
from instyle.engine.training.config import TrainingError
from instyle.engine.training.data import corner_crops, read_images, resize_short_side, sample_batch

SPLIT_SALT = "instyle-adain-validation:"


def is_validation(name: str, fraction: float) -> bool:
    """Whether the file ``name`` (its name, not its folder) is in the validation split: the first 64
    bits of sha256(salt + name), as a number in [0, 1), below ``fraction``."""
    digest = hashlib.sha256((SPLIT_SALT + name).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass(frozen=True)
class Split:
    """The image files of one folder, training and validation apart (each sorted)."""

    train: list[Path]
    validation: list[Path]


def split_folder(folder: str, fraction: float, what: str) -> Split:
    """The images of ``folder`` (sub-folders included) split by :func:`is_validation`; ``what`` is
    the config field that named the folder, for errors."""
    try:
        paths = sorted(iter_image_files([folder], recursive=True))
    except FileNotFoundError:
        raise TrainingError(f"{what} {folder}: no such folder") from None
    if not paths:
        raise TrainingError(f"{what} {folder}: no images found")
    held = [p for p in paths if is_validation(p.name, fraction)]
    train = [p for p in paths if not is_validation(p.name, fraction)]
    if not train:
        raise TrainingError(f"{what} {folder}: all {len(paths)} images are in the validation split; add images")
    return Split(train, held)


def validation_listing(*folders: tuple[str, Split]) -> str:
    """The validation files of each ``(folder, split)``, one a line as FOLDER_NAME/PATH_IN_FOLDER:
    the record of what a run held out (the committed data/splits/adain_validation.txt for
    shared/data/train)."""
    lines = (f"{Path(folder).name}/{p.relative_to(folder).as_posix()}\n" for folder, split in folders for p in split.validation)
    return "".join(lines)


def fit(image: Tensor, max_side: int, min_side: int) -> Tensor:
    """``image`` (3, H, W) scaled down to a long side of ``max_side`` if larger, then up to a short side
    of ``min_side`` if smaller (so a crop fits); uint8 or float [0, 1], returned in its dtype."""
    h, w = image.shape[-2:]
    if max(h, w) <= max_side and min(h, w) >= min_side:
        return image
    scaled = pixels_to_float(image) if image.dtype == torch.uint8 else image
    if max(h, w) > max_side:
        scaled = resize_long_side(scaled, max_side)
    if min(scaled.shape[-2:]) < min_side:
        scaled = resize_short_side(scaled, min_side)
    return (scaled * 255).round().to(torch.uint8) if image.dtype == torch.uint8 else scaled


def load_images(paths: list[Path], max_side: int, min_side: int) -> list[Tensor]:
    """Each of ``paths`` decoded once (:func:`~instyle.engine.training.data.read_images`) and fitted
    (:func:`fit`), as (3, H, W) uint8. An unreadable file stops the run with its name: a training set
    is chosen, not taken as it comes."""
    images = []
    for pixels in read_images(paths, skip_unreadable=False):
        if pixels.dtype != torch.uint8:  # 16-bit or transparent: converted as every image is
            pixels = (pixels * 255).round().to(torch.uint8)
        images.append(fit(pixels.contiguous(), max_side, min_side))
    return images


def crops_for_step(photos: list[Tensor], paintings: list[Tensor], batch_size: int, size: int, seed: int, step: int):
    """The (photo crops, painting crops) of ``step``, each (batch_size, 3, size, size) in the images'
    dtype and device: random positions and flips, a function of (seed, step) alone."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return sample_batch(photos, batch_size, size, generator), sample_batch(paintings, batch_size, size, generator)


def validation_pairs(photos: list[Tensor], paintings: list[Tensor], size: int) -> tuple[Tensor, Tensor]:
    """Fixed (photo, painting) centre crops: every validation painting once, with the photos in
    turn (or every photo once, with the paintings in turn, if there are more photos)."""
    count = max(len(photos), len(paintings))
    content = [corner_crops(photos[i % len(photos)], size, 1)[0] for i in range(count)]
    style = [corner_crops(paintings[i % len(paintings)], size, 1)[0] for i in range(count)]
    return torch.stack(content), torch.stack(style)


def to_float(batch: Tensor, device: torch.device, memory_format: torch.memory_format) -> Tensor:
    """uint8 crops to float [0, 1] on ``device`` in ``memory_format``."""
    return batch.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=memory_format)
