"""The terms of the perceptual loss: the statistics (Gram matrix, mean/std), the content, style and
total-variation losses as functions, and as the small modules :class:`PerceptualLoss` combines.

Every statistic and loss is computed in at least fp32 whatever the feature dtype (bf16 autocast
included), and every loss is a mean over the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from instyle.engine.losses._precision import no_autocast, upcast
from instyle.engine.losses.gram import unnormalized_gram

__all__ = [
    "STYLE_STATS",
    "ContentLoss",
    "StyleLoss",
    "TotalVariationLoss",
    "content_loss",
    "gram_matrix",
    "mean_std",
    "style_loss",
    "style_statistic",
    "total_variation",
]

STYLE_STATS = ("gram", "mean_std")


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrix divided by C*H*W, in fp32 for half-precision input and under autocast
    (fp64 stays fp64). On CUDA, fp16/bf16 features go through 16-bit GEMMs with fp32 results, exact in
    their products; bf16 features on the CPU get the fp32 Gram of their values and a bf16 gradient GEMM
    (:mod:`instyle.engine.losses.gram`); channels_last features are read in place."""
    if features.dim() != 4:
        raise ValueError(f"gram_matrix expects features of shape (N, C, H, W), got {tuple(features.shape)}")
    n, c, h, w = features.shape
    with no_autocast(features):
        return unnormalized_gram(features) / (c * h * w)


def mean_std(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(N, C, H, W) -> (N, 2, C): per-channel mean and std (sqrt(var + eps), biased var), in fp32."""
    if features.dim() != 4:
        raise ValueError(f"mean_std expects features of shape (N, C, H, W), got {tuple(features.shape)}")
    with no_autocast(features):
        var, mean = torch.var_mean(upcast(features).flatten(2), dim=2, correction=0)  # two-pass, (N, C)
        return torch.stack([mean, (var + eps).sqrt()], dim=1)


def style_statistic(features: torch.Tensor, stat: str = "gram") -> torch.Tensor:
    """The statistic the style loss compares: ``"gram"`` (N, C, C) or ``"mean_std"`` (N, 2, C)."""
    if stat == "gram":
        return gram_matrix(features)
    if stat == "mean_std":
        return mean_std(features)
    raise ValueError(f"style_stat must be one of {STYLE_STATS}, got {stat!r}")


def _mse(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with no_autocast(input):
        input = upcast(input)
        return F.mse_loss(input, target.to(input.dtype).expand_as(input))


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between feature maps, in fp32; ``target`` broadcasts over the batch."""
    if features.shape[1:] != target.shape[1:] or target.shape[0] not in (1, features.shape[0]):
        raise ValueError(
            f"content features {tuple(features.shape)} and target {tuple(target.shape)} differ; content images "
            f"must have the input's size and batch size 1 or N"
        )
    return _mse(features, target)


def style_loss(features: torch.Tensor, target: torch.Tensor, stat: str = "gram") -> torch.Tensor:
    """Mean squared error between ``style_statistic(features, stat)`` and ``target``, a statistic of the style
    (shape (1, ...) broadcasts over the batch)."""
    return _mse(style_statistic(features, stat), target)


def total_variation(images: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Mean |x[i+1, j] - x[i, j]|^p + mean |x[i, j+1] - x[i, j]|^p over (N, C, H, W), in fp32.

    ``p=1`` is anisotropic total variation; ``p=2`` the smoother squared variant of Johnson et al.
    """
    if images.dim() != 4:
        raise ValueError(f"total_variation expects images of shape (N, C, H, W), got {tuple(images.shape)}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    with no_autocast(images):
        x = upcast(images)
        dh = x[..., 1:, :] - x[..., :-1, :]
        dw = x[..., :, 1:] - x[..., :, :-1]
        if p == 1:
            return dh.abs().mean() + dw.abs().mean()
        return dh.square().mean() + dw.square().mean()


# ---------------------------------------------------------------------------- the terms as modules


class _LayerTerm(nn.Module):
    """A loss summed over layers, each weighted by ``layer_weights.get(layer, 1.0)``; targets are
    non-persistent buffers named ``target_<layer>`` (``.to()`` moves them, state dicts skip them)."""

    kind = ""

    def __init__(self, layers: Sequence[str], layer_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.layers = tuple(layers)
        self.layer_weights = dict(layer_weights or {})
        self.has_targets = False

    def store_targets(self, targets: Mapping[str, torch.Tensor]) -> None:
        for name in self.layers:
            self.register_buffer(f"target_{name}", targets[name].detach(), persistent=False)
        self.has_targets = True

    def target(self, layer: str) -> torch.Tensor:
        return getattr(self, f"target_{layer}")

    def layer_loss(self, features: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor] | None, start: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(start + sum_l w_l * loss_l, {"<kind>/<layer>": loss_l})``; ``targets`` None: the stored ones."""
        total, per_layer = start, {}
        for name in self.layers:
            target = self.target(name) if targets is None else targets[name]
            loss = self.layer_loss(features[name], target, name)
            per_layer[f"{self.kind}/{name}"] = loss
            total = total + self.layer_weights.get(name, 1.0) * loss
        return total, per_layer


class ContentLoss(_LayerTerm):
    """Feature-map MSE (:func:`content_loss`) over the content layers, against targets given per call
    or stored with :meth:`store_targets`."""

    kind = "content"

    def layer_loss(self, features: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
        return content_loss(features, target.detach())


class StyleLoss(_LayerTerm):
    """MSE between a style statistic of the features (:func:`style_statistic`) and the stored style
    targets (batch size 1, broadcast over the batch), over the style layers."""

    kind = "style"

    def __init__(
        self, layers: Sequence[str], layer_weights: Mapping[str, float] | None = None, stat: str = "gram", kind: str = "style"
    ) -> None:
        super().__init__(layers, layer_weights)
        if stat not in STYLE_STATS:
            raise ValueError(f"style_stat must be one of {STYLE_STATS}, got {stat!r}")
        self.stat, self.kind = stat, kind  # kind: the per-layer log keys' prefix

    def layer_loss(self, features: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
        if target.shape[-1] != features.shape[1]:
            raise ValueError(
                f"the style target of {layer} is for {target.shape[-1]} channels but the extractor gives "
                f"{features.shape[1]}: targets and extractor do not belong together"
            )
        return style_loss(features, target, self.stat)


class TotalVariationLoss(nn.Module):
    """:func:`total_variation` of the images (``p=1`` anisotropic, ``p=2`` squared)."""

    def __init__(self, p: int = 1) -> None:
        super().__init__()
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        self.p = p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return total_variation(images, self.p)
