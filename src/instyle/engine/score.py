"""The numbers of ``instyle score``: how far an image is from a painting in style, and from a photo
in content, on the ImageNet VGG-19 (issue #18, part 5).

Every image is read with instyle's loader (the same refusals as everywhere) and resized to ``size``
(512) px on its long side; the photo is then resized to the image's exact size, so that their
features line up. The features of VGG-19 (instyle's ``imagenet-vgg19``, zero padding, max pooling)
are taken at relu1_1, relu2_1, relu3_1 and relu4_1, in fp32, and each layer's features are divided
by the layer's mean activation on the training data (20, 110, 110, 440: the scales of the AdaIN loss,
:data:`instyle.engine.losses.adain.FEATURE_SCALE`), so that every layer counts alike and the
numbers have no unit. With ``s`` that scale, ``C`` the channels and ``F`` the (C, HW) features:

- ``style_distance`` (mean/std): the mean over the four layers of
  ``(||mu_a - mu_b||_2 + ||sigma_a - sigma_b||_2) / (sqrt(C) * s)``, with ``mu`` and ``sigma`` the
  per-channel mean and standard deviation (``sqrt(var + 1e-5)``, the statistics AdaIN transfers):
  the root-mean-square differences of the channels' means and of their stds, added;
- ``style_distance_gram``: the mean over the four layers of ``||G_a - G_b||_F`` with
  ``G = (F / s)(F / s)^T / (C * H * W)`` (:func:`~instyle.engine.losses.gram_matrix` of the scaled
  features): the root-mean-square difference of the entries of the uncentred second-moment matrices
  ``F F^T / HW``, the statistic Gatys et al. match;
- ``content_distance``: ``sqrt(mean((F_a - F_b)^2)) / s`` at relu4_1: the root-mean-square
  difference of the image's and the photo's features, position by position.

Each is 0 for an image against itself and symmetric in its two images, and none depends on the
order of the channels; two images of different aspect ratios are compared by their statistics
alone (style), or after the photo is resized to the image (content).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import torch
from torch import Tensor

from instyle.engine.device import resolve_device
from instyle.engine.image import ImageError, ImageSource, load_image, resize_long_side
from instyle.engine.losses import gram_matrix
from instyle.engine.losses.adain import FEATURE_SCALE
from instyle.engine.models.adain import CONTENT_LAYER, ENCODER_WEIGHTS, STYLE_LAYERS, build_encoder, feature_stats

__all__ = [
    "MIN_SIDE", "SCORE_SIZE", "Score", "Scorer", "content_distance", "layer_statistics", "score_image",
    "style_distances",
]  # fmt: skip

SCORE_SIZE = 512
# An image smaller than this on a side holds too little of a painting to measure (the rule for
# paintings, applied to every input of the score).
MIN_SIDE = 64

Source = Union[ImageSource, Tensor]


@dataclass(frozen=True)
class Score:
    """The distances of one image: ``style_distance`` (mean/std), ``style_distance_gram``, and
    ``content_distance`` (None without a photo); ``layers`` holds each layer's two style terms."""

    image: str
    style: str
    content: str | None
    size: int
    style_distance: float
    style_distance_gram: float
    content_distance: float | None
    layers: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image, "style": self.style, "content": self.content, "size": self.size,
            "style_distance": self.style_distance, "style_distance_gram": self.style_distance_gram,
            "content_distance": self.content_distance, "layers": self.layers,
        }  # fmt: skip


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "<tensor>" if isinstance(source, Tensor) else f"<{type(source).__name__}>"


def read_image(source: Source, size: int = SCORE_SIZE) -> Tensor:
    """``source`` as (3, H, W) fp32 in [0, 1], ``size`` px on its long side. A path, bytes, a PIL image
    or an array goes through :func:`~instyle.engine.image.load_image`; a tensor must be (3, H, W)
    float in [0, 1]. ImageError (naming the source) for what cannot be read or is under MIN_SIDE."""
    name = _name(source)
    if isinstance(source, Tensor):
        if source.dim() != 3 or source.shape[0] != 3 or not source.is_floating_point():
            raise ImageError(name, f"expected a float (3, H, W) tensor in [0, 1], got {source.dtype} {tuple(source.shape)}")
        image = source.detach().float().cpu()
    else:
        image = load_image(source)
    height, width = image.shape[-2:]
    if min(height, width) < MIN_SIDE:
        raise ImageError(name, f"is {width}x{height}; the score needs at least {MIN_SIDE} px on each side")
    image = resize_long_side(image, size)
    if min(image.shape[-2:]) < 16:  # relu4_1 needs 8 px; keep a few positions to take statistics over
        raise ImageError(name, f"is {width}x{height}: too narrow to measure at {size} px on its long side")
    return image


def layer_statistics(features: Mapping[str, Tensor]) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Each layer's scaled (mean, std, Gram) of (1, C, H, W) features: (C,), (C,), (C, C), fp32."""
    found = {}
    for layer, f in features.items():
        scale = FEATURE_SCALE[layer]
        mean, std = feature_stats(f)
        found[layer] = (mean[0] / scale, std[0] / scale, gram_matrix(f.float() / scale)[0])
    return found


def style_distances(a: Mapping[str, tuple], b: Mapping[str, tuple]) -> tuple[float, float, dict[str, dict[str, float]]]:
    """(mean/std distance, Gram distance, per layer) between two :func:`layer_statistics`."""
    layers = {}
    for layer in a:
        (mean_a, std_a, gram_a), (mean_b, std_b, gram_b) = a[layer], b[layer]
        root_c = math.sqrt(mean_a.numel())
        mean_std = (torch.linalg.vector_norm(mean_a - mean_b) + torch.linalg.vector_norm(std_a - std_b)) / root_c
        gram = torch.linalg.matrix_norm(gram_a - gram_b)  # Frobenius
        layers[layer] = {"mean_std": float(mean_std), "gram": float(gram)}
    count = len(layers)
    return (
        sum(v["mean_std"] for v in layers.values()) / count, sum(v["gram"] for v in layers.values()) / count, layers,
    )  # fmt: skip


def content_distance(a: Tensor, b: Tensor, layer: str = CONTENT_LAYER) -> float:
    """Root-mean-square difference of two (1, C, H, W) feature maps of ``layer``, scaled."""
    if a.shape != b.shape:
        raise ValueError(f"content features differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a.float() - b.float()).square().mean().sqrt() / FEATURE_SCALE[layer])


@contextlib.contextmanager
def _exact_fp32(device: torch.device):
    """No autocast and, on CUDA, no TF32 convolutions: the score is the fp32 number wherever it runs."""
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield


class Scorer:
    """The VGG-19 and one painting's statistics, kept for many images.

    >>> scorer = Scorer("painting.jpg")
    >>> scorer.score("result.png", content="photo.jpg").style_distance
    """

    def __init__(self, style: Source, *, size: int = SCORE_SIZE, device: str = "cpu", weights: Any = ENCODER_WEIGHTS) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 64:
            raise ValueError(f"size must be an int of at least 64, got {size!r}")
        self.size = size
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.encoder = build_encoder(STYLE_LAYERS, weights).to(self.device)
        self.style_name = _name(style)
        self.style_stats = layer_statistics(self.features(read_image(style, size)))
        self._content: tuple[str, tuple, Tensor] | None = None  # the last photo's relu4_1, by (path, size)

    def features(self, image: Tensor) -> dict[str, Tensor]:
        """The four layers' features of one (3, H, W) image."""
        with _exact_fp32(self.device):
            return self.encoder(image.unsqueeze(0).to(self.device))

    def _content_features(self, content: Source, shape: tuple[int, int]) -> Tensor:
        """relu4_1 of the photo resized to ``shape``; a photo given by path is kept for the next image."""
        key = (_name(content), shape)
        if self._content is not None and isinstance(content, (str, os.PathLike)) and self._content[:2] == key:
            return self._content[2]
        photo = read_image(content, self.size)
        if tuple(photo.shape[-2:]) != shape:
            photo = torch.nn.functional.interpolate(
                photo.unsqueeze(0), size=shape, mode="bicubic", align_corners=False, antialias=True
            )[0].clamp(0, 1)  # fmt: skip
        found = self.features(photo)[CONTENT_LAYER]
        self._content = (*key, found)
        return found

    def score(self, image: Source, content: Source | None = None) -> Score:
        """The distances of ``image`` to the painting and, given ``content``, to that photo."""
        picture = read_image(image, self.size)
        features = self.features(picture)
        style, gram, layers = style_distances(layer_statistics(features), self.style_stats)
        distance = None
        if content is not None:
            photo = self._content_features(content, tuple(picture.shape[-2:]))
            distance = content_distance(features[CONTENT_LAYER], photo)
        return Score(
            _name(image), self.style_name, None if content is None else _name(content), self.size,
            style, gram, distance, layers,
        )  # fmt: skip


def score_image(image: Source, style: Source, content: Source | None = None, *, size: int = SCORE_SIZE, device: str = "cpu") -> Score:
    """One image's :class:`Score` against the painting ``style`` (and the photo ``content``)."""
    return Scorer(style, size=size, device=device).score(image, content)
