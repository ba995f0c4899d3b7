"""Colour preservation for stylized images: keep the content's colours, take the style's strokes.

The methods of :data:`PRESERVE_COLOR`:

- ``luminance``: the stylized luminance with the content's chrominance (YIQ), pixel by pixel
  (Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer", luminance-only transfer);
- ``covariance``: an affine map of the stylized colours so that their mean and covariance
  match the content's (the same paper's colour-histogram matching, done on the first two moments);
- ``histogram``: per-channel histogram matching of the stylized image to the content, as
  ``skimage.exposure.match_histograms(stylized, content, channel_axis=0)`` computes it on
  values quantized to 256 levels (``round(x * 255)``, the levels an 8-bit image is saved in).

``covariance`` and ``histogram`` need the whole image's colours before any pixel is mapped;
:class:`BandTransfer` accumulates them band by band and then maps band by band, so that a
tiled stylization equals an untiled one.

All functions take and return float RGB tensors in [0, 1] of shape (N, 3, H, W) or (3, H, W).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

PRESERVE_COLOR = ("none", "luminance", "covariance", "histogram")
# The methods that map colours by statistics of the whole image (BandTransfer).
WHOLE_IMAGE_METHODS = ("covariance", "histogram")
# Quantization levels of histogram matching: 8-bit images' own.
LEVELS = 256

# RGB -> YIQ (NTSC); Y is the luminance that carries the strokes.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)


def _apply_matrix(matrix: Tensor, image: Tensor) -> Tensor:
    return torch.einsum("ij,...jhw->...ihw", matrix.to(image), image)


def rgb_to_yiq(image: Tensor) -> Tensor:
    return _apply_matrix(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: Tensor) -> Tensor:
    return _apply_matrix(torch.linalg.inv(_RGB_TO_YIQ.double()).float(), image)


def luminance_transfer(stylized: Tensor, content: Tensor) -> Tensor:
    """The stylized luminance (Y) with the content's chrominance (I, Q)."""
    y = rgb_to_yiq(stylized)[..., :1, :, :]
    iq = rgb_to_yiq(_resize_like(content, stylized))[..., 1:, :, :]
    return yiq_to_rgb(torch.cat([y, iq], dim=-3)).clamp(0, 1)


class ColorMoments:
    """Mean and covariance of RGB pixels, accumulated over parts of an image in float64
    (Chan et al.'s pairwise update, so parts of any size combine without cancellation)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = torch.zeros(3, 1, dtype=torch.float64)
        self.m2 = torch.zeros(3, 3, dtype=torch.float64)  # sum of centred outer products

    def add(self, part: Tensor) -> None:
        """Add the pixels of ``part`` (3, h, w) or (1, 3, h, w)."""
        x = part.reshape(3, -1).double().cpu()  # (3, P)
        n = x.shape[1]
        if n == 0:
            return
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        m2 = centred @ centred.T
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + (delta @ delta.T) * (self.count * n / total)
        self.count = total

    def covariance(self) -> Tensor:
        """Unbiased, as torch.cov."""
        return self.m2 / max(self.count - 1, 1)


def covariance_map(source: ColorMoments, target: ColorMoments, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """(A (3, 3), b (3, 1)) in float64 with A x + b matching ``source``'s mean and covariance
    to ``target``'s."""
    eye = torch.eye(3, dtype=torch.float64)
    cov_s = source.covariance() + eps * eye
    cov_t = target.covariance() + eps * eye
    # Symmetric square roots (PCA-based colour transfer): A = Ct^1/2 Cs^-1/2.
    vals_s, vecs_s = torch.linalg.eigh(cov_s)
    vals_t, vecs_t = torch.linalg.eigh(cov_t)
    inv_sqrt_s = vecs_s @ torch.diag(vals_s.clamp_min(eps).rsqrt()) @ vecs_s.T
    sqrt_t = vecs_t @ torch.diag(vals_t.clamp_min(0).sqrt()) @ vecs_t.T
    a = sqrt_t @ inv_sqrt_s
    return a, target.mean - a @ source.mean


def apply_color_map(image: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``A x + b`` at every pixel of ``image`` (3, h, w) or (1, 3, h, w), in float64,
    clamped to [0, 1] and returned in ``image``'s dtype."""
    x = image.reshape(3, -1).double()
    matched = a.to(x.device) @ x + b.to(x.device)
    return matched.reshape(image.shape).to(image.dtype).clamp(0, 1)


class ColorHistogram:
    """Per-channel counts of RGB values quantized to :data:`LEVELS` levels (``round(x * 255)``
    after clamping to [0, 1]), accumulated over parts of an image."""

    def __init__(self) -> None:
        self.counts = torch.zeros(3, LEVELS, dtype=torch.int64)

    def add(self, part: Tensor) -> None:
        """Add the pixels of ``part`` (3, h, w) or (1, 3, h, w)."""
        x = part.reshape(3, -1)
        for c in range(3):
            levels = _quantize(x[c])
            self.counts[c] += torch.bincount(levels, minlength=LEVELS).cpu()


def _quantize(x: Tensor) -> Tensor:
    """Levels 0..LEVELS-1 of values in [0, 1], rounded as 8-bit images are saved."""
    x = x if x.dtype == torch.float64 else x.float()  # 16-bit floats cannot hold x * 255 exactly
    return (x.clamp(0, 1) * (LEVELS - 1)).round_().to(torch.uint8)


def histogram_lut(source: ColorHistogram, target: ColorHistogram) -> Tensor:
    """(3, LEVELS) float64: for each channel, the value each level of ``source`` maps to so
    that its histogram matches ``target``'s (skimage's ``_match_cumulative_cdf``: the source
    level's cumulative share, interpolated linearly on the target's present levels)."""
    lut = torch.zeros(3, LEVELS, dtype=torch.float64)
    for c in range(3):
        s, t = source.counts[c].numpy(), target.counts[c].numpy()
        if s.sum() == 0 or t.sum() == 0:
            raise ValueError("histogram matching needs non-empty images")
        s_levels, t_levels = np.flatnonzero(s), np.flatnonzero(t)
        s_quantiles = np.cumsum(s[s_levels]) / s.sum()
        t_quantiles = np.cumsum(t[t_levels]) / t.sum()
        values = np.interp(s_quantiles, t_quantiles, t_levels / (LEVELS - 1))
        lut[c, torch.from_numpy(s_levels)] = torch.from_numpy(values)
    return lut


def apply_histogram_lut(image: Tensor, lut: Tensor) -> Tensor:
    """Each value of ``image`` (3, h, w) or (1, 3, h, w), quantized, replaced by its channel's
    entry of ``lut`` (:func:`histogram_lut`); returned in ``image``'s dtype."""
    x = image.reshape(3, -1)
    dtype = image.dtype if image.is_floating_point() else torch.float32
    table = lut.to(x.device, dtype)
    out = torch.stack([table[c][_quantize(x[c]).long()] for c in range(3)])
    return out.reshape(image.shape)


class BandTransfer:
    """``covariance`` or ``histogram`` colour transfer of an image that comes in bands of rows:
    :meth:`add` every band of the stylized image and :meth:`add_content` every band of the
    content (any order, any band sizes), then :meth:`apply` maps any band of the stylized
    image. The result equals the transfer computed on the whole image at once."""

    def __init__(self, method: str, eps: float = 1e-5) -> None:
        if method not in WHOLE_IMAGE_METHODS:
            raise ValueError(f"method must be one of {', '.join(WHOLE_IMAGE_METHODS)}, got {method!r}")
        self.method, self.eps = method, eps
        stats = ColorMoments if method == "covariance" else ColorHistogram
        self.stylized, self.content = stats(), stats()
        self._mapping: tuple[Tensor, ...] | None = None

    def add(self, part: Tensor) -> None:
        self.stylized.add(part)

    def add_content(self, part: Tensor) -> None:
        self.content.add(part)

    def apply(self, part: Tensor) -> Tensor:
        """``part`` (3, h, w) or (1, 3, h, w) of the stylized image with the content's colours."""
        if self._mapping is None:  # every band has been added by now
            if self.method == "covariance":
                self._mapping = covariance_map(self.stylized, self.content, self.eps)
            else:
                self._mapping = (histogram_lut(self.stylized, self.content),)
        if self.method == "covariance":
            return apply_color_map(part, *self._mapping)
        return apply_histogram_lut(part, *self._mapping)


def covariance_transfer(stylized: Tensor, content: Tensor, eps: float = 1e-5) -> Tensor:
    """Map the stylized colours affinely so their mean and covariance match the content's."""
    return _whole_image_transfer("covariance", stylized, content, eps=eps)


def histogram_matching(stylized: Tensor, content: Tensor) -> Tensor:
    """Match each channel's histogram of ``stylized`` to ``content``'s (256 levels)."""
    return _whole_image_transfer("histogram", stylized, content)


def _whole_image_transfer(method: str, stylized: Tensor, content: Tensor, **options) -> Tensor:
    unbatched = stylized.dim() == 3
    s = stylized.unsqueeze(0) if unbatched else stylized
    c = content.unsqueeze(0) if content.dim() == 3 else content
    c = c.expand(s.shape[0], -1, -1, -1)  # one content image may serve a whole batch
    out = []
    for si, ci in zip(s, c):
        transfer = BandTransfer(method, **options)
        transfer.add(si)
        transfer.add_content(ci)
        out.append(transfer.apply(si))
    out = torch.stack(out)
    return out[0] if unbatched else out


def _resize_like(image: Tensor, like: Tensor) -> Tensor:
    if image.shape[-2:] == like.shape[-2:]:
        return image
    batched = image if image.dim() == 4 else image.unsqueeze(0)
    out = torch.nn.functional.interpolate(batched, size=like.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    return out if image.dim() == 4 else out[0]


def preserve_color(stylized: Tensor, content: Tensor, method: str = "none") -> Tensor:
    """Apply ``method`` in :data:`PRESERVE_COLOR` to a stylized image given its content image
    (resized to the stylized image's size where they differ)."""
    if method == "none":
        return stylized
    if method == "luminance":
        return luminance_transfer(stylized, content)
    if method == "covariance":
        return covariance_transfer(stylized, _resize_like(content, stylized))
    if method == "histogram":
        return histogram_matching(stylized, _resize_like(content, stylized))
    raise ValueError(f"preserve_color must be one of {', '.join(PRESERVE_COLOR)}, got {method!r}")
