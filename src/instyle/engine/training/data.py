"""The photos a generator learns from and is judged on: content sets, crops, flips, and the seeded
order of the batches.

One copy for the trainer and the experiment (:mod:`instyle.apps.experiment`): the batch of a step
depends only on ``(seed, step)``, so a resumed run sees the batches the uninterrupted one would.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from instyle.engine.image import (
    ImageError, default_content_images, iter_image_files, load_pixels, pixels_to_float, resize_long_side,
)  # fmt: skip
from instyle.engine.training.config import TrainConfig, TrainingError

_log = logging.getLogger(__name__)  # the CLI shows its messages on stderr

# photos held on the device for cutting crops there, at most this many bytes of them
DEVICE_PHOTOS_BYTES = 1 << 30


def load_content_set(
    content: str | Sequence[Path] | None, image_size: int, limit: int | None = None, content_size: int | None = None
) -> list[Tensor]:
    """Content photos (the folder ``content``, the image files it lists, or None: scikit-image's
    bundled photos) as (3, H, W) float tensors whose short side is at least ``image_size``: large
    photos are downscaled to ``content_size`` (default 1.5 x ``image_size``), small ones upscaled
    to a crop. An unreadable photo is skipped, and said so (:func:`read_images`)."""
    if content is None:
        images = (img for _, img in default_content_images())
    else:
        images = (pixels_to_float(pixels) for pixels in read_images(content))
    prepared = []
    for img in itertools.islice(images, limit):
        short = min(img.shape[-2:])
        # Downscale large photos so crops see whole objects; upscale small ones to fit a crop.
        target_short = max(image_size, min(short, content_size or int(image_size * 1.5)))
        long_side = round(max(img.shape[-2:]) * target_short / short)
        prepared.append(resize_long_side(img, long_side))
    if not prepared:
        raise TrainingError("no content images to train on")
    return prepared


def read_images(source: str | Sequence[Path], what: str = "content", skip_unreadable: bool = True) -> Iterator[Tensor]:
    """The images of the folder ``source`` (sub-folders included) or of the files it lists, one at a
    time, as :func:`~instyle.engine.image.load_pixels` decodes them (uint8 where 8-bit). An unreadable
    file is skipped with a warning naming it (a folder of photos, taken as it comes), or, without
    ``skip_unreadable``, stops the run with its name (a training set chosen file by file). Raises
    TrainingError where nothing can be read; ``what`` names the source (a config field)."""
    if isinstance(source, (str, os.PathLike)):
        paths = list(iter_image_files([source], recursive=True))
        if not paths:
            raise TrainingError(f"{what} {source}: no images found")
    else:
        paths = list(source)
    where, read = f"{what} {source}" if isinstance(source, (str, os.PathLike)) else what, 0
    for path in paths:
        try:
            pixels = load_pixels(path)
        except ImageError as error:
            if not skip_unreadable:
                raise TrainingError(f"cannot train on {error}") from None
            _log.warning("skipping %s", error)
            continue
        read += 1
        yield pixels
    if not read:
        raise TrainingError(f"{where}: none of its {len(paths)} images could be read")


def crop_source(images: list[Tensor], device: torch.device) -> list[Tensor]:
    """The photos the step crops are cut from: on CUDA (up to :data:`DEVICE_PHOTOS_BYTES` of them)
    a device copy, so each step's crops are cut there instead of being stacked on the host and
    copied over; the crops are the same."""
    if device.type == "cuda" and sum(img.numel() * img.element_size() for img in images) <= DEVICE_PHOTOS_BYTES:
        return [img.to(device) for img in images]
    return images


def sample_batch(images: list[Tensor], batch_size: int, size: int, generator: torch.Generator) -> Tensor:
    """Random crops with random horizontal flips: (batch_size, 3, size, size)."""
    crops = []
    for _ in range(batch_size):
        img = images[int(torch.randint(len(images), (1,), generator=generator))]
        crops.append(random_crop(img, size, generator))
    return torch.stack(crops)


def random_crop(image: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """A square crop of ``image`` at a random position, flipped horizontally half the time."""
    h, w = image.shape[-2:]
    top = int(torch.randint(h - size + 1, (1,), generator=generator))
    left = int(torch.randint(w - size + 1, (1,), generator=generator))
    crop = image[:, top : top + size, left : left + size]
    return crop.flip(-1) if bool(torch.rand((), generator=generator) < 0.5) else crop


def batch_for_step(images: list[Tensor], config: TrainConfig, step: int) -> Tensor:
    """The global batch of ``step``: a function of (seed, step) alone, for exact resume."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    return sample_batch(images, config.batch_size, config.image_size, generator)


def corner_crops(image: Tensor, size: int, count: int) -> list[Tensor]:
    """Up to ``count`` crops (3, size, size): centre, then the four corners."""
    h, w = image.shape[-2:]
    spots = [((h - size) // 2, (w - size) // 2), (0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    return [image[:, t : t + size, l : l + size] for t, l in spots[:count]]


def heldout_crops(config: TrainConfig) -> Tensor:
    """Fixed crops of the held-out photos at the training scale: centre and four corners of each of
    up to 16 photos, (N, 3, image_size, image_size)."""
    photos = load_content_set(config.eval_content, config.image_size, 16, config.content_size)
    return torch.stack([crop for photo in photos for crop in corner_crops(photo, config.image_size, 5)])


def resize_short_side(image: Tensor, short: int) -> Tensor:
    """``image`` scaled so that its short side is ``short``."""
    h, w = image.shape[-2:]
    return resize_long_side(image, max(short, round(max(h, w) * short / min(h, w))))


def training_scale_crops(images: list[Tensor], image_size: int, per_image: int) -> Tensor:
    """Up to ``per_image`` fixed crops (centre, then corners) of each photo scaled to a short side of
    1.5 ``image_size`` (the trainer's default scale): (N, 3, image_size, image_size)."""
    scale = round(1.5 * image_size)
    crops = []
    for image in images:
        crops += corner_crops(resize_short_side(image, scale), image_size, per_image)
    return torch.stack(crops)


def crop_pool(photos: list[Tensor], count: int, image_size: int, seed: int) -> list[Tensor]:
    """``count`` fixed augmented crops of ``photos`` for ``seed``: square crops of 1.5 ``image_size``
    (so the trainer keeps their scale) of the photos taken in turn, each at a random scale (the
    photo's short side 1 to 2.5 crops), position and flip."""
    side = round(1.5 * image_size)
    generator = torch.Generator().manual_seed(seed)
    pool = []
    for i in range(count):
        scale = 1.0 + 1.5 * float(torch.rand((), generator=generator))
        photo = resize_short_side(photos[i % len(photos)], round(side * scale))
        pool.append(random_crop(photo, side, generator))
    return pool
