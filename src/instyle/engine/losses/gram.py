"""The Gram matrix's GEMMs, tuned: fp32 results from 16-bit features without fp32 copies of them, the
reduction over positions split on CUDA, and a one-GEMM backward.

:func:`instyle.engine.losses.gram_matrix` is the public entry; this module holds the machinery it
dispatches to. The measurements behind each choice are in docs/performance.md (losses.gram).
"""

from __future__ import annotations

import contextlib

import torch

from instyle.engine.losses._precision import HALF_DTYPES, upcast

# The Gram matrix's reduction runs over every position (65,536 at relu1_1 of a 256 px crop) for a C x C
# result, so one GEMM per image keeps only a few of a GPU's SMs busy. On CUDA the reduction is cut into
# chunks of about this many positions, summed after, where the layout allows it without a copy
# (channels_last features). Measured in docs/performance.md (losses.gram).
GRAM_SPLIT_POSITIONS = 4096

# Whether this torch has ``torch.bmm(..., out_dtype=)`` (torch >= 2.9): a fact of the installed torch,
# decided once. Whether a device's kernel exists is asked per call (:func:`_bmm_fp32`).
_BMM_HAS_OUT_DTYPE = hasattr(torch.ops.aten.bmm, "dtype")


@contextlib.contextmanager
def _tf32_matmul(enabled: bool):
    """TF32 tensor-core matmuls for fp32 inputs on CUDA inside the block (restored on exit)."""
    matmul = torch.backends.cuda.matmul
    if not enabled:
        yield
        return
    name, value = ("fp32_precision", "tf32") if hasattr(matmul, "fp32_precision") else ("allow_tf32", True)  # torch >= 2.9
    saved = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, saved)


def _positions_by_channels(features: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(N, C, H, W) as a matrix without a copy: (N, H*W, C) for channels_last features (True), else (N, C, H*W)."""
    n, c, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        return features.permute(0, 2, 3, 1).reshape(n, h * w, c), True
    return features.reshape(n, c, h * w), False


def _split_chunks(positions: int) -> int:
    """How many chunks the reduction over ``positions`` is cut into: a power of two dividing it."""
    chunks = 1
    while positions % (chunks * 2) == 0 and positions // (chunks * 2) >= GRAM_SPLIT_POSITIONS:
        chunks *= 2
    return chunks


def _bmm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in fp32 from 16-bit a and b without fp32 copies of them: cuBLAS's 16-bit GEMM with an fp32
    result (``out_dtype``), else TF32 GEMMs on upcast copies. Both are exact in the products (TF32 keeps
    11 significant bits, bf16 has 8 and fp16 11) and sum in fp32: the numbers of an fp32 GEMM, at
    tensor-core speed."""
    if _BMM_HAS_OUT_DTYPE and a.is_cuda and a.dtype in HALF_DTYPES:
        try:
            return torch.bmm(a, b, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            pass  # a build without the kernel for this device or dtype: the TF32 path below
    with _tf32_matmul(a.is_cuda):
        return torch.bmm(upcast(a), upcast(b))


def _gram_cpu(f: torch.Tensor, positions_first: bool) -> torch.Tensor:
    """One fp32 copy (a GEMM of two upcast views would make two), one fp32 GEMM."""
    up = upcast(f)
    return torch.bmm(up.transpose(1, 2), up) if positions_first else torch.bmm(up, up.transpose(1, 2))


def _gram_cuda(features: torch.Tensor, f: torch.Tensor, positions_first: bool) -> torch.Tensor:
    n, c = features.shape[:2]
    if not positions_first:
        return _bmm_fp32(f, f.transpose(1, 2))
    chunks = _split_chunks(f.shape[1])
    parts = f.reshape(n * chunks, f.shape[1] // chunks, c)
    return _bmm_fp32(parts.transpose(1, 2), parts).reshape(n, chunks, c, c).sum(1)


class _HalfGram(torch.autograd.Function):
    """Unnormalized Gram matrix of fp16/bf16 features on CUDA, and of bf16 features on CPUs, in fp32
    (:func:`_bmm_fp32`).

    The backward, dF = (dG + dG^T) F, is one GEMM in the features' dtype with fp32 accumulation (dG
    rounded to it: a gradient already headed for 16 bits), where autograd would run two fp32 GEMMs on
    upcast copies; measured faster for CPU training in docs/performance.md (losses.gram)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:
        f, positions_first = _positions_by_channels(features)
        ctx.save_for_backward(features)
        if not f.is_cuda:
            return _gram_cpu(f, positions_first)
        return _gram_cuda(features, f, positions_first)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (features,) = ctx.saved_tensors
        f, positions_first = _positions_by_channels(features)
        sym = grad + grad.transpose(1, 2)
        with _tf32_matmul(f.is_cuda):
            sym = sym.to(f.dtype)  # 16-bit features: a 16-bit GEMM; fp32/fp64 features: their own dtype
            if positions_first:  # (N, HW, C) @ (N, C, C) -> (N, HW, C), the layout of a channels_last tensor
                out = torch.bmm(f, sym)
                n, c, h, w = features.shape
                return out.reshape(n, h, w, c).permute(0, 3, 1, 2).to(features.dtype)
            return torch.bmm(sym, f).reshape(features.shape).to(features.dtype)


def unnormalized_gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) sum over positions of F F^T, in fp32 for 16-bit and fp32 features (fp64
    stays fp64): :class:`_HalfGram` for bf16 features and for fp16 ones on CUDA, else one GEMM that
    autograd differentiates. Call it with autocast off."""
    if features.dtype == torch.bfloat16 or (features.is_cuda and features.dtype == torch.float16):
        return _HalfGram.apply(features)
    f, positions_first = _positions_by_channels(upcast(features))
    return torch.bmm(f.transpose(1, 2), f) if positions_first else torch.bmm(f, f.transpose(1, 2))
