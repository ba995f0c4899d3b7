"""Triton instance norm, forward and backward, with its fusions:
``y = act(weight * (x - mean) * rstd + bias + residual)``.

Four layers, each on its own screen:

1. kernels (kernels.py): ``_instance_norm_fwd_kernel``, ``_instance_norm_stats_combine_kernel``,
   ``_instance_norm_bwd_kernel``;
2. launchers ``instance_norm_fwd`` / ``instance_norm_bwd`` (layout, tile plan, grid, and the launch
   configuration tuned per size class);
3. the custom ops ``instyle::instance_norm_triton_fwd`` / ``instyle::instance_norm_triton_bwd``
   with fake implementations and autograd (``register_autograd``), so
   ``torch.compile(fullgraph=True)`` sees one opaque op;
4. the backend function ``instance_norm_triton`` registered as ``backend="triton"``.

Addressing. A tensor (N, C, *spatial) is read as (N, C, S) through three strides; the spatial
dims must collapse to one stride, which holds for NCHW and channels_last (NHWC) alike, so both
are read in place. A tile is BLOCK_C channels of one sample by BLOCK_S spatial positions: BLOCK_C
is 1 for large NCHW planes and several channels for small ones; for channels_last, where the
channels are the contiguous dim, at least one 32-byte sector of channels. All offsets are int64.

Memory traffic. Planes up to MAX_SINGLE_TILE elements stay in registers: x is read once and y
written once (the backward reads x, dy and y once). Larger planes are looped in LOOP_TILE tiles and
read twice, statistics then normalization, by the same program; the first read asks L2 to keep the
lines and the second to drop them, and the grid may hold fewer programs than tiles (each takes
tiles pid, pid + programs, ...) so that the planes in flight fit in L2 and the second read is
served from it. The statistics loop keeps a Welford mean and M2 per lane and combines the lanes
once after it: no reduction across threads inside the loop, so its loads go out back to back.
When the tiles are too few to fill the device, each plane is split into chunks over grid axis 1;
the chunks' partial (mean, M2, e) are combined by Chan's formula in a second kernel, and a third
pass normalizes. The backward writes per-(plane, chunk) sums of dy and dy * x_hat, from which the
weight and bias gradients are summed in torch: deterministic, no atomics.

Tuning. num_warps and the programs per streaming multiprocessor are timed per size class at first
use on CUDA (instyle.ops.choose, like backend="auto"; not while torch.compile traces or a CUDA graph
captures; INSTYLE_TRITON_TUNE=0 keeps the heuristic). Tile sizes are fixed by the plan and every
reduction across lanes is a fixed tree of halves, so no tuned choice changes a bit of the result.
The kernels are compiled without FMA contraction (``enable_fp_fusion=False``, whose default Triton
3.10 changes): every operation rounds once, as in Triton's interpreter, so the GPU's bits are the
interpreter's (tests/test_triton_launch.py checks it on a GPU) and do not move with Triton's default.

Statistics are fp32. Each lane is divided by a power of two 2^e >= max|x| (exact) and its mean and
sum of squared deviations (M2) are kept in those units; tiles and lanes combine by Chan's formula,
rescaling the sums when a larger e joins. The per-plane mean and rstd stay in those units, with
2^-e beside them (``InvScale``), and the output and backward compute x * 2^-e - mean: so planes up
to fp32's largest value give correct outputs and gradients where x - mean would overflow (the
variance itself is only reported as inf when it overflows fp32, as the reference does), and with
eps = 0 subnormal planes are normalized.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Callable, NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from instyle.ops import choose
from instyle.ops.eager import eager_function
from instyle.ops.reference import exponent_bounds, spatial_size, update_running_stats
from instyle.ops.registry import register_backend
from instyle.ops.triton.kernels import (
    APPLY,
    FUSED,
    PARTIAL,
    _instance_norm_bwd_kernel,
    _instance_norm_fwd_kernel,
    _instance_norm_stats_combine_kernel,
)

__all__ = ["instance_norm_triton", "instance_norm_fwd", "instance_norm_bwd", "supports", "Launch"]

# Largest tile (elements) a program keeps in registers, and the tile of a plane that is looped.
MAX_SINGLE_TILE = 8192
LOOP_TILE = 4096

# ---------------------------------------------------------------------------------------------
# 2. Launchers: layout, tile plan, launch configuration, grid. Plain functions of tensors.
# ---------------------------------------------------------------------------------------------


class _Plan(NamedTuple):
    block_c: int  # channels per program
    block_s: int  # spatial positions per tile
    single_tile: bool  # a program's chunk fits in one tile
    splits: int  # chunks per plane (grid axis 1)
    chunk: int  # spatial positions per chunk
    num_warps: int


@functools.lru_cache(maxsize=4096)
def _plan(
    n: int, c: int, s: int, channels_contiguous: bool, max_tile: int, min_programs: int, elem_size: int = 4
) -> _Plan:
    """Tile sizes, chunking and warps for (N, C, S); max_tile / min_programs 0 mean the defaults."""
    max_single = max_tile or MAX_SINGLE_TILE
    loop_tile = max(1, max_tile // 4) if max_tile else LOOP_TILE
    c_p2, s_p2 = triton.next_power_of_2(c), triton.next_power_of_2(s)
    if channels_contiguous and c > 1:
        # channels_last: the channels are the contiguous dim. Keep whole planes in registers with
        # as few as one 32-byte sector of channels per position; else loop over wide tiles.
        sector_c = min(c_p2, max(1, 32 // elem_size))
        single_tile = sector_c * s_p2 <= max_single
        if single_tile:
            block_c, block_s = min(c_p2, 64, max(sector_c, max_single // s_p2)), s_p2
        else:
            block_c = min(c_p2, 64, loop_tile)
            block_s = max(1, loop_tile // block_c)
    else:
        single_tile = s_p2 <= max_single
        block_s = s_p2 if single_tile else loop_tile
        # Small planes: several channels per program, so each program moves a useful amount.
        block_c = min(c_p2, max(1, min(max_single, LOOP_TILE) // block_s)) if single_tile else 1
    programs = n * triton.cdiv(c, block_c)
    splits, chunk = 1, s
    if not single_tile and programs < min_programs:
        tiles = triton.cdiv(s, block_s)
        splits = min(triton.cdiv(min_programs, programs), tiles)
        chunk = triton.cdiv(tiles, splits) * block_s
        splits = triton.cdiv(s, chunk)
    num_warps = min(16, max(4, block_c * block_s // 512))
    return _Plan(block_c, block_s, single_tile, splits, chunk, num_warps)


def _default_min_programs(device: torch.device) -> int:
    """Programs needed to fill the device: two per streaming multiprocessor on CUDA."""
    if device.type == "cuda":
        return 2 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 0  # the interpreter runs programs one after another: splitting only costs time


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _flat_strides(t: Tensor) -> tuple[int, int, int] | None:
    """(stride_n, stride_c, stride_s) when the spatial dims of ``t`` collapse to one stride."""
    sizes, strides = t.shape[2:], t.stride()[2:]
    dims = [(size, stride) for size, stride in zip(sizes, strides) if size != 1]
    for (_, outer), (inner_size, inner) in zip(dims, dims[1:]):
        if outer != inner * inner_size:
            return None
    return t.stride(0), t.stride(1), (dims[-1][1] if dims else 1)


def _is_dense(t: Tensor) -> bool:
    """Non-overlapping and dense in some dim order, so ``empty_like`` keeps its strides."""
    dims = sorted((stride, size) for size, stride in zip(t.shape, t.stride()) if size != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _prepare(x: Tensor) -> Tensor:
    """``x`` itself when kernels can read it in place (NCHW, channels_last, ...), else a copy."""
    if _is_dense(x) and _flat_strides(x) is not None:
        return x
    return x.contiguous()


def _readable(t: Tensor) -> Tensor:
    """A tensor read through (n, c, s) strides (residual, grad): copied only if it has none."""
    return t if _flat_strides(t) is not None else t.contiguous()


def _kernels_interpreted() -> bool:
    """Whether these kernels run in Triton's interpreter (CPU tensors). Triton reads
    TRITON_INTERPRET when it and this module are imported, not per call, so setting it later
    has no effect: both triton.language's own @jit helpers and our kernels must be interpreted."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.cdiv, InterpretedFunction) and isinstance(_instance_norm_fwd_kernel, InterpretedFunction)


_INTERPRETED = _kernels_interpreted()


def interpreter_ready() -> bool:
    return _INTERPRETED


def _check_device(x: Tensor) -> None:
    if x.device.type != "cuda" and not interpreter_ready():
        raise RuntimeError(
            f"instance_norm (triton): a {x.device.type} tensor needs Triton's interpreter; set TRITON_INTERPRET=1 "
            "before triton is first imported (a CUDA tensor needs nothing)"
        )


@functools.cache
def _dummy(device: torch.device) -> Tensor:
    """A placeholder pointer for the arguments a launch does not use (never read or written)."""
    return torch.empty(1, device=device, dtype=torch.float32)


class Launch(NamedTuple):
    """How a plan is launched; no field changes the result's bits."""

    num_warps: int
    programs_per_sm: int  # programs on grid axis 0 per streaming multiprocessor; 0: one per tile


# Device types whose launches are timed per size class (a test adds "cpu" with an injected timer).
TUNED_DEVICES: set[str] = {"cuda"}
TUNE_VARIABLE = "INSTYLE_TRITON_TUNE"
# A launch for every call, untimed (tests, and the GPU check that every candidate gives the same bits).
FORCED: Launch | None = None


@functools.lru_cache(maxsize=1024)
def candidates(plan: _Plan) -> tuple[Launch, ...]:
    """The launches timed for ``plan``, the heuristic one first (kept where nothing is timed)."""
    default = Launch(plan.num_warps, 0)
    elements = plan.block_c * plan.block_s
    warps = [w for w in (plan.num_warps // 2, plan.num_warps * 2, 4, 8, 16) if 1 <= w <= 16 and elements >= 128 * w]
    launches = [default] + [Launch(w, 0) for w in dict.fromkeys(warps) if w != plan.num_warps]
    if not plan.single_tile and plan.splits == 1:
        # Looped planes are read twice: fewer planes in flight may keep the second read in L2.
        launches += [Launch(w, k) for k in (1, 2) for w in (plan.num_warps, *warps)]
    return tuple(dict.fromkeys(launches))


def _size_class(kind: str, x: Tensor, plan: _Plan, tiles: int, flags: tuple) -> tuple:
    """Calls that share one tuned launch: the plan's tiling, and power-of-two buckets of the tile
    count and the plane size."""
    def bucket(n: int) -> int:
        return max(0, math.ceil(math.log2(max(n, 1))))

    tiling = (plan.block_c, plan.block_s, plan.single_tile, plan.splits, plan.num_warps)
    return ("triton-launch", kind, str(x.device), x.dtype, tiling, bucket(tiles), bucket(spatial_size(x)), flags)


def _launch_for(kind: str, x: Tensor, plan: _Plan, tiles: int, flags: tuple, run: Callable[[Launch], None]) -> Launch:
    """The launch for this call: forced, else the fastest candidate of its size class (timed once
    per process on a tuned device), else the heuristic one."""
    if FORCED is not None:
        return FORCED
    def may_time() -> bool:
        return x.device.type in TUNED_DEVICES and os.environ.get(TUNE_VARIABLE, "1") != "0" and choose.may_time(x)

    key = _size_class(kind, x, plan, tiles, flags)
    return choose.fastest(key, candidates(plan), lambda launch: lambda: run(launch), x.device, may_time)


def _programs(device: torch.device, tiles: int, launch: Launch) -> int:
    if launch.programs_per_sm <= 0:
        return tiles
    sms = 1  # CPU tensors (the interpreter, in tests): one program per "multiprocessor"
    if device.type == "cuda":
        sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return max(1, min(tiles, launch.programs_per_sm * sms))


def instance_norm_fwd(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    residual: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    use_input_stats: bool,
    eps: float,
    relu: bool,
    max_tile: int = 0,
    min_programs: int = -1,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, rstd, var, inv_scale): y like ``x``; the rest (N, C) fp32: mean and rstd of the
    planes times inv_scale (a power of two, 1 with running statistics), var in x's units (biased,
    or the running var)."""
    _check_device(x)
    x = _prepare(x)
    n, c = x.shape[:2]
    s = spatial_size(x)
    y = torch.empty_like(x)
    stats = [torch.empty((n, c), device=x.device, dtype=torch.float32) for _ in range(3)]
    mean, rstd, var = stats
    inv_scale = torch.ones((n, c), device=x.device, dtype=torch.float32)
    if not use_input_stats:
        mean.copy_(running_mean.to(torch.float32).expand(n, c))
        var.copy_(running_var.to(torch.float32).expand(n, c))
        rstd.copy_(torch.rsqrt(var + eps))
    if x.numel() == 0:
        return y, mean, rstd, var, inv_scale
    if min_programs < 0:
        min_programs = _default_min_programs(x.device)
    sxn, sxc, sxs = _flat_strides(x)
    plan = _plan(n, c, s, sxc == 1, max_tile, min_programs, x.element_size())
    r = _readable(residual) if residual is not None else None
    srn, src, srs = _flat_strides(r) if r is not None else (0, 0, 0)
    dummy = _dummy(x.device)
    tiles = n * triton.cdiv(c, plan.block_c)
    flags = dict(HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, HAS_RESIDUAL=r is not None, RELU=relu,
                 BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, SINGLE_TILE=plan.single_tile or plan.chunk <= plan.block_s)
    args = [x, y, r if r is not None else dummy, weight if weight is not None else dummy,
            bias if bias is not None else dummy, mean, rstd, var, inv_scale]
    e_min = exponent_bounds(torch.float32, eps)[0]
    shape_args = [c, s, sxn, sxc, sxs, srn, src, srs, plan.chunk, plan.splits, eps, e_min, tiles]
    if plan.splits > 1 and use_input_stats:
        parts = [torch.empty((n * c, plan.splits), device=x.device, dtype=torch.float32) for _ in "ab"]
        parts.append(torch.empty((n * c, plan.splits), device=x.device, dtype=torch.int32))

    def run(launch: Launch) -> None:
        programs = _programs(x.device, tiles, launch)
        fwd = _instance_norm_fwd_kernel[(programs, plan.splits)]
        common = dict(flags, num_warps=launch.num_warps, enable_fp_fusion=False)
        if not use_input_stats:
            fwd(*args, dummy, dummy, dummy, *shape_args, programs, MODE=APPLY.value, **common)
        elif plan.splits == 1:
            fwd(*args, dummy, dummy, dummy, *shape_args, programs, MODE=FUSED.value, **common)
        else:
            fwd(*args, *parts, *shape_args, programs, MODE=PARTIAL.value, **common)
            _combine_stats(x, parts, mean, rstd, var, inv_scale, plan, eps, e_min)
            fwd(*args, dummy, dummy, dummy, *shape_args, programs, MODE=APPLY.value, **common)

    key_flags = (use_input_stats, *flags.values())
    run(_launch_for("fwd", x, plan, tiles, key_flags, run))
    return y, mean, rstd, var, inv_scale


def _combine_stats(x, parts, mean, rstd, var, inv_scale, plan: _Plan, eps: float, e_min: int) -> None:
    """Per-plane statistics from the chunks' partial (mean, M2, e)."""
    n, c = mean.shape
    sxn, sxc, _ = _flat_strides(x)
    block_splits = triton.next_power_of_2(plan.splits)
    block_p = max(1, min(64, 2048 // block_splits))
    _instance_norm_stats_combine_kernel[(triton.cdiv(n * c, block_p),)](
        x, *parts, mean, rstd, var, inv_scale, n * c, c, spatial_size(x), sxn, sxc, plan.chunk, plan.splits, eps, e_min,
        BLOCK_P=block_p, BLOCK_SPLITS=block_splits, num_warps=4, enable_fp_fusion=False,
    )


def instance_norm_bwd(
    dy: Tensor,
    x: Tensor,
    y: Tensor | None,
    weight: Tensor | None,
    mean: Tensor,
    rstd: Tensor,
    inv_scale: Tensor,
    use_input_stats: bool,
    relu: bool,
    write_dr: bool,
    max_tile: int = 0,
    min_programs: int = -1,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dr, sum_dy, sum_dy_xhat): dx like ``x``; dr = dy * relu' like ``x`` if ``write_dr``
    (else empty); the per-plane sums (N, C) fp32 give the bias and weight gradients. mean, rstd
    and inv_scale are the forward's."""
    _check_device(x)
    x = _prepare(x)
    n, c = x.shape[:2]
    s = spatial_size(x)
    dx = torch.empty_like(x)
    dr = torch.empty_like(x) if write_dr else x.new_empty(0)
    if x.numel() == 0:
        zeros = torch.zeros((n, c), device=x.device, dtype=torch.float32)
        return dx, dr, zeros, zeros.clone()
    if min_programs < 0:
        min_programs = _default_min_programs(x.device)
    dy = _readable(dy)
    sxn, sxc, sxs = _flat_strides(x)
    sdn, sdc, sds = _flat_strides(dy)
    plan = _plan(n, c, s, sxc == 1, max_tile, min_programs, x.element_size())
    sum_dy, sum_dy_xhat = (torch.empty((n * c, plan.splits), device=x.device, dtype=torch.float32) for _ in "ab")
    dummy = _dummy(x.device)
    tiles = n * triton.cdiv(c, plan.block_c)
    args = [x, y if relu else dummy, dy, dx, dr if write_dr else dummy, weight if weight is not None else dummy,
            mean, rstd, inv_scale, sum_dy, sum_dy_xhat, c, s, sxn, sxc, sxs, sdn, sdc, sds, plan.chunk, plan.splits,
            tiles]
    flags = dict(USE_INPUT_STATS=use_input_stats, HAS_WEIGHT=weight is not None, RELU=relu, WRITE_DR=write_dr,
                 BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, BLOCK_SPLITS=triton.next_power_of_2(plan.splits),
                 SINGLE_TILE=plan.single_tile or plan.chunk <= plan.block_s)

    def run(launch: Launch) -> None:
        programs = _programs(x.device, tiles, launch)
        bwd = _instance_norm_bwd_kernel[(programs, plan.splits)]
        common = dict(flags, num_warps=launch.num_warps, enable_fp_fusion=False)
        if plan.splits == 1:
            bwd(*args, programs, MODE=FUSED.value, **common)
        else:
            bwd(*args, programs, MODE=PARTIAL.value, **common)
            bwd(*args, programs, MODE=APPLY.value, **common)

    run(_launch_for("bwd", x, plan, tiles, tuple(flags.values()), run))
    return dx, dr, sum_dy.sum(-1).view(n, c), sum_dy_xhat.sum(-1).view(n, c)


# ---------------------------------------------------------------------------------------------
# 3. Custom ops: fake implementations and autograd, so torch.compile traces one opaque op.
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("instyle::instance_norm_triton_fwd", mutates_args=())
def _fwd_op(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    residual: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    use_input_stats: bool,
    eps: float,
    relu: bool,
    max_tile: int,
    min_programs: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return instance_norm_fwd(
        x, weight, bias, residual, running_mean, running_var, use_input_stats, eps, relu, max_tile, min_programs
    )


@_fwd_op.register_fake
def _(x, weight, bias, residual, running_mean, running_var, use_input_stats, eps, relu, max_tile, min_programs):
    n, c = x.shape[:2]
    stats = [x.new_empty((n, c), dtype=torch.float32) for _ in range(4)]
    return (torch.empty_like(_prepare(x)), *stats)


@torch.library.custom_op("instyle::instance_norm_triton_bwd", mutates_args=())
def _bwd_op(
    dy: Tensor,
    x: Tensor,
    y: Tensor | None,
    weight: Tensor | None,
    mean: Tensor,
    rstd: Tensor,
    inv_scale: Tensor,
    use_input_stats: bool,
    relu: bool,
    write_dr: bool,
    max_tile: int,
    min_programs: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return instance_norm_bwd(
        dy, x, y, weight, mean, rstd, inv_scale, use_input_stats, relu, write_dr, max_tile, min_programs
    )


@_bwd_op.register_fake
def _(dy, x, y, weight, mean, rstd, inv_scale, use_input_stats, relu, write_dr, max_tile, min_programs):
    x = _prepare(x)
    n, c = x.shape[:2]
    dr = torch.empty_like(x) if write_dr else x.new_empty(0)
    sums = [x.new_empty((n, c), dtype=torch.float32) for _ in range(2)]
    return (torch.empty_like(x), dr, *sums)


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual, _, _, use_input_stats, _, relu, max_tile, min_programs = inputs
    y, mean, rstd, var, inv_scale = output
    ctx.mark_non_differentiable(mean, rstd, var, inv_scale)
    ctx.save_for_backward(x, y if relu else None, weight, mean, rstd, inv_scale)
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.residual_dtype = residual.dtype if residual is not None else None
    ctx.options = (use_input_stats, relu, max_tile, min_programs)


def _backward(ctx, dy, _dmean, _drstd, _dvar, _dinv_scale, bwd=None):
    x, y, weight, mean, rstd, inv_scale = ctx.saved_tensors
    use_input_stats, relu, max_tile, min_programs = ctx.options
    wants_dr = ctx.residual_dtype is not None and ctx.needs_input_grad[3]
    dx, dr, sum_dy, sum_dy_xhat = (bwd or torch.ops.instyle.instance_norm_triton_bwd)(
        dy, x, y, weight, mean, rstd, inv_scale, use_input_stats, relu, wants_dr and relu, max_tile, min_programs
    )
    dweight = sum_dy_xhat.sum(0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
    dbias = sum_dy.sum(0).to(ctx.bias_dtype) if ctx.bias_dtype is not None and ctx.needs_input_grad[2] else None
    dresidual = (dr if relu else dy).to(ctx.residual_dtype) if wants_dr else None
    return dx, dweight, dbias, dresidual, None, None, None, None, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# Eager calls skip the custom op's dispatch: on an H100 its Python machinery cost more CPU time per
# call than the kernels took on the GPU, which left training steps waiting on the CPU
# (docs/performance.md, "Triton eager dispatch").
_EagerFunction = eager_function(instance_norm_fwd, _setup_context, _backward, instance_norm_bwd, "_EagerFunction")


# ---------------------------------------------------------------------------------------------
# 4. The backend: the contract of instance_norm_reference, registered as backend="triton".
# ---------------------------------------------------------------------------------------------


def instance_norm_triton(
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
    *,
    max_tile: int = 0,
    min_programs: int = -1,
) -> Tensor:
    """Instance norm on Triton; ``max_tile`` (elements a program keeps in registers) and
    ``min_programs`` (split planes across programs below this many) default to heuristics."""
    # torch.compile traces the custom op (one opaque node); eager calls skip its dispatch.
    op = torch.ops.instyle.instance_norm_triton_fwd if torch.compiler.is_compiling() else _EagerFunction.apply
    y, mean, _, var, inv_scale = op(
        input, weight, bias, residual, running_mean, running_var, use_input_stats, eps,
        activation == "relu", max_tile, min_programs,
    )
    if use_input_stats and running_mean is not None and running_var is not None:
        mean = mean / inv_scale  # in x's units (exact: a power of two)
        update_running_stats(running_mean, running_var, mean, var, spatial_size(input), momentum)
    return y


_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def supports(input: Tensor, activation: str | None = None, residual: Tensor | None = None) -> bool:
    """CUDA tensors, or CPU tensors in Triton's interpreter (TRITON_INTERPRET=1 set before triton
    was imported); fp16/bf16/fp32; 3-D to 5-D."""
    if input.device.type == "cpu":
        on_device = os.environ.get("TRITON_INTERPRET", "0") == "1" and interpreter_ready()
    else:
        on_device = input.device.type == "cuda"
    return (
        on_device
        and input.dtype in _DTYPES
        and 3 <= input.dim() <= 5
        and (residual is None or residual.device == input.device)
    )


register_backend("triton", instance_norm_triton, supports)
