"""Triton kernels. Every ``import triton`` in instyle lives in this package."""
