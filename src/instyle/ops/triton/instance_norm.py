"""Triton instance norm, forward and backward, with its fusions:
``y = act(weight * (x - mean) * rstd + bias + residual)``.

Four layers, each on its own screen:

1. kernels: ``_instance_norm_fwd_kernel``, ``_instance_norm_stats_combine_kernel``,
   ``_instance_norm_bwd_kernel``;
2. launchers ``instance_norm_fwd`` / ``instance_norm_bwd`` (layout, tile plan, grid);
3. the custom ops ``instyle::instance_norm_triton_fwd`` / ``instyle::instance_norm_triton_bwd``
   with fake implementations and autograd (``register_autograd``), so
   ``torch.compile(fullgraph=True)`` sees one opaque op;
4. the backend function ``instance_norm_triton`` registered as ``backend="triton"``.

Addressing. A tensor (N, C, *spatial) is read as (N, C, S) through three strides; the spatial
dims must collapse to one stride, which holds for NCHW and channels_last (NHWC) alike, so both
are read in place. A program owns a tile of BLOCK_C channels of one sample by BLOCK_S spatial
positions: BLOCK_C is 1 for large NCHW planes and several channels for small ones; for
channels_last, where the channels are the contiguous dim, at least one 32-byte sector of channels.
Planes up to MAX_SINGLE_TILE elements stay in registers (x read once, forward and backward);
larger ones are looped in LOOP_TILE tiles. All element offsets are int64.

Statistics are fp32. Each tile is divided by a power of two 2^e >= max|x| (exact) and its mean
and sum of squared deviations (M2) are computed in two passes over registers; tiles combine by
Chan's formula, rescaling the running sums when a later tile raises e. The per-plane mean and
rstd stay in those units, with 2^-e beside them (``InvScale``), and the output and backward
compute x * 2^-e - mean: so planes up to fp32's largest value give correct outputs and
gradients where x - mean would overflow (the variance itself is only reported as inf when it
overflows fp32, as the reference does), and with eps = 0 subnormal planes are normalized. When the (n, c) tiles are too few to fill the device, each plane is split into
chunks over grid axis 1; the chunks' partial (mean, M2, e) are combined by Chan's formula in a
second kernel, and a third pass normalizes. The backward kernel writes per-(plane, chunk) sums of
dy and dy * x_hat, from which the weight and bias gradients are summed in torch: deterministic,
no atomics.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from instyle.ops.reference import exponent_bounds, spatial_size, update_running_stats
from instyle.ops.registry import register_backend

__all__ = ["instance_norm_triton", "instance_norm_fwd", "instance_norm_bwd", "supports"]

# Modes of the forward and backward kernels (grid axis 1 runs over the chunks of a plane).
FUSED = tl.constexpr(0)  # one chunk per plane: reduce, then normalize (or compute dx) in one program
PARTIAL = tl.constexpr(1)  # reduce this chunk only and write its partial statistics / sums
APPLY = tl.constexpr(2)  # normalize (or compute dx) this chunk from statistics computed before

# Largest tile (elements) a program keeps in registers, and the tile of a plane that is looped.
MAX_SINGLE_TILE = 8192
LOOP_TILE = 2048


# ---------------------------------------------------------------------------------------------
# 1. Kernels.
# ---------------------------------------------------------------------------------------------


@triton.jit
def _pow2(k):
    """2^k as fp32 from its exponent bits, exact for integer k in [-126, 127]."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _exponent_above(bits):
    """The e with 2^(e-1) <= v < 2^e for a non-negative fp32 v given by its int32 bits."""
    return ((bits >> 23) & 0xFF) - 126


@triton.jit
def _finish_stats(e, mean_s, m2, count, shift, eps, e_min):
    """(mean, rstd, var, inv_scale) of planes from their statistics in units of 2^e, of the plane
    shifted by ``shift`` (its first value, in x's units): mean and rstd stay in units of 2^e, var
    is in x's units. A constant plane (M2 exactly 0: its shifted values are all 0) moves to the
    smallest e that keeps x / 2^e finite, as in instyle.ops.reference.scale_exponents: there
    2^e / sqrt(eps) is finite and eps / 2^2e does not underflow, so its gradient is right."""
    e = tl.where(m2 == 0.0, tl.maximum(e - 125, e_min), e)
    scale = _pow2(e)
    inv_scale = _pow2(-e)
    var_u = m2 / count
    rstd = tl.rsqrt(var_u + eps * inv_scale * inv_scale)
    # eps == 0 on a constant plane: define the output as 0 (+ bias), not NaN.
    rstd = tl.where(rstd < 1.0e38, rstd, 0.0)
    return shift * inv_scale + mean_s, rstd, var_u * scale * scale, inv_scale


@triton.jit
def _instance_norm_fwd_kernel(
    X,  # pointer to the input (N, C, S), strides stride_xn, stride_xc, stride_xs
    Y,  # pointer to the output, same strides as X
    R,  # pointer to the residual, strides stride_rn, stride_rc, stride_rs (if HAS_RESIDUAL)
    W,  # pointer to the weight (C,) (if HAS_WEIGHT)
    B,  # pointer to the bias (C,) (if HAS_BIAS)
    Mean,  # pointer to the per-plane mean of x * InvScale (N * C,) fp32: written in FUSED, read in APPLY
    Rstd,  # pointer to the per-plane 1 / sqrt(var + eps) in the units of Mean (N * C,) fp32: as Mean
    Var,  # pointer to the per-plane biased variance of x (N * C,) fp32: written in FUSED
    InvScale,  # pointer to the per-plane 2^-e (N * C,) fp32: as Mean
    PartMean,  # pointer to partial means in units of 2^PartExp (N * C, splits) fp32 (PARTIAL)
    PartM2,  # pointer to partial sums of squared deviations, same units squared (PARTIAL)
    PartExp,  # pointer to the partial exponents e, 2^e >= max|x| over the chunk, int32 (PARTIAL)
    C,  # number of channels
    S,  # number of spatial positions per plane
    stride_xn,  # stride of X (and Y) along N
    stride_xc,  # stride of X (and Y) along C
    stride_xs,  # stride of X (and Y) along the flattened spatial dims
    stride_rn,  # stride of R along N
    stride_rc,  # stride of R along C
    stride_rs,  # stride of R along the flattened spatial dims
    chunk,  # spatial positions per program along grid axis 1, a multiple of BLOCK_S
    splits,  # number of chunks per plane (grid axis 1)
    eps,  # added to the variance
    e_min,  # the smallest e (instyle.ops.reference.exponent_bounds): keeps eps / 2^2e finite
    MODE: tl.constexpr,  # FUSED, PARTIAL or APPLY
    HAS_WEIGHT: tl.constexpr,  # scale by W
    HAS_BIAS: tl.constexpr,  # add B
    HAS_RESIDUAL: tl.constexpr,  # add R
    RELU: tl.constexpr,  # apply max(0, .) last
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_S: tl.constexpr,  # spatial positions per tile
    SINGLE_TILE: tl.constexpr,  # the chunk fits in one tile: read x once
):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    c_tiles = tl.cdiv(C, BLOCK_C)
    n = pid // c_tiles
    cs = (pid % c_tiles) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,) channels
    c_mask = cs < C
    planes = n * C + cs  # (BLOCK_C,) index into Mean / Rstd / Var
    x_base = n.to(tl.int64) * stride_xn + cs.to(tl.int64) * stride_xc  # (BLOCK_C,)
    x_row = x_base[:, None]  # (BLOCK_C, 1)
    r_row = n.to(tl.int64) * stride_rn + cs.to(tl.int64)[:, None] * stride_rc
    s_start = split * chunk
    s_end = tl.minimum(s_start + chunk, S)
    offs = tl.arange(0, BLOCK_S)

    if MODE != APPLY:
        # (count, mean_u, m2_u, e): statistics of the chunk shifted by its plane's first value k,
        # in units of 2^e. x and k are scaled before the subtraction (x - k may overflow); the
        # shift makes a constant plane's values exactly 0 (its mean would round otherwise).
        k = tl.load(X + x_base, mask=c_mask, other=0.0).to(tl.float32)
        k_bits = tl.abs(k).to(tl.int32, bitcast=True)
        if SINGLE_TILE:
            s = s_start + offs
            mask = c_mask[:, None] & (s < s_end)[None, :]
            x = tl.load(X + x_row + s.to(tl.int64)[None, :] * stride_xs, mask=mask, other=0.0).to(tl.float32)
            count = (s_end - s_start).to(tl.float32)
            bits = tl.maximum(tl.max(tl.abs(x), axis=1).to(tl.int32, bitcast=True), k_bits)
            # 2^e > max|x|, |k| from the float's exponent bits; e <= 126 keeps 2^-e normal.
            e = tl.minimum(tl.maximum(_exponent_above(bits), e_min), 126)
            inv_scale = _pow2(-e)  # 2^-e, exact
            u = tl.where(mask, x * inv_scale[:, None] - (k * inv_scale)[:, None], 0.0)
            mean_u = tl.sum(u, axis=1) / count
            d = tl.where(mask, u - mean_u[:, None], 0.0)
            m2_u = tl.sum(d * d, axis=1)
        else:
            count = 0.0
            mean_u = tl.zeros([BLOCK_C], dtype=tl.float32)
            m2_u = tl.zeros([BLOCK_C], dtype=tl.float32)
            e = tl.full([BLOCK_C], e_min, tl.int32)
            for s0 in range(s_start, s_end, BLOCK_S):
                s = s0 + offs
                mask = c_mask[:, None] & (s < s_end)[None, :]
                x = tl.load(X + x_row + s.to(tl.int64)[None, :] * stride_xs, mask=mask, other=0.0).to(tl.float32)
                tile_count = tl.minimum(s_end - s0, BLOCK_S).to(tl.float32)
                bits = tl.maximum(tl.max(tl.abs(x), axis=1).to(tl.int32, bitcast=True), k_bits)
                e_new = tl.maximum(e, tl.minimum(_exponent_above(bits), 126))
                # Rescale the running sums to 2^e_new: exact, or negligible where it underflows.
                rescale = _pow2(tl.maximum(e - e_new, -126))
                mean_u = mean_u * rescale
                m2_u = m2_u * rescale * rescale
                e = e_new
                inv_scale = _pow2(-e)
                u = tl.where(mask, x * inv_scale[:, None] - (k * inv_scale)[:, None], 0.0)
                tile_mean = tl.sum(u, axis=1) / tile_count
                d = tl.where(mask, u - tile_mean[:, None], 0.0)
                tile_m2 = tl.sum(d * d, axis=1)
                # Chan et al.: merge (count, mean_u, m2_u) with (tile_count, tile_mean, tile_m2).
                new_count = count + tile_count
                delta = tile_mean - mean_u
                mean_u = mean_u + delta * (tile_count / new_count)
                m2_u = m2_u + tile_m2 + delta * delta * (count * tile_count / new_count)
                count = new_count

    if MODE == PARTIAL:
        part = planes.to(tl.int64) * splits + split
        tl.store(PartMean + part, mean_u, mask=c_mask)
        tl.store(PartM2 + part, m2_u, mask=c_mask)
        tl.store(PartExp + part, e, mask=c_mask)
    else:
        if MODE == FUSED:
            mean, rstd, var, inv_scale = _finish_stats(e, mean_u, m2_u, count, k, eps, e_min)
            tl.store(Mean + planes, mean, mask=c_mask)
            tl.store(Rstd + planes, rstd, mask=c_mask)
            tl.store(Var + planes, var, mask=c_mask)
            tl.store(InvScale + planes, inv_scale, mask=c_mask)
        else:
            mean = tl.load(Mean + planes, mask=c_mask, other=0.0)
            rstd = tl.load(Rstd + planes, mask=c_mask, other=0.0)
            inv_scale = tl.load(InvScale + planes, mask=c_mask, other=1.0)
        a = rstd
        if HAS_WEIGHT:
            a = a * tl.load(W + cs, mask=c_mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            b = tl.load(B + cs, mask=c_mask, other=0.0).to(tl.float32)
        else:
            b = tl.zeros([BLOCK_C], dtype=tl.float32)

        if SINGLE_TILE:
            s = s_start + offs
            mask = c_mask[:, None] & (s < s_end)[None, :]
            if MODE == APPLY:
                x = tl.load(X + x_row + s.to(tl.int64)[None, :] * stride_xs, mask=mask, other=0.0).to(tl.float32)
            y = (x * inv_scale[:, None] - mean[:, None]) * a[:, None] + b[:, None]
            if HAS_RESIDUAL:
                r = tl.load(R + r_row + s.to(tl.int64)[None, :] * stride_rs, mask=mask, other=0.0)
                y = y + r.to(tl.float32)
            if RELU:
                y = tl.maximum(y, 0.0)
            tl.store(Y + x_row + s.to(tl.int64)[None, :] * stride_xs, y.to(Y.dtype.element_ty), mask=mask)
        else:
            for s0 in range(s_start, s_end, BLOCK_S):
                s = s0 + offs
                mask = c_mask[:, None] & (s < s_end)[None, :]
                x = tl.load(X + x_row + s.to(tl.int64)[None, :] * stride_xs, mask=mask, other=0.0).to(tl.float32)
                y = (x * inv_scale[:, None] - mean[:, None]) * a[:, None] + b[:, None]
                if HAS_RESIDUAL:
                    r = tl.load(R + r_row + s.to(tl.int64)[None, :] * stride_rs, mask=mask, other=0.0)
                    y = y + r.to(tl.float32)
                if RELU:
                    y = tl.maximum(y, 0.0)
                tl.store(Y + x_row + s.to(tl.int64)[None, :] * stride_xs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _instance_norm_stats_combine_kernel(
    X,  # pointer to the input (N, C, S), strides stride_xn, stride_xc: the shift, each plane's first value
    PartMean,  # pointer to partial means of the shifted plane in units of 2^PartExp (P, splits) fp32
    PartM2,  # pointer to partial sums of squared deviations (P, splits) fp32
    PartExp,  # pointer to partial exponents (P, splits) int32
    Mean,  # pointer to the per-plane mean in units of 2^e (P,) fp32, e the largest of PartExp
    Rstd,  # pointer to the per-plane 1 / sqrt(var + eps) in those units (P,) fp32
    Var,  # pointer to the per-plane biased variance in x's units (P,) fp32
    InvScale,  # pointer to the per-plane 2^-e (P,) fp32
    P,  # number of planes, N * C
    C,  # number of channels
    S,  # spatial positions per plane
    stride_xn,  # stride of X along N
    stride_xc,  # stride of X along C
    chunk,  # spatial positions per chunk (the last chunk may be shorter)
    splits,  # chunks per plane
    eps,  # added to the variance
    e_min,  # the smallest e, as in the forward kernel
    BLOCK_P: tl.constexpr,  # planes per program
    BLOCK_SPLITS: tl.constexpr,  # next power of two >= splits
):
    planes = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    k = tl.arange(0, BLOCK_SPLITS)
    p_mask = planes < P
    mask = p_mask[:, None] & (k < splits)[None, :]
    part = planes.to(tl.int64)[:, None] * splits + k[None, :]
    mean_k = tl.load(PartMean + part, mask=mask, other=0.0)
    m2_k = tl.load(PartM2 + part, mask=mask, other=0.0)
    e_k = tl.load(PartExp + part, mask=mask, other=-126)  # below any chunk's: the max ignores it
    count_k = tl.where(mask, tl.minimum(chunk, S - k * chunk), 0).to(tl.float32)  # (BLOCK_P, BLOCK_SPLITS)
    # Bring every chunk to the plane's largest power of two, then Chan's formula for k chunks.
    e = tl.max(e_k, axis=1)
    rescale = _pow2(tl.maximum(e_k - e[:, None], -126))
    mean_k = mean_k * rescale
    m2_k = m2_k * rescale * rescale
    mean_u = tl.sum(count_k * mean_k, axis=1) / S
    d = tl.where(mask, mean_k - mean_u[:, None], 0.0)
    m2_u = tl.sum(m2_k, axis=1) + tl.sum(count_k * d * d, axis=1)

    x_first = (planes // C).to(tl.int64) * stride_xn + (planes % C).to(tl.int64) * stride_xc
    k = tl.load(X + x_first, mask=p_mask, other=0.0).to(tl.float32)
    mean, rstd, var, inv_scale = _finish_stats(e, mean_u, m2_u, S, k, eps, e_min)
    tl.store(Mean + planes, mean, mask=p_mask)
    tl.store(Rstd + planes, rstd, mask=p_mask)
    tl.store(Var + planes, var, mask=p_mask)
    tl.store(InvScale + planes, inv_scale, mask=p_mask)


@triton.jit
def _instance_norm_bwd_kernel(
    X,  # pointer to the input (N, C, S), strides stride_xn, stride_xc, stride_xs
    Y,  # pointer to the forward output, same strides as X (read if RELU)
    DY,  # pointer to the output gradient, strides stride_dn, stride_dc, stride_ds
    DX,  # pointer to the input gradient, same strides as X (written unless PARTIAL)
    DR,  # pointer to the residual gradient, same strides as X (written if WRITE_DR)
    W,  # pointer to the weight (C,) (if HAS_WEIGHT)
    Mean,  # pointer to the per-plane mean of x * InvScale (N * C,) fp32
    Rstd,  # pointer to the per-plane 1 / sqrt(var + eps) in the units of Mean (N * C,) fp32
    InvScale,  # pointer to the per-plane 2^-e (N * C,) fp32, as the forward wrote it
    SumDy,  # pointer to per-(plane, chunk) sums of dy' (N * C, splits) fp32, dy' = dy * relu'
    SumDyXhat,  # pointer to per-(plane, chunk) sums of dy' * x_hat (N * C, splits) fp32
    C,  # number of channels
    S,  # number of spatial positions per plane
    stride_xn,  # stride of X, Y, DX, DR along N
    stride_xc,  # stride of X, Y, DX, DR along C
    stride_xs,  # stride of X, Y, DX, DR along the flattened spatial dims
    stride_dn,  # stride of DY along N
    stride_dc,  # stride of DY along C
    stride_ds,  # stride of DY along the flattened spatial dims
    chunk,  # spatial positions per program along grid axis 1, a multiple of BLOCK_S
    splits,  # number of chunks per plane (grid axis 1)
    MODE: tl.constexpr,  # FUSED, PARTIAL (sums only) or APPLY (dx from the sums)
    USE_INPUT_STATS: tl.constexpr,  # mean and rstd depend on x (training), else they are constants
    HAS_WEIGHT: tl.constexpr,  # the forward scaled by W
    RELU: tl.constexpr,  # the forward applied max(0, .): dy' = dy where y > 0
    WRITE_DR: tl.constexpr,  # write dy' as the residual gradient
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_S: tl.constexpr,  # spatial positions per tile
    BLOCK_SPLITS: tl.constexpr,  # next power of two >= splits
    SINGLE_TILE: tl.constexpr,  # the chunk fits in one tile: read x, y, dy once
):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    c_tiles = tl.cdiv(C, BLOCK_C)
    n = pid // c_tiles
    cs = (pid % c_tiles) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,) channels
    c_mask = cs < C
    planes = n * C + cs
    x_row = n.to(tl.int64) * stride_xn + cs.to(tl.int64)[:, None] * stride_xc  # (BLOCK_C, 1)
    dy_row = n.to(tl.int64) * stride_dn + cs.to(tl.int64)[:, None] * stride_dc
    s_start = split * chunk
    s_end = tl.minimum(s_start + chunk, S)
    offs = tl.arange(0, BLOCK_S)
    mean = tl.load(Mean + planes, mask=c_mask, other=0.0)
    rstd = tl.load(Rstd + planes, mask=c_mask, other=0.0)
    inv_scale = tl.load(InvScale + planes, mask=c_mask, other=1.0)
    if HAS_WEIGHT:
        w = tl.load(W + cs, mask=c_mask, other=0.0).to(tl.float32)
    else:
        w = tl.full([BLOCK_C], 1.0, tl.float32)
    if MODE == APPLY:
        k = tl.arange(0, BLOCK_SPLITS)
        sums_mask = c_mask[:, None] & (k < splits)[None, :]
        part = planes.to(tl.int64)[:, None] * splits + k[None, :]
        sum_dy = tl.sum(tl.load(SumDy + part, mask=sums_mask, other=0.0), axis=1)
        sum_dy_xhat = tl.sum(tl.load(SumDyXhat + part, mask=sums_mask, other=0.0), axis=1)

    if SINGLE_TILE:
        s = s_start + offs
        mask = c_mask[:, None] & (s < s_end)[None, :]
        x_offs = x_row + s.to(tl.int64)[None, :] * stride_xs
        x = tl.load(X + x_offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + dy_row + s.to(tl.int64)[None, :] * stride_ds, mask=mask, other=0.0).to(tl.float32)
        if RELU:
            y = tl.load(Y + x_offs, mask=mask, other=0.0)
            dy = tl.where(y > 0, dy, 0.0)
        x_hat = tl.where(mask, (x * inv_scale[:, None] - mean[:, None]) * rstd[:, None], 0.0)
        if MODE != APPLY:
            sum_dy = tl.sum(dy, axis=1)
            sum_dy_xhat = tl.sum(dy * x_hat, axis=1)
    else:
        if MODE != APPLY:
            # Sums kept per lane and reduced once after the loop: no reduction inside the loop
            # (triton 3.6's thread-locality rewrite of such loops failed to compile this kernel
            # without the ReLU, on sm_90), and fewer cross-thread reductions.
            acc_dy = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
            acc_dy_xhat = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
            for s0 in range(s_start, s_end, BLOCK_S):
                s = s0 + offs
                mask = c_mask[:, None] & (s < s_end)[None, :]
                x_offs = x_row + s.to(tl.int64)[None, :] * stride_xs
                x = tl.load(X + x_offs, mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(DY + dy_row + s.to(tl.int64)[None, :] * stride_ds, mask=mask, other=0.0).to(tl.float32)
                if RELU:
                    y = tl.load(Y + x_offs, mask=mask, other=0.0)
                    dy = tl.where(y > 0, dy, 0.0)
                x_hat = tl.where(mask, (x * inv_scale[:, None] - mean[:, None]) * rstd[:, None], 0.0)
                acc_dy += dy
                acc_dy_xhat += dy * x_hat
            sum_dy = tl.sum(acc_dy, axis=1)
            sum_dy_xhat = tl.sum(acc_dy_xhat, axis=1)

    if MODE != APPLY:
        part = planes.to(tl.int64) * splits + split
        tl.store(SumDy + part, sum_dy, mask=c_mask)
        tl.store(SumDyXhat + part, sum_dy_xhat, mask=c_mask)

    if MODE != PARTIAL:
        # dx = rstd * w * (dy' - mean(dy') - x_hat * mean(dy' * x_hat)) in training;
        # with running statistics mean and rstd are constants: dx = rstd * w * dy'.
        # rstd is in units of 2^e (x_hat = (x * 2^-e - mean) * rstd): dx gets the 2^-e last, one
        # rounding where it is subnormal.
        a = rstd * w
        c1 = sum_dy / S
        c2 = sum_dy_xhat / S
        if SINGLE_TILE:
            if USE_INPUT_STATS:
                dx = a[:, None] * (dy - c1[:, None] - x_hat * c2[:, None])
            else:
                dx = a[:, None] * dy
            dx = dx * inv_scale[:, None]
            tl.store(DX + x_offs, dx.to(DX.dtype.element_ty), mask=mask)
            if WRITE_DR:
                tl.store(DR + x_offs, dy.to(DR.dtype.element_ty), mask=mask)
        else:
            for s0 in range(s_start, s_end, BLOCK_S):
                s = s0 + offs
                mask = c_mask[:, None] & (s < s_end)[None, :]
                x_offs = x_row + s.to(tl.int64)[None, :] * stride_xs
                x = tl.load(X + x_offs, mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(DY + dy_row + s.to(tl.int64)[None, :] * stride_ds, mask=mask, other=0.0).to(tl.float32)
                if RELU:
                    y = tl.load(Y + x_offs, mask=mask, other=0.0)
                    dy = tl.where(y > 0, dy, 0.0)
                if USE_INPUT_STATS:
                    x_hat = (x * inv_scale[:, None] - mean[:, None]) * rstd[:, None]
                    dx = a[:, None] * (dy - c1[:, None] - x_hat * c2[:, None])
                else:
                    dx = a[:, None] * dy
                dx = dx * inv_scale[:, None]
                tl.store(DX + x_offs, dx.to(DX.dtype.element_ty), mask=mask)
                if WRITE_DR:
                    tl.store(DR + x_offs, dy.to(DR.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# 2. Launchers: layout, tile plan, grid. Plain functions of tensors; no autograd here.
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
    grid = (n * triton.cdiv(c, plan.block_c), plan.splits)
    common = dict(
        HAS_WEIGHT=weight is not None,
        HAS_BIAS=bias is not None,
        HAS_RESIDUAL=r is not None,
        RELU=relu,
        BLOCK_C=plan.block_c,
        BLOCK_S=plan.block_s,
        SINGLE_TILE=plan.single_tile or plan.chunk <= plan.block_s,
        num_warps=plan.num_warps,
    )
    args = [x, y, r if r is not None else dummy, weight if weight is not None else dummy,
            bias if bias is not None else dummy, mean, rstd, var, inv_scale]
    e_min = exponent_bounds(torch.float32, eps)[0]
    shape_args = [c, s, sxn, sxc, sxs, srn, src, srs, plan.chunk, plan.splits, eps, e_min]
    fwd = _instance_norm_fwd_kernel
    if not use_input_stats:
        fwd[grid](*args, dummy, dummy, dummy, *shape_args, MODE=APPLY.value, **common)
    elif plan.splits == 1:
        fwd[grid](*args, dummy, dummy, dummy, *shape_args, MODE=FUSED.value, **common)
    else:
        part_mean, part_m2 = (torch.empty((n * c, plan.splits), device=x.device, dtype=torch.float32) for _ in "ab")
        part_exp = torch.empty((n * c, plan.splits), device=x.device, dtype=torch.int32)
        fwd[grid](*args, part_mean, part_m2, part_exp, *shape_args, MODE=PARTIAL.value, **common)
        block_splits = triton.next_power_of_2(plan.splits)
        block_p = max(1, min(64, 2048 // block_splits))
        combine = _instance_norm_stats_combine_kernel
        combine[(triton.cdiv(n * c, block_p),)](
            x, part_mean, part_m2, part_exp, mean, rstd, var, inv_scale, n * c, c, s, sxn, sxc, plan.chunk,
            plan.splits, eps, e_min,
            BLOCK_P=block_p, BLOCK_SPLITS=block_splits, num_warps=4,
        )
        fwd[grid](*args, dummy, dummy, dummy, *shape_args, MODE=APPLY.value, **common)
    return y, mean, rstd, var, inv_scale


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
    grid = (n * triton.cdiv(c, plan.block_c), plan.splits)
    args = [x, y if relu else dummy, dy, dx, dr if write_dr else dummy, weight if weight is not None else dummy,
            mean, rstd, inv_scale, sum_dy, sum_dy_xhat, c, s, sxn, sxc, sxs, sdn, sdc, sds, plan.chunk, plan.splits]
    common = dict(
        USE_INPUT_STATS=use_input_stats,
        HAS_WEIGHT=weight is not None,
        RELU=relu,
        WRITE_DR=write_dr,
        BLOCK_C=plan.block_c,
        BLOCK_S=plan.block_s,
        BLOCK_SPLITS=triton.next_power_of_2(plan.splits),
        SINGLE_TILE=plan.single_tile or plan.chunk <= plan.block_s,
        num_warps=plan.num_warps,
    )
    bwd = _instance_norm_bwd_kernel
    if plan.splits == 1:
        bwd[grid](*args, MODE=FUSED.value, **common)
    else:
        bwd[grid](*args, MODE=PARTIAL.value, **common)
        bwd[grid](*args, MODE=APPLY.value, **common)
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


class _EagerFunction(torch.autograd.Function):
    """The custom op's forward and backward (the same ``_setup_context`` and ``_backward``) without
    its dispatch, for eager calls: outside torch.compile the custom op's Python machinery cost more
    CPU time per call than the kernels took on the GPU, which left training steps waiting on the
    CPU (docs/performance.md, "Triton eager dispatch")."""

    @staticmethod
    def forward(ctx, *inputs):
        output = instance_norm_fwd(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, dy, dmean, drstd, dvar, dinv_scale):
        return _backward(ctx, dy, dmean, drstd, dvar, dinv_scale, bwd=instance_norm_bwd)


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
