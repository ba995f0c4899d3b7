"""Colour preservation for stylized images (Gatys et al. 2016, "Preserving Color in
Neural Artistic Style Transfer"): keep the content's colours, take the style's strokes.

All functions take and return float RGB tensors in [0, 1] of shape (N, 3, H, W) or (3, H, W).
"""

from __future__ import annotations

import torch
from torch import Tensor

PRESERVE_COLOR = ("none", "luminance", "histogram")

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


def histogram_transfer(stylized: Tensor, content: Tensor, eps: float = 1e-5) -> Tensor:
    """Map the stylized colours affinely so their mean and covariance match the content's."""
    unbatched = stylized.dim() == 3
    s = stylized.unsqueeze(0) if unbatched else stylized
    c = content.unsqueeze(0) if content.dim() == 3 else content
    c = c.expand(s.shape[0], -1, -1, -1)  # one content image may serve a whole batch
    out = torch.stack([_match_colors(si, ci, eps) for si, ci in zip(s, c)])
    return out[0] if unbatched else out


def _match_colors(source: Tensor, target: Tensor, eps: float) -> Tensor:
    moments_s, moments_t = ColorMoments(), ColorMoments()
    moments_s.add(source)
    moments_t.add(target)
    return apply_color_map(source, *histogram_map(moments_s, moments_t, eps))


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


def histogram_map(source: ColorMoments, target: ColorMoments, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
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


def _resize_like(image: Tensor, like: Tensor) -> Tensor:
    if image.shape[-2:] == like.shape[-2:]:
        return image
    batched = image if image.dim() == 4 else image.unsqueeze(0)
    out = torch.nn.functional.interpolate(batched, size=like.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    return out if image.dim() == 4 else out[0]


def preserve_color(stylized: Tensor, content: Tensor, method: str = "none") -> Tensor:
    """Apply ``method`` in ``PRESERVE_COLOR`` to a stylized image given its content image."""
    if method == "none":
        return stylized
    if method == "luminance":
        return luminance_transfer(stylized, content)
    if method == "histogram":
        return histogram_transfer(stylized, _resize_like(content, stylized))
    raise ValueError(f"preserve_color must be one of {', '.join(PRESERVE_COLOR)}, got {method!r}")
