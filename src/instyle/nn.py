"""Normalization layers: drop-in ``InstanceNorm1d/2d/3d``, conditional IN, AdaIN, and a
registry (``make_norm``) so that generators choose their normalization by name.

The ``InstanceNorm*d`` classes subclass ``torch.nn.InstanceNorm*d``: parameters, buffers,
state_dict keys and ``isinstance`` checks are torch's, so checkpoints move either way.
Departures from torch, all deliberate:

- ``momentum=None`` gives the documented cumulative average (torch silently uses
  momentum 0 and never updates the running stats).
- ``num_batches_tracked`` counts training batches, as in BatchNorm (torch leaves it 0).
- the numerical fixes of :mod:`instyle.ops.reference` (shifted means, huge magnitudes,
  empty batches, channels_last output).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Callable

import torch
from torch import Tensor, nn

from instyle import functional as F

__all__ = [
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "ConditionalInstanceNorm2d",
    "AdaIN",
    "make_norm",
    "register_norm",
    "NORMS",
]

_SHAPES = {2: "(C, L)", 3: "(C, H, W)", 4: "(C, D, H, W)"}


# torch added ``bias=`` to the normalization modules in 2.13; instyle supports torch >= 2.10.
_TORCH_NORM_TAKES_BIAS = "bias" in inspect.signature(torch.nn.modules.instancenorm._InstanceNorm.__init__).parameters


class _InstanceNormMixin:
    """Forward pass shared by the three ``InstanceNorm*d`` classes."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        backend: str = "auto",
    ) -> None:
        if _TORCH_NORM_TAKES_BIAS:
            super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        else:  # torch < 2.13 has no bias argument: drop the shift as torch's newer versions do
            super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
            if affine and not bias:
                self.register_parameter("bias", None)
        self.backend = backend

    def _check_input_dim(self, input: Tensor) -> None:
        unbatched = self._get_no_batch_dim()
        if input.dim() not in (unbatched, unbatched + 1):
            raise ValueError(
                f"{type(self).__name__} expected a {unbatched}D {_SHAPES[unbatched]} or "
                f"{unbatched + 1}D (N, {_SHAPES[unbatched][1:]} input, got {input.dim()}D input "
                f"of shape {tuple(input.shape)}"
            )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        feature_dim = input.dim() - self._get_no_batch_dim()
        if input.size(feature_dim) != self.num_features:
            if self.affine:
                raise ValueError(
                    f"expected input's size at dim={feature_dim} to match num_features"
                    f" ({self.num_features}), but got: {input.size(feature_dim)}."
                )
            warnings.warn(
                f"input's size at dim={feature_dim} does not match num_features. "
                "You can silence this warning by not passing in num_features, "
                "which is not used because affine=False",
                stacklevel=2,
            )
        if input.dim() == self._get_no_batch_dim():
            return self._instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._instance_norm(input)

    def _instance_norm(self, input: Tensor) -> Tensor:
        use_input_stats = self.training or not self.track_running_stats
        momentum = self.momentum
        if use_input_stats and self.track_running_stats and self.num_batches_tracked is not None:
            # Count batches as BatchNorm does; momentum=None averages all batches so far. A batch
            # with no elements (no samples or no positions) updates nothing, so it does not count.
            if input.numel() > 0:
                self.num_batches_tracked.add_(1)
            if momentum is None:
                momentum = 1.0 / float(max(int(self.num_batches_tracked), 1))
        return F.instance_norm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            use_input_stats,
            momentum if momentum is not None else 0.0,
            self.eps,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"  # type: ignore[misc]


class InstanceNorm1d(_InstanceNormMixin, nn.InstanceNorm1d):
    """Drop-in ``torch.nn.InstanceNorm1d`` over (N, C, L) or (C, L)."""


class InstanceNorm2d(_InstanceNormMixin, nn.InstanceNorm2d):
    """Drop-in ``torch.nn.InstanceNorm2d`` over (N, C, H, W) or (C, H, W)."""


class InstanceNorm3d(_InstanceNormMixin, nn.InstanceNorm3d):
    """Drop-in ``torch.nn.InstanceNorm3d`` over (N, C, D, H, W) or (C, D, H, W)."""


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm with one (gamma, beta) per style (Dumoulin et al. 2017).

    ``forward(x, style)``: ``style`` is an index tensor (N,) or mixing weights
    (N, num_styles) that blend the styles' gamma and beta.
    """

    def __init__(
        self, num_features: int, num_styles: int, eps: float = 1e-5, device=None, dtype=None, *, backend: str = "auto"
    ) -> None:
        super().__init__()
        if num_styles < 1:
            raise ValueError(f"num_styles must be at least 1, got {num_styles}")
        self.num_features = num_features
        self.num_styles = num_styles
        self.eps = eps
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_styles, num_features, **factory))  # (S, C)
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features, **factory))  # (S, C)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"ConditionalInstanceNorm2d expected (N, {self.num_features}, H, W), got shape {tuple(x.shape)}"
            )
        n = x.shape[0]
        if style.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            if style.shape != (n,):
                raise ValueError(f"style indices must have shape ({n},), got {tuple(style.shape)}")
            if n and (int(style.min()) < 0 or int(style.max()) >= self.num_styles):
                raise IndexError(f"style index out of range [0, {self.num_styles}): {style.tolist()}")
            gamma, beta = self.weight[style], self.bias[style]  # (N, C)
        elif style.is_floating_point():
            if style.shape != (n, self.num_styles):
                raise ValueError(f"style weights must have shape ({n}, {self.num_styles}), got {tuple(style.shape)}")
            gamma, beta = style.to(self.weight.dtype) @ self.weight, style.to(self.bias.dtype) @ self.bias
        else:
            raise TypeError(f"style must be an integer index tensor or float mixing weights, got {style.dtype}")
        normalized = F.instance_norm(x, eps=self.eps, backend=self.backend)
        return normalized * gamma[:, :, None, None].to(x.dtype) + beta[:, :, None, None].to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_styles={self.num_styles}, eps={self.eps}, backend={self.backend!r}"


class AdaIN(nn.Module):
    """Adaptive instance norm: IN(content) scaled and shifted by the style's per-channel
    std and mean (Huang and Belongie 2017). No parameters."""

    def __init__(self, eps: float = 1e-5, *, backend: str = "auto") -> None:
        super().__init__()
        self.eps = eps
        self.backend = backend

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        if content.dim() != style.dim() or content.shape[:2] != style.shape[:2]:
            raise ValueError(
                f"AdaIN: content and style must share (N, C); got {tuple(content.shape)} and {tuple(style.shape)}"
            )
        mean, std = F.calc_mean_std(style, self.eps)
        return F.adaptive_instance_norm(content, mean, std, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, backend={self.backend!r}"


def _batch(num_features: int, **kw) -> nn.Module:
    return nn.BatchNorm2d(num_features, **kw)


def _instance(num_features: int, affine: bool = True, **kw) -> nn.Module:
    # Stylization generators learn the affine transform (fast-neural-style, Ulyanov et al.).
    return InstanceNorm2d(num_features, affine=affine, **kw)


def _group(num_features: int, num_groups: int = 32, **kw) -> nn.Module:
    import math

    return nn.GroupNorm(math.gcd(num_groups, num_features), num_features, **kw)


def _layer(num_features: int, **kw) -> nn.Module:
    # Layer norm over (C, H, W) of a conv feature map: one group.
    return nn.GroupNorm(1, num_features, **kw)


def _none(num_features: int, **kw) -> nn.Module:
    return nn.Identity()


NORMS: dict[str, Callable[..., nn.Module]] = {
    "instance": _instance,
    "batch": _batch,
    "conditional_instance": ConditionalInstanceNorm2d,
    "group": _group,
    "layer": _layer,
    "none": _none,
}


def register_norm(name: str, factory: Callable[..., nn.Module]) -> None:
    NORMS[name] = factory


def make_norm(name: str, num_features: int, **kw) -> nn.Module:
    """Build the 2d normalization layer registered as ``name`` for ``num_features`` channels."""
    try:
        factory = NORMS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; choose one of {', '.join(sorted(NORMS))}") from None
    return factory(num_features, **kw)
