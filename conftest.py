"""Session-wide test set-up that must run before anything imports triton."""

import os

import torch

if not torch.cuda.is_available():
    # Triton reads TRITON_INTERPRET once, at import: without CUDA its kernels run on CPU tensors
    # in the interpreter, which is how backend="triton" is tested here.
    os.environ.setdefault("TRITON_INTERPRET", "1")
