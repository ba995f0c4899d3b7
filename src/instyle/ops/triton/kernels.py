"""The Triton instance-norm kernels: ``y = act(weight * (x - mean) * rstd + bias + residual)``, its
backward, and the combination of split statistics. Launchers, plans and tuning are in
instance_norm.py; the design is described there.

Every reduction across a tile's lanes is a fixed tree of halves over logical indices (``_tree_sum``)
or an exact max: the bits do not depend on num_warps or the grid's program count, which
instance_norm.py tunes per size class. Divisions and the square root are IEEE round-to-nearest
(``tl.div_rn``, ``tl.sqrt_rn``): Triton's ``/`` is div.full.f32 and ``tl.rsqrt`` rsqrt.approx on
NVIDIA GPUs (about 2 ulp each), errors the interpreter does not have and that reach every output
of a plane coherently.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Modes of the forward and backward kernels (grid axis 1 runs over the chunks of a plane).
FUSED = tl.constexpr(0)  # one chunk per plane: reduce, then normalize (or compute dx) in one program
PARTIAL = tl.constexpr(1)  # reduce this chunk only and write its partial statistics / sums
APPLY = tl.constexpr(2)  # normalize (or compute dx) this chunk from statistics computed before


@triton.jit
def _pow2(k):
    """2^k as fp32 from its exponent bits, exact for integer k in [-126, 127]."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _exponent_above(bits):
    """The e with 2^(e-1) <= v < 2^e for a non-negative fp32 v given by its int32 bits."""
    return ((bits >> 23) & 0xFF) - 126


@triton.jit
def _halve(v, BLOCK_C: tl.constexpr, HALF: tl.constexpr):
    """(BLOCK_C, 2 * HALF) -> (BLOCK_C, HALF): the first half of each row plus the second. A sum of
    two is one IEEE addition in either order, so the layout cannot change it."""
    return tl.sum(tl.reshape(v, (BLOCK_C, 2, HALF)), axis=1)


@triton.jit
def _tree_sum(v, BLOCK_C: tl.constexpr, N: tl.constexpr):
    """The rows of ``v`` (BLOCK_C, N), N a power of two, summed by a fixed tree of halves over the
    columns' logical indices: the same bits whatever num_warps lays the tile out on (tl.sum's order
    over more than two follows the layout), so the launches tuned per size class cannot change a
    result. (Pairs of neighbours via tl.split took Triton 3.6 50 s to compile at N = 4096.)"""
    for i in tl.static_range(1, 31):
        if (N >> i) > 0:
            v = _halve(v, BLOCK_C, N >> i)
    return tl.reshape(v, (BLOCK_C,))


@triton.jit
def _finish_stats(e, mean_s, m2, count, shift, eps, e_min):
    """(mean, rstd, var, inv_scale) of planes from their statistics in units of 2^e, of the plane
    shifted by ``shift`` (its first value, in x's units): mean and rstd stay in units of 2^e, var
    is in x's units. A constant plane (M2 exactly 0: its shifted values are all 0) moves to the
    smallest e that keeps x / 2^e finite, as in instyle.ops.reference.scale_exponents: there
    2^e / sqrt(eps) is finite and eps / 2^2e does not underflow, so its gradient is right.
    rstd is a correctly rounded square root and division, not tl.rsqrt (rsqrt.approx on NVIDIA
    GPUs, 2 ulp): its error would reach every output and, coherently, the weight gradient."""
    e = tl.where(m2 == 0.0, tl.maximum(e - 125, e_min), e)
    scale = _pow2(e)
    inv_scale = _pow2(-e)
    var_u = tl.div_rn(m2, count)
    rstd = tl.div_rn(1.0, tl.sqrt_rn(var_u + eps * inv_scale * inv_scale))
    # eps == 0 on a constant plane: define the output as 0 (+ bias), not NaN.
    rstd = tl.where(rstd < 1.0e38, rstd, 0.0)
    return shift * inv_scale + mean_s, rstd, var_u * scale * scale, inv_scale


@triton.jit
def _tile_stats(x, k, k_bits, mask, count, e_min, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """(mean_u, m2_u, e) of one tile held in registers, shifted by k: two passes over registers."""
    bits = tl.maximum(tl.max(tl.abs(x), axis=1).to(tl.int32, bitcast=True), k_bits)
    # 2^e > max|x|, |k| from the float's exponent bits; e <= 126 keeps 2^-e normal.
    e = tl.minimum(tl.maximum(_exponent_above(bits), e_min), 126)
    inv_scale = _pow2(-e)  # 2^-e, exact
    u = tl.where(mask, x * inv_scale[:, None] - (k * inv_scale)[:, None], 0.0)
    mean_u = tl.div_rn(_tree_sum(u, BLOCK_C, BLOCK_S), count)
    d = tl.where(mask, u - mean_u[:, None], 0.0)
    return mean_u, _tree_sum(d * d, BLOCK_C, BLOCK_S), e


@triton.jit
def _looped_stats(X, x_row, stride_xs, k, k_bits, c_mask, s_start, s_end, e_min,
                  BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """(mean_u, m2_u, e) of the positions [s_start, s_end) of BLOCK_C planes, read tile by tile.

    Each lane (column of the tile) keeps its own Welford mean and M2 in units of its own power of
    two, so the loop has no reduction across threads and its loads can be issued back to back;
    the lanes are combined once after it (Chan's formula, tree sums). The first read asks L2 to
    keep the lines: the normalize pass reads them again."""
    offs = tl.arange(0, BLOCK_S)
    lane_mean = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    lane_m2 = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    lane_e = tl.full([BLOCK_C, BLOCK_S], e_min, tl.int32)
    seen = 0.0
    for s0 in range(s_start, s_end, BLOCK_S):
        s = s0 + offs
        mask = c_mask[:, None] & (s < s_end)[None, :]
        x = tl.load(X + x_row + s.to(tl.int64)[None, :] * stride_xs, mask=mask, other=0.0,
                    eviction_policy="evict_last").to(tl.float32)
        bits = tl.maximum(tl.abs(x).to(tl.int32, bitcast=True), k_bits[:, None])
        e_new = tl.where(mask, tl.maximum(lane_e, tl.minimum(_exponent_above(bits), 126)), lane_e)
        # Rescale the lane's sums to 2^e_new: exact, or negligible where it underflows.
        rescale = _pow2(tl.maximum(lane_e - e_new, -126))
        lane_e = e_new
        inv_scale = _pow2(-lane_e)
        u = x * inv_scale - k[:, None] * inv_scale
        seen += 1.0  # a lane valid now was valid in every earlier tile: its count
        delta = u - lane_mean * rescale
        new_mean = lane_mean * rescale + delta * tl.div_rn(1.0, seen)
        lane_m2 = tl.where(mask, lane_m2 * rescale * rescale + delta * (u - new_mean), lane_m2)
        lane_mean = tl.where(mask, new_mean, lane_mean)
    e = tl.max(lane_e, axis=1)  # exact in any order
    r = _pow2(tl.maximum(lane_e - e[:, None], -126))
    lane_count = tl.maximum((s_end - s_start - offs + BLOCK_S - 1) // BLOCK_S, 0).to(tl.float32)[None, :]
    lane_mean = lane_mean * r
    mean_u = tl.div_rn(_tree_sum(lane_count * lane_mean, BLOCK_C, BLOCK_S), (s_end - s_start).to(tl.float32))
    d = tl.where(lane_count > 0, lane_mean - mean_u[:, None], 0.0)
    m2_u = _tree_sum(lane_m2 * r * r + lane_count * d * d, BLOCK_C, BLOCK_S)
    return mean_u, m2_u, e


@triton.jit
def _fwd_tile(
    pid, split, X, Y, R, W, B, Mean, Rstd, Var, InvScale, PartMean, PartM2, PartExp, C, S,
    stride_xn, stride_xc, stride_xs, stride_rn, stride_rc, stride_rs, chunk, splits, eps, e_min,
    MODE: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    RELU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, SINGLE_TILE: tl.constexpr,
):  # fmt: skip
    """One program's work on tile ``pid`` (BLOCK_C channels of one sample) and chunk ``split``."""
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
        # Statistics of the chunk shifted by its plane's first value k, in units of 2^e. x and k
        # are scaled before the subtraction (x - k may overflow); the shift makes a constant
        # plane's values exactly 0 (its mean would round otherwise).
        k = tl.load(X + x_base, mask=c_mask, other=0.0).to(tl.float32)
        k_bits = tl.abs(k).to(tl.int32, bitcast=True)
        count = (s_end - s_start).to(tl.float32)
        if SINGLE_TILE:
            s = s_start + offs
            mask = c_mask[:, None] & (s < s_end)[None, :]
            x = tl.load(X + x_row + s.to(tl.int64)[None, :] * stride_xs, mask=mask, other=0.0).to(tl.float32)
            mean_u, m2_u, e = _tile_stats(x, k, k_bits, mask, count, e_min, BLOCK_C, BLOCK_S)
        else:
            mean_u, m2_u, e = _looped_stats(X, x_row, stride_xs, k, k_bits, c_mask, s_start, s_end, e_min,
                                            BLOCK_C, BLOCK_S)

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
            _normalize_store(x, Y, R, x_row, r_row, s, mask, stride_xs, stride_rs, inv_scale, mean, a, b,
                             HAS_RESIDUAL, RELU)
        else:
            for s0 in range(s_start, s_end, BLOCK_S):
                s = s0 + offs
                mask = c_mask[:, None] & (s < s_end)[None, :]
                # The last read of these lines: let L2 drop them first.
                x = tl.load(X + x_row + s.to(tl.int64)[None, :] * stride_xs, mask=mask, other=0.0,
                            eviction_policy="evict_first").to(tl.float32)
                _normalize_store(x, Y, R, x_row, r_row, s, mask, stride_xs, stride_rs, inv_scale, mean, a, b,
                                 HAS_RESIDUAL, RELU)


@triton.jit
def _normalize_store(x, Y, R, x_row, r_row, s, mask, stride_xs, stride_rs, inv_scale, mean, a, b,
                     HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr):
    """y = act((x * 2^-e - mean) * a + b + r) for one tile, stored in Y's dtype."""
    y = (x * inv_scale[:, None] - mean[:, None]) * a[:, None] + b[:, None]
    if HAS_RESIDUAL:
        r = tl.load(R + r_row + s.to(tl.int64)[None, :] * stride_rs, mask=mask, other=0.0)
        y = y + r.to(tl.float32)
    if RELU:
        y = tl.maximum(y, 0.0)
    tl.store(Y + x_row + s.to(tl.int64)[None, :] * stride_xs, y.to(Y.dtype.element_ty), mask=mask)


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
    tiles,  # tiles of BLOCK_C channels of one sample: N * cdiv(C, BLOCK_C)
    programs,  # programs along grid axis 0; each takes tiles pid, pid + programs, ...
    MODE: tl.constexpr,  # FUSED, PARTIAL or APPLY
    HAS_WEIGHT: tl.constexpr,  # scale by W
    HAS_BIAS: tl.constexpr,  # add B
    HAS_RESIDUAL: tl.constexpr,  # add R
    RELU: tl.constexpr,  # apply max(0, .) last
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_S: tl.constexpr,  # spatial positions per tile
    SINGLE_TILE: tl.constexpr,  # the chunk fits in one tile: read x once
):
    # Fewer programs than tiles bound the planes in flight, so that a plane's second read (looped
    # planes) still finds it in L2.
    for pid in range(tl.program_id(0), tiles, programs):
        _fwd_tile(pid, tl.program_id(1), X, Y, R, W, B, Mean, Rstd, Var, InvScale, PartMean, PartM2, PartExp, C, S,
                  stride_xn, stride_xc, stride_xs, stride_rn, stride_rc, stride_rs, chunk, splits, eps, e_min,
                  MODE, HAS_WEIGHT, HAS_BIAS, HAS_RESIDUAL, RELU, BLOCK_C, BLOCK_S, SINGLE_TILE)




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
    mean_u = tl.div_rn(_tree_sum(count_k * mean_k, BLOCK_P, BLOCK_SPLITS), S.to(tl.float32))
    d = tl.where(mask, mean_k - mean_u[:, None], 0.0)
    m2_u = _tree_sum(m2_k + count_k * d * d, BLOCK_P, BLOCK_SPLITS)

    x_first = (planes // C).to(tl.int64) * stride_xn + (planes % C).to(tl.int64) * stride_xc
    k = tl.load(X + x_first, mask=p_mask, other=0.0).to(tl.float32)
    mean, rstd, var, inv_scale = _finish_stats(e, mean_u, m2_u, S.to(tl.float32), k, eps, e_min)
    tl.store(Mean + planes, mean, mask=p_mask)
    tl.store(Rstd + planes, rstd, mask=p_mask)
    tl.store(Var + planes, var, mask=p_mask)
    tl.store(InvScale + planes, inv_scale, mask=p_mask)




@triton.jit
def _grad_tile(X, Y, DY, x_offs, dy_offs, mask, inv_scale, mean, rstd, RELU: tl.constexpr,
               EVICTION: tl.constexpr):
    """(x, dy', x_hat) of one tile: dy' = dy where the forward's ReLU passed it."""
    x = tl.load(X + x_offs, mask=mask, other=0.0, eviction_policy=EVICTION).to(tl.float32)
    dy = tl.load(DY + dy_offs, mask=mask, other=0.0, eviction_policy=EVICTION).to(tl.float32)
    if RELU:
        y = tl.load(Y + x_offs, mask=mask, other=0.0, eviction_policy=EVICTION)
        dy = tl.where(y > 0, dy, 0.0)
    x_hat = tl.where(mask, (x * inv_scale[:, None] - mean[:, None]) * rstd[:, None], 0.0)
    return x, dy, x_hat


@triton.jit
def _store_dx(DX, DR, x_offs, mask, dy, x_hat, a, c1, c2, inv_scale, USE_INPUT_STATS: tl.constexpr,
              WRITE_DR: tl.constexpr):
    """dx = rstd * w * (dy' - mean(dy') - x_hat * mean(dy' * x_hat)) in training; with running
    statistics mean and rstd are constants: dx = rstd * w * dy'. rstd is in units of 2^e, so dx
    gets the 2^-e last, one rounding where it is subnormal."""
    if USE_INPUT_STATS:
        dx = a[:, None] * (dy - c1[:, None] - x_hat * c2[:, None])
    else:
        dx = a[:, None] * dy
    dx = dx * inv_scale[:, None]
    tl.store(DX + x_offs, dx.to(DX.dtype.element_ty), mask=mask)
    if WRITE_DR:
        tl.store(DR + x_offs, dy.to(DR.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_tile(
    pid, split, X, Y, DY, DX, DR, W, Mean, Rstd, InvScale, SumDy, SumDyXhat, C, S,
    stride_xn, stride_xc, stride_xs, stride_dn, stride_dc, stride_ds, chunk, splits,
    MODE: tl.constexpr, USE_INPUT_STATS: tl.constexpr, HAS_WEIGHT: tl.constexpr, RELU: tl.constexpr,
    WRITE_DR: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_SPLITS: tl.constexpr,
    SINGLE_TILE: tl.constexpr,
):  # fmt: skip
    """One program's backward on tile ``pid`` and chunk ``split``."""
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
        sum_dy = _tree_sum(tl.load(SumDy + part, mask=sums_mask, other=0.0), BLOCK_C, BLOCK_SPLITS)
        sum_dy_xhat = _tree_sum(tl.load(SumDyXhat + part, mask=sums_mask, other=0.0), BLOCK_C, BLOCK_SPLITS)

    if SINGLE_TILE:
        s = s_start + offs
        mask = c_mask[:, None] & (s < s_end)[None, :]
        x_offs = x_row + s.to(tl.int64)[None, :] * stride_xs
        dy_offs = dy_row + s.to(tl.int64)[None, :] * stride_ds
        x, dy, x_hat = _grad_tile(X, Y, DY, x_offs, dy_offs, mask, inv_scale, mean, rstd, RELU, "")
        if MODE != APPLY:
            sum_dy = _tree_sum(dy, BLOCK_C, BLOCK_S)
            sum_dy_xhat = _tree_sum(dy * x_hat, BLOCK_C, BLOCK_S)
    elif MODE != APPLY:
        # Sums kept per lane and reduced once after the loop: no reduction inside the loop
        # (triton 3.6's thread-locality rewrite of such loops failed to compile this kernel
        # without the ReLU, on sm_90), and the loads issued back to back.
        acc_dy = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
        acc_dy_xhat = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
        for s0 in range(s_start, s_end, BLOCK_S):
            s = s0 + offs
            mask = c_mask[:, None] & (s < s_end)[None, :]
            x_offs = x_row + s.to(tl.int64)[None, :] * stride_xs
            dy_offs = dy_row + s.to(tl.int64)[None, :] * stride_ds
            x, dy, x_hat = _grad_tile(X, Y, DY, x_offs, dy_offs, mask, inv_scale, mean, rstd, RELU, "evict_last")
            acc_dy += dy
            acc_dy_xhat += dy * x_hat
        sum_dy = _tree_sum(acc_dy, BLOCK_C, BLOCK_S)
        sum_dy_xhat = _tree_sum(acc_dy_xhat, BLOCK_C, BLOCK_S)

    if MODE != APPLY:
        part = planes.to(tl.int64) * splits + split
        tl.store(SumDy + part, sum_dy, mask=c_mask)
        tl.store(SumDyXhat + part, sum_dy_xhat, mask=c_mask)

    if MODE != PARTIAL:
        a = rstd * w
        c1 = tl.div_rn(sum_dy, S.to(tl.float32))
        c2 = tl.div_rn(sum_dy_xhat, S.to(tl.float32))
        if SINGLE_TILE:
            _store_dx(DX, DR, x_offs, mask, dy, x_hat, a, c1, c2, inv_scale, USE_INPUT_STATS, WRITE_DR)
        else:
            for s0 in range(s_start, s_end, BLOCK_S):
                s = s0 + offs
                mask = c_mask[:, None] & (s < s_end)[None, :]
                x_offs = x_row + s.to(tl.int64)[None, :] * stride_xs
                dy_offs = dy_row + s.to(tl.int64)[None, :] * stride_ds
                x, dy, x_hat = _grad_tile(X, Y, DY, x_offs, dy_offs, mask, inv_scale, mean, rstd, RELU,
                                          "evict_first")
                _store_dx(DX, DR, x_offs, mask, dy, x_hat, a, c1, c2, inv_scale, USE_INPUT_STATS, WRITE_DR)


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
    tiles,  # tiles of BLOCK_C channels of one sample: N * cdiv(C, BLOCK_C)
    programs,  # programs along grid axis 0; each takes tiles pid, pid + programs, ...
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
    for pid in range(tl.program_id(0), tiles, programs):
        _bwd_tile(pid, tl.program_id(1), X, Y, DY, DX, DR, W, Mean, Rstd, InvScale, SumDy, SumDyXhat, C, S,
                  stride_xn, stride_xc, stride_xs, stride_dn, stride_dc, stride_ds, chunk, splits,
                  MODE, USE_INPUT_STATS, HAS_WEIGHT, RELU, WRITE_DR, BLOCK_C, BLOCK_S, BLOCK_SPLITS, SINGLE_TILE)
