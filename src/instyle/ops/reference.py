"""Pure-torch instance norm: the CPU fallback and the float64 test oracle.

Statistics are accumulated in fp32 whatever the input dtype (float64 stays float64),
with a two-pass variance of the plane shifted by its first value. Before the reduction each
(n, c) plane is divided by a power of two 2^e near its largest magnitude
(:func:`scale_exponents`). Dividing by a power of two is exact, so ordinary inputs give the
bits of the unscaled formula, while planes up to fp32's largest finite value no longer
overflow (x - mean)^2 (torch returns zeros or NaN there), fp16 planes around 200 no longer
overflow x^2, and with eps ~ 0 the squares of tiny planes no longer underflow. eps is scaled
with the plane (eps / 2^2e); the shift keeps constant planes exactly 0 at any magnitude.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class PlaneStats(NamedTuple):
    """Per-plane statistics of an (N, C, *spatial) tensor, each keeping dims, computed in the
    accumulation dtype on the plane divided by ``2^exponent`` (see the module docstring)."""

    centered: Tensor  # (x - mean) / 2^exponent, with grad: ``centered * rstd`` is the normalized input
    rstd: Tensor  # 2^exponent / sqrt(var + eps), with grad (the scaled units of ``centered``)
    mean: Tensor  # in the input's units, no grad
    var: Tensor  # biased, in the input's units squared (inf beyond the dtype's range), no grad
    exponent: Tensor  # per plane, integer: the power of two the plane was divided by
    scaled_mean: Tensor  # mean / 2^exponent, no grad (``mean`` may be subnormal, this is not rounded)


def exponent_bounds(dtype: torch.dtype, eps: float) -> tuple[int, int]:
    """(low, high): the range :func:`scale_exponents` clamps e to for accumulation ``dtype``.

    ``high`` keeps 2^e finite: the largest planes are divided by 2^(emax-1) and then lie within
    +-2. ``low`` keeps 2^-e finite and eps / 2^2e below about the square root of the dtype's
    range: a plane far below sqrt(eps), whose variance eps swamps, is not scaled up so far that
    eps / 2^2e overflows (its output would be 0, not x / sqrt(eps)). With eps = 0 ``low`` is the
    smallest normal exponent, so subnormal planes become normal.
    """
    max_exp = math.frexp(torch.finfo(dtype).max)[1]  # 128 for fp32, 1024 for float64
    low = 2 - max_exp
    if eps > 0:
        low = max(low, math.ceil((math.log2(eps) - max_exp / 2) / 2))
    return min(low, max_exp - 1), max_exp - 1


def scale_exponents(amax: Tensor, eps: float, constant: Tensor | None = None) -> Tensor:
    """Per plane, the e of the scale 2^e for planes of largest magnitude ``amax`` (a float
    tensor): 2^e > amax, within :func:`exponent_bounds`.

    A constant plane (``constant``: all its values equal) gets the smallest e that keeps
    x / 2^e finite (2^(emax-3) below): its deviations are exactly 0 whatever e, and its
    2^e / sqrt(eps), the derivative of the output in those units, must stay finite."""
    _, exponent = torch.frexp(amax)
    # torch.frexp leaves NaN/inf exponents unspecified; such planes are NaN anyway.
    exponent = torch.where(torch.isfinite(amax), exponent, torch.zeros_like(exponent))
    low, high = exponent_bounds(amax.dtype, eps)
    if constant is not None:
        exponent = torch.where(constant, exponent - (high - 2), exponent)
    return exponent.clamp(low, high)


class ScaledPlanes(NamedTuple):
    """``x`` (N, C, *spatial) in the accumulation dtype divided per plane by 2^exponent
    (:func:`scale_exponents`); all but ``u`` keep dims and have no grad (constants)."""

    u: Tensor  # x / 2^exponent, with grad
    shift: Tensor  # the plane's first value / 2^exponent: u - shift is exactly 0 on a constant plane
    exponent: Tensor
    scale: Tensor  # 2^exponent
    inv_scale: Tensor  # 2^-exponent


def scaled_planes(x: Tensor, eps: float) -> ScaledPlanes:
    """``x`` divided per plane by a power of two near its largest magnitude (see ScaledPlanes)."""
    dims = tuple(range(2, x.dim()))
    xf = x.to(accumulation_dtype(x.dtype))
    stat_shape = x.shape[:2] + (1,) * len(dims)
    if xf.numel():
        hi, lo = xf.detach().amax(dim=dims, keepdim=True), xf.detach().amin(dim=dims, keepdim=True)
        first = xf.detach()[(slice(None), slice(None)) + (0,) * len(dims)].reshape(stat_shape)
    else:  # amax refuses empty reductions
        hi = lo = first = xf.new_zeros(stat_shape)
    exponent = scale_exponents(torch.maximum(hi.abs(), lo.abs()), eps, constant=hi == lo)
    one = torch.ones_like(hi)
    inv_scale = torch.ldexp(one, -exponent)
    return ScaledPlanes(xf * inv_scale, first * inv_scale, exponent, torch.ldexp(one, exponent), inv_scale)


def plane_stats(x: Tensor, eps: float) -> PlaneStats:
    """Per-plane statistics of ``x`` (N, C, *spatial), computed in the accumulation dtype.

    Returns ``PlaneStats(centered, rstd, mean, var, exponent, scaled_mean)``: ``centered * rstd``
    is the normalized input; ``mean`` and the biased ``var`` are in the input's units (``var``
    may be inf when the true variance exceeds the dtype's range). Planes with no elements get
    NaN statistics (torch's mean of nothing) and an empty ``centered``.
    """
    dims = tuple(range(2, x.dim()))
    u, shift, exponent, scale, inv_scale = scaled_planes(x, eps)
    shifted = u - shift  # within +-4, exact on constant planes (shifted two-pass, as the cpu kernels)
    mean_s = shifted.mean(dim=dims, keepdim=True)
    centered = shifted - mean_s
    var_u = (centered * centered).mean(dim=dims, keepdim=True)
    if eps > 0:
        # eps / scale^2 as two exact steps: 2^-2e alone may overflow where eps / 2^2e does not
        rstd = torch.rsqrt(var_u + (eps * inv_scale) * inv_scale)
    else:
        # eps == 0 on a constant plane would give 0 * inf = NaN; define the output as 0.
        rstd = torch.rsqrt(var_u)
        rstd = torch.where(torch.isinf(rstd), torch.zeros_like(rstd), rstd)
    mean_u = (shift + mean_s).detach()
    var = (var_u.detach() * scale) * scale
    return PlaneStats(centered, rstd, mean_u * scale, var, exponent, mean_u)


def update_running_stats(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, n_spatial: int, momentum: float
) -> None:
    """torch's rule: average the per-instance stats over the batch, unbiased variance.
    An input with no elements (no samples, channels or positions) updates nothing, as in torch.
    The batch averages are taken in float64: fp32 means near its largest value overflow a sum."""
    if mean.numel() == 0 or n_spatial == 0:
        return
    with torch.no_grad():
        c = running_mean.numel()
        batch_mean = mean.double().reshape(-1, c).mean(0)
        batch_var = (var.double() * (n_spatial / (n_spatial - 1))).reshape(-1, c).mean(0)
        running_mean.mul_(1 - momentum).add_(batch_mean.to(running_mean.dtype), alpha=momentum)
        running_var.mul_(1 - momentum).add_(batch_var.to(running_var.dtype), alpha=momentum)


def spatial_size(x: Tensor) -> int:
    """Positions per (n, c) plane of ``x`` (N, C, *spatial), also when N or C is 0."""
    return math.prod(x.shape[2:])


def instance_norm_reference(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_input_stats: bool,
    momentum: float,
    eps: float,
    activation: str | None = None,
    residual: Tensor | None = None,
) -> Tensor:
    """y = act(weight * (x - mean) * rstd + bias + residual); inputs already validated."""
    x = input
    acc = accumulation_dtype(x.dtype)
    stat_shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    if use_input_stats:
        centered, rstd, mean, var, _, _ = plane_stats(x, eps)
        y = centered * rstd
        if running_mean is not None and running_var is not None:
            update_running_stats(running_mean, running_var, mean, var, spatial_size(x), momentum)
    else:
        mean = running_mean.to(acc).reshape(stat_shape)
        rstd = torch.rsqrt(running_var.to(acc).reshape(stat_shape) + eps)
        y = (x.to(acc) - mean) * rstd
    if weight is not None:
        y = y * weight.to(acc).reshape(stat_shape)
    if bias is not None:
        y = y + bias.to(acc).reshape(stat_shape)
    if residual is not None:
        y = y + residual.to(acc)
    if activation == "relu":
        y = torch.relu(y)
    return y.to(x.dtype).contiguous(memory_format=_memory_format(x))


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format
