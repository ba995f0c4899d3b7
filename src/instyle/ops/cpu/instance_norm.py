"""The "cpu" backend: fused instance norm forward and analytic backward for CPU tensors.

Layers, top to bottom:

- ``instance_norm_cpu``: the backend function (functional.py's contract). Picks the layout,
  converts parameters, updates running stats; float64 and empty inputs go to the reference.
- ``instyle::instance_norm_cpu_fwd`` / ``_bwd``: custom ops, so ``torch.compile`` treats the
  kernels as opaque calls without graph breaks; the forward's autograd (``register_autograd``)
  saves x, mean, rstd (and y for the ReLU) and calls the backward op. They call the C++ kernels
  of ``instance_norm.cpp`` through :func:`.build.launch` or, without a compiler, the same math
  in torch.

Layouts: planar (N, C, S) for contiguous input and (N, S, C) for channels_last(_3d) input;
the output has x's strides, so channels_last stays channels_last with no copy. Outputs of
32 MiB and more come from ``_empty_like``: anonymous memory advised for transparent huge pages,
which faults in 2 MiB at a time instead of 4 KiB (glibc gives every allocation that large its
own fresh mmap, and faulting a fresh output in 4 KiB pages can cost several times writing it:
measured in docs/performance.md, "Huge-page outputs"). Statistics are fp32 (shifted two-pass per
chunk, Chan merge). When the kernels flag planes whose fp32 statistics overflowed on finite input
(magnitudes beyond ~1e19) or, with eps ~ 0, underflowed, every plane is redone in torch with the
reference's ``plane_stats``: statistics of the plane divided by a power of two 2^e, returned with
e, so that the output and the backward work in those units too (x - mean itself may overflow
there, and 1 / std may be subnormal). The common case returns e = 0 and runs kernels only.
"""

from __future__ import annotations

import mmap
from typing import Callable, Optional

import torch
from torch import Tensor

from instyle.ops.reference import (
    _memory_format,
    instance_norm_reference,
    plane_stats,
    spatial_size,
    update_running_stats,
)
from instyle.ops.cpu import build
from instyle.ops.eager import eager_function

__all__ = ["instance_norm_cpu", "supports"]

_DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def supports(input: Tensor, activation: str | None = None, residual: Tensor | None = None) -> bool:
    return input.device.type == "cpu" and (input.dtype in _DTYPE_CODES or input.dtype == torch.float64)


# glibc serves allocations from 32 MiB up (its largest dynamic mmap threshold) with a fresh mmap
# every time; below that, freed memory is reused without page faults, so the plain allocator wins.
HUGE_PAGE_MIN_BYTES = 32 << 20
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


def _dense(x: Tensor) -> bool:
    return sum((size - 1) * stride for size, stride in zip(x.shape, x.stride())) + 1 == x.numel()


def _empty_like(x: Tensor) -> Tensor:
    """``torch.empty_like(x)`` for dense CPU x (contiguous or channels_last), in memory advised for
    transparent huge pages when it is large. The tensor owns the mapping through its buffer and, like
    any ``torch.frombuffer`` tensor, cannot be resized in place."""
    nbytes = x.numel() * x.element_size()
    if _MADV_HUGEPAGE is None or nbytes < HUGE_PAGE_MIN_BYTES or not _dense(x):  # small first: cheapest
        return torch.empty_like(x)
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buf.madvise(_MADV_HUGEPAGE)
    except (OSError, ValueError):  # no THP on this kernel, or mapping refused: the plain allocator
        return torch.empty_like(x)
    return torch.frombuffer(buf, dtype=x.dtype).as_strided(x.shape, x.stride())


# Below this many elements a call runs on one thread: waking the OpenMP team costs more than the
# work (ATen's own grain size, at::internal::GRAIN_SIZE). The kernels' bits do not depend on the
# thread count. Measured in docs/performance.md, "Small calls on one thread".
PARALLEL_MIN_ELEMENTS = 32768


def _threads(x: Tensor) -> int:
    return 1 if x.numel() < PARALLEL_MIN_ELEMENTS else torch.get_num_threads()


def _scaled_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(mean, rstd, var, exponent) per plane, (N, C), the reference's statistics: mean and rstd
    (fp32) of the plane divided by 2^exponent (int32), var (fp32) in x's units."""
    stats = plane_stats(x, eps)
    n, c = x.shape[:2]
    return (stats.scaled_mean.reshape(n, c), stats.rstd.detach().reshape(n, c), stats.var.reshape(n, c),
            stats.exponent.reshape(n, c))


def _stat_view(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(t.shape + (1,) * (x.dim() - 2))


def _scaled_input(x: Tensor, exponent: Tensor) -> Tensor:
    """x / 2^exponent per plane in fp32: the units of the statistics (exact where it stays normal)."""
    return torch.ldexp(x.float(), _stat_view(-exponent, x))


def _apply_torch(x, weight, bias, residual, mean, rstd, relu, exponent):
    """y = act((x / 2^e - mean) * rstd * w + b + r) in torch ops, in x's layout (portable path)."""
    c = x.shape[1]
    scale = rstd if weight is None else rstd * weight
    y = (_scaled_input(x, exponent) - _stat_view(mean, x)) * _stat_view(scale, x)
    if bias is not None:
        y = y + bias.reshape((1, c) + (1,) * (x.dim() - 2))
    if residual is not None:
        y = y + residual.float()
    if relu:
        y = torch.relu(y)
    return y.to(x.dtype).contiguous(memory_format=_memory_format(x))


def _forward_kernels(
    x: Tensor,  # (N, C, *spatial), contiguous or channels_last(_3d), fp32/bf16/fp16
    weight: Optional[Tensor],  # (C,) fp32 or None
    bias: Optional[Tensor],  # (C,) fp32 or None
    residual: Optional[Tensor],  # like x (same dtype and layout) or None
    mean: Optional[Tensor],  # (N, C) fp32: given statistics (running stats), or None
    rstd: Optional[Tensor],  # (N, C) fp32, with mean
    eps: float,
    relu: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns (y, mean, rstd, var, exponent), each statistic (N, C): mean and rstd (fp32) of the
    planes divided by 2^exponent (int32, 0 unless the kernels' fp32 statistics failed), var (fp32,
    biased) in x's units, unset with given statistics."""
    n, c = x.shape[:2]
    stats = mean is None
    var = x.new_empty((n, c), dtype=torch.float32)
    exponent = x.new_zeros((n, c), dtype=torch.int32)
    if stats:
        mean, rstd = x.new_empty((n, c), dtype=torch.float32), x.new_empty((n, c), dtype=torch.float32)
    else:
        mean, rstd = mean.clone(), rstd.clone()  # outputs may not alias inputs
    if build.load() is None:
        if stats:
            mean, rstd, var, exponent = _scaled_stats(x, eps)
        return _apply_torch(x, weight, bias, residual, mean, rstd, relu, exponent), mean, rstd, var, exponent
    y = _empty_like(x)
    args = {"dtype": _DTYPE_CODES[x.dtype], "cl": int(not x.is_contiguous()), "x": x, "r": residual, "y": y}
    args.update(w=weight, b=bias, N=n, C=c, S=x.numel() // (n * c), eps=eps, relu=int(relu))
    if build.launch("instyle_instance_norm_fwd", **args, mean=mean, rstd=rstd, var=var, stats=int(stats),
                    nt=_threads(x)):
        # fp32 statistics failed on finite planes: all planes again, scaled, in torch (rare)
        mean, rstd, var, exponent = _scaled_stats(x, eps)
        y = _apply_torch(x, weight, bias, residual, mean, rstd, relu, exponent)
    return y, mean, rstd, var, exponent


_forward = torch.library.custom_op("instyle::instance_norm_cpu_fwd", mutates_args=())(_forward_kernels)


def _forward_path(*tensors: Optional[Tensor]) -> Callable:
    """How a call runs. With no tracing, compiling, dispatch or function mode and only plain tensors:
    the kernels directly when no autograd graph is recorded (the custom op's first call imports
    torch._dynamo, since custom ops wrap their kernels in ``_disable_dynamo``: about 2 s of every
    process's first stylization, measured in docs/performance.md), else through :data:`_EagerFunction`
    (no functorch transform or JIT tracing either). Otherwise the custom op."""
    if _no_mode_and_plain(tensors):
        if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)):
            return _forward_kernels
        if not (torch._C._are_functorch_transforms_active() or torch.jit.is_tracing()):
            return _EagerFunction.apply
    return torch.ops.instyle.instance_norm_cpu_fwd


def _no_mode_and_plain(tensors: tuple[Optional[Tensor], ...]) -> bool:
    """Not compiling, no dispatch or function mode, only plain tensors."""
    if torch.compiler.is_compiling():  # first: dynamo folds it and never traces the C calls below
        return False
    if torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return False
    return all(t is None or type(t) in _PLAIN_TYPES for t in tensors)


_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


@_forward.register_fake
def _(x, weight, bias, residual, mean, rstd, eps, relu):
    n, c = x.shape[:2]
    stat = x.new_empty((n, c), dtype=torch.float32)
    exponent = x.new_empty((n, c), dtype=torch.int32)
    return torch.empty_like(x), stat, torch.empty_like(stat), torch.empty_like(stat), exponent


def _backward_kernels(
    dy: Tensor,  # like x
    x: Tensor,  # the forward's input
    y: Optional[Tensor],  # the forward's output, needed for the ReLU mask only
    mean: Tensor,  # (N, C) fp32, of the planes divided by 2^exponent
    rstd: Tensor,  # (N, C) fp32, likewise
    exponent: Tensor,  # (N, C) int32, as the forward returned it
    weight: Optional[Tensor],  # (C,) fp32 or None
    use_input_stats: bool,  # False: mean/rstd were constants (running stats)
    relu: bool,
    want_dres: bool,  # with relu: also return g = dy * [y > 0], the residual's gradient
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns (dx, dweight, dbias, dres); dweight/dbias (C,) fp32; dres empty unless asked."""
    n, c = x.shape[:2]
    if build.load() is not None:
        dx = _empty_like(x)
        dres = _empty_like(x) if want_dres and relu else x.new_empty(0)
        dweight, dbias = torch.empty(c, dtype=torch.float32), torch.empty(c, dtype=torch.float32)
        scaled = build.launch(
            "instyle_instance_norm_bwd", dtype=_DTYPE_CODES[x.dtype], cl=int(not x.is_contiguous()), dy=dy, x=x,
            y=y if relu else None, mean=mean, rstd=rstd, exponent=exponent, w=weight, dx=dx,
            dr=dres if dres.numel() else None, dw=dweight, db=dbias, N=n, C=c, S=x.numel() // (n * c),
            stats=int(use_input_stats), relu=int(relu), nt=_threads(x),
        )
        if not scaled:
            return dx, dweight, dbias, dres
    # no kernels, or statistics scaled by 2^exponent (the kernels take them in x's units)
    return _backward_torch(dy, x, y, mean, rstd, exponent, weight, use_input_stats, relu, want_dres)


_backward = torch.library.custom_op("instyle::instance_norm_cpu_bwd", mutates_args=())(_backward_kernels)


def _backward_torch(dy, x, y, mean, rstd, exponent, weight, use_input_stats, relu, want_dres):
    g = dy.float()
    if relu:
        g = torch.where(y > 0, g, torch.zeros_like(g))
    dims = tuple(range(2, x.dim()))
    xhat = (_scaled_input(x, exponent) - _stat_view(mean, x)) * _stat_view(rstd, x)
    sum_g = g.sum(dim=dims, dtype=torch.float64)
    sum_gxhat = (g * xhat).sum(dim=dims, dtype=torch.float64)
    k = rstd if weight is None else rstd * weight
    dx = g
    if use_input_stats:
        s = x.numel() // (x.shape[0] * x.shape[1])
        dx = g - _stat_view((sum_g / s).float(), x) - xhat * _stat_view((sum_gxhat / s).float(), x)
    # the gradient of x / 2^e, times 2^-e last: one rounding where it is subnormal
    dx = torch.ldexp(dx * _stat_view(k, x), _stat_view(-exponent, x))
    dx = dx.to(x.dtype).contiguous(memory_format=_memory_format(x))
    dres = g.to(x.dtype).contiguous(memory_format=_memory_format(x)) if want_dres and relu else x.new_empty(0)
    return dx, sum_gxhat.sum(0).float(), sum_g.sum(0).float(), dres


@_backward.register_fake
def _(dy, x, y, mean, rstd, exponent, weight, use_input_stats, relu, want_dres):
    c = x.shape[1]
    grad = x.new_empty((c,), dtype=torch.float32)
    dres = torch.empty_like(x) if want_dres and relu else x.new_empty(0)
    return torch.empty_like(x), grad, torch.empty_like(grad), dres


def _setup_context(ctx, inputs, output):
    x, weight, _, _, given_mean, _, _, relu = inputs
    y, mean, rstd, var, exponent = output
    ctx.mark_non_differentiable(mean, rstd, var, exponent)
    ctx.save_for_backward(x, weight, mean, rstd, exponent, y if relu else None)
    ctx.use_input_stats = given_mean is None
    ctx.relu = relu


def _autograd_backward(ctx, dy, _dmean, _drstd, _dvar, _dexponent, bwd=None):
    """Gradients of (x, weight, bias, residual); the statistics and options have none."""
    x, weight, mean, rstd, exponent, y = ctx.saved_tensors
    need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
    dy = dy.contiguous(memory_format=_memory_format(x))
    want_dres = need_r and ctx.relu
    dx, dw, db, dres = (bwd or torch.ops.instyle.instance_norm_cpu_bwd)(
        dy, x, y, mean, rstd, exponent, weight, ctx.use_input_stats, ctx.relu, want_dres
    )
    dr = (dres if ctx.relu else dy) if need_r else None
    return dx if need_x else None, dw if need_w else None, db if need_b else None, dr, None, None, None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


# Eager graph-recording calls: the op's own setup and backward, its kernels called directly.
_EagerFunction = eager_function(
    _forward_kernels, _setup_context, _autograd_backward, _backward_kernels, "_EagerFunction"
)


def instance_norm_cpu(
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
    """Backend entry point (inputs already validated); float64 and empty inputs use the reference."""
    if input.dtype not in _DTYPE_CODES or input.numel() == 0:
        return instance_norm_reference(
            input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, activation, residual
        )
    memory_format = _memory_format(input)
    x = input.contiguous(memory_format=memory_format)  # no-op for NCHW and channels_last
    n, c = x.shape[:2]
    if residual is not None:
        residual = residual.to(x.dtype).contiguous(memory_format=memory_format)
    if weight is not None:
        weight = weight.float().contiguous()
    if bias is not None:
        bias = bias.float().contiguous()
    given_mean = given_rstd = None
    if not use_input_stats:
        given_mean = running_mean.float().expand(n, c).contiguous()
        given_rstd = torch.rsqrt(running_var.float() + eps).expand(n, c).contiguous()
    fwd = _forward_path(x, weight, bias, residual)
    y, mean, _, var, exponent = fwd(x, weight, bias, residual, given_mean, given_rstd, float(eps), activation == "relu")
    if use_input_stats and running_mean is not None and running_var is not None:
        mean = torch.ldexp(mean, exponent)  # in x's units
        update_running_stats(running_mean, running_var, mean, var, spatial_size(x), momentum)
    return y
