"""Functional instance norm and AdaIN: the dispatch point for every backend.

``instance_norm`` keeps ``torch.nn.functional.instance_norm``'s positional signature and
adds the fusions the generators use: ``y = act(gamma * x_hat + beta + residual)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The registry lives in instyle.ops (so ops never imports this module); it is public here.
from instyle.ops.registry import (  # noqa: F401  (_AUTO_ORDER: benchmarks/gpu_session.sh edits it)
    AUTO_ORDER as _AUTO_ORDER,
    Backend,
    available_backends,
    get_backend,
    load_optional_backends as _load_optional_backends,
    register_backend,
    select_backend,
)
from instyle.ops.reference import scaled_planes

__all__ = [
    "instance_norm",
    "adaptive_instance_norm",
    "register_backend",
    "available_backends",
    "select_backend",
]

ACTIVATIONS = (None, "relu")


def _check_param(name: str, t: Tensor | None, channels: int) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"instance_norm: {name} must be a tensor or None, got {type(t).__name__}")
    if t.dim() != 1 or t.numel() != channels:
        raise ValueError(f"instance_norm: {name} must have shape ({channels},) for {channels} channels, got {tuple(t.shape)}")


def _validate(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_input_stats: bool,
    activation: str | None,
    residual: Tensor | None,
) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"instance_norm: input must be a tensor, got {type(input).__name__}")
    if input.dim() < 3:
        raise ValueError(
            f"instance_norm: expected an input of at least 3 dimensions (N, C, *spatial), "
            f"got {input.dim()}D input of shape {tuple(input.shape)}"
        )
    if not input.is_floating_point():
        raise TypeError(f"instance_norm: expected a floating-point input, got {input.dtype}")
    channels = input.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        _check_param(name, t, channels)
    if (running_mean is None) != (running_var is None):
        raise ValueError("instance_norm: running_mean and running_var must be given together")
    if not use_input_stats and running_mean is None:
        raise ValueError("instance_norm: use_input_stats=False needs running_mean and running_var")
    if use_input_stats:
        n_spatial = 1
        for s in input.shape[2:]:
            n_spatial *= s
        if n_spatial == 1:
            raise ValueError(
                f"Expected more than 1 spatial element when training, got input size {list(input.shape)}: "
                "instance norm over a single position is undefined (use running stats in eval mode)"
            )
    if activation not in ACTIVATIONS:
        raise ValueError(f"instance_norm: activation must be one of {ACTIVATIONS}, got {activation!r}")
    if residual is not None and residual.shape != input.shape:
        raise ValueError(
            f"instance_norm: residual must have the input's shape {tuple(input.shape)}, got {tuple(residual.shape)}"
        )


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    activation: str | None = None,
    residual: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """Instance normalization of ``input`` (N, C, *spatial), optionally fused with
    ``+ residual`` and a ReLU. The output keeps the input's dtype and memory format."""
    _validate(input, running_mean, running_var, weight, bias, use_input_stats, activation, residual)
    name = select_backend(backend, input, activation, residual)
    return get_backend(name).fn(
        input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, activation, residual
    )


def calc_mean_std(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-(n, c) mean and std = sqrt(var + eps) of ``x`` (N, C, *spatial), shaped (N, C).

    Computed on planes divided by a power of two (as instance_norm's statistics), so that
    planes near fp32's largest value get their finite std rather than inf."""
    if x.dim() < 3:
        raise ValueError(f"expected (N, C, *spatial), got shape {tuple(x.shape)}")
    dims = tuple(range(2, x.dim()))
    u, shift, _, scale, inv_scale = scaled_planes(x, eps)
    var_u, mean_s = torch.var_mean(u - shift, dim=dims, correction=0, keepdim=True)
    std = (var_u + (eps * inv_scale) * inv_scale).sqrt() * scale
    n, c = x.shape[:2]
    return ((shift + mean_s) * scale).reshape(n, c).to(x.dtype), std.reshape(n, c).to(x.dtype)


def adaptive_instance_norm(
    content: Tensor, style_mean: Tensor, style_std: Tensor, eps: float = 1e-5, *, backend: str = "auto"
) -> Tensor:
    """AdaIN (Huang and Belongie 2017): IN(content) * style_std + style_mean.

    ``style_mean`` and ``style_std`` are (N, C) or (C,) per-channel statistics.
    """
    n, c = content.shape[:2]
    for name, t in (("style_mean", style_mean), ("style_std", style_std)):
        if t.shape not in ((n, c), (c,)):
            raise ValueError(f"adaptive_instance_norm: {name} must have shape ({n}, {c}) or ({c},), got {tuple(t.shape)}")
    normalized = instance_norm(content, eps=eps, backend=backend)
    view = (-1, c) + (1,) * (content.dim() - 2)
    return normalized * style_std.reshape(view) + style_mean.reshape(view)
