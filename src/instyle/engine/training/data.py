"""The photos a generator learns from and is judged on: content sets, crops, flips, and the seeded
order of the batches.

One copy for the trainer and the experiment (:mod:`instyle.apps.experiment`): the batch of a step
depends only on ``(seed, step)``, so a resumed run sees the batches the uninterrupted one would.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from instyle.engine.image import ImageError, default_content_images, iter_image_files, load_image, resize_long_side
from instyle.engine.training.config import TrainConfig, TrainingError

_log = logging.getLogger(__name__)  # the CLI shows its messages on stderr

# photos held on the device for cutting crops there, at most this many bytes of them
DEVICE_PHOTOS_BYTES = 1 << 30


def load_content_set(
    content: str | None, image_size: int, limit: int | None = None, content_size: int | None = None
) -> list[Tensor]:
    """Content photos as (3, H, W) tensors whose short side is at least ``image_size``: large photos
    are downscaled to ``content_size`` (default 1.5 x ``image_size``), small ones upscaled to a crop."""
    images = _read_photos(content)
    if limit is not None:
        images = images[:limit]
    if not images:
        raise TrainingError("no content images to train on")
    prepared = []
    for img in images:
        short = min(img.shape[-2:])
        # Downscale large photos so crops see whole objects; upscale small ones to fit a crop.
        target_short = max(image_size, min(short, content_size or int(image_size * 1.5)))
        long_side = round(max(img.shape[-2:]) * target_short / short)
        prepared.append(resize_long_side(img, long_side))
    return prepared


def _read_photos(content: str | None) -> list[Tensor]:
    """The photos of the folder ``content`` (None: scikit-image's bundled photos)."""
    if content is None:
        return [img for _, img in default_content_images()]
    paths = list(iter_image_files([content], recursive=True))
    if not paths:
        raise TrainingError(f"content {content}: no images found")
    images = []
    for path in paths:  # one unreadable photo in a folder of many is skipped, and said so
        try:
            images.append(load_image(path))
        except ImageError as error:
            _log.warning("skipping %s", error)
    if not images:
        raise TrainingError(f"content {content}: none of its {len(paths)} images could be read")
    return images


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
