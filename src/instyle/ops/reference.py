"""Pure-torch instance norm: the CPU fallback and the float64 test oracle.

Statistics are accumulated in fp32 whatever the input dtype (float64 stays float64),
with a two-pass variance. Before the reduction each (n, c) plane is divided by a power
of two at least as large as its largest magnitude. Dividing by a power of two is exact,
so ordinary inputs give the same bits as the unscaled formula, while planes near 1e19 to
1e38 no longer overflow (x - mean)^2 in fp32 (torch returns zeros there) and fp16 planes
around 200 no longer overflow x^2.
"""

from __future__ import annotations

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

    def input_rstd(self) -> Tensor:
        """1 / sqrt(var + eps) in the input's units, no grad (finite where ``rstd`` is).

        A constant plane beyond ~1e20, where eps / 2^(2 exponent) underflows to 0, has an
        infinite scaled ``rstd``; it is 0 here, so that a kernel applying these statistics
        writes the bias there, as the kernels' own statistics do, not 0 * inf = NaN."""
        rstd = torch.ldexp(self.rstd.detach(), -self.exponent)
        return torch.where(torch.isinf(rstd), torch.zeros_like(rstd), rstd)


def plane_stats(x: Tensor, eps: float) -> PlaneStats:
    """Per-plane statistics of ``x`` (N, C, *spatial), computed in the accumulation dtype.

    Returns ``PlaneStats(centered, rstd, mean, var, exponent)``: ``centered * rstd`` is the
    normalized input; ``mean``, the biased ``var`` and ``input_rstd()`` are in the input's
    units (``var`` may be inf when the true variance exceeds the dtype's range).
    """
    dims = tuple(range(2, x.dim()))
    xf = x.to(accumulation_dtype(x.dtype))
    # scale = 2^e >= max|x| per plane; the scale is a constant of the function, so no grad.
    amax = xf.detach().abs().amax(dim=dims, keepdim=True)
    _, exponent = torch.frexp(amax)
    # torch.frexp leaves NaN/inf exponents unspecified; such planes are NaN anyway.
    exponent = torch.where(torch.isfinite(amax), exponent, torch.zeros_like(exponent))
    one = torch.ones_like(amax)
    scale = torch.ldexp(one, exponent)
    u = xf / scale  # (N, C, *spatial) in [-1, 1], exact
    mean_u = u.mean(dim=dims, keepdim=True)
    centered = u - mean_u
    var_u = (centered * centered).mean(dim=dims, keepdim=True)
    if eps > 0:
        # eps / scale^2: may underflow to 0 (eps negligible) or overflow to inf (output 0).
        rstd = torch.rsqrt(var_u + eps * torch.ldexp(one, -2 * exponent))
    else:
        # eps == 0 on a constant plane would give 0 * inf = NaN; define the output as 0.
        rstd = torch.rsqrt(var_u)
        rstd = torch.where(torch.isinf(rstd), torch.zeros_like(rstd), rstd)
    mean = (mean_u * scale).detach()
    var = (var_u.detach() * scale) * scale
    return PlaneStats(centered, rstd, mean, var, exponent)


def update_running_stats(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, n_spatial: int, momentum: float
) -> None:
    """torch's rule: average the per-instance stats over the batch, unbiased variance."""
    with torch.no_grad():
        c = running_mean.numel()
        batch_mean = mean.reshape(-1, c).mean(0)
        batch_var = (var * (n_spatial / (n_spatial - 1))).reshape(-1, c).mean(0)
        running_mean.mul_(1 - momentum).add_(batch_mean.to(running_mean.dtype), alpha=momentum)
        running_var.mul_(1 - momentum).add_(batch_var.to(running_var.dtype), alpha=momentum)


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
        centered, rstd, mean, var, _ = plane_stats(x, eps)
        y = centered * rstd
        if running_mean is not None and running_var is not None and x.shape[0] > 0:
            n_spatial = x[0, 0].numel()
            update_running_stats(running_mean, running_var, mean, var, n_spatial, momentum)
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
