"""The Triton instance norm's forward and backward on fixed cases, computed where this process runs
the kernels (a GPU, or Triton's interpreter on CPU with TRITON_INTERPRET=1). Run as a script,
``python tests/triton_interpreted_cases.py OUT.pt`` saves the interpreter's results for
test_triton_launch.py's GPU check that the GPU's bits are the interpreter's."""

import os
import sys

import torch

if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

# (shape, dtype, channels_last, max_tile, min_programs): a plane in registers, looped planes,
# looped planes split across programs, small tiles; explicit plans, the same on both sides.
CASES = [
    ((4, 32, 64, 64), torch.float32, False, 0, 264),
    ((4, 32, 64, 64), torch.bfloat16, True, 0, 264),
    ((2, 8, 96, 96), torch.float32, False, 0, 0),
    ((2, 8, 96, 96), torch.float16, True, 0, 0),
    ((1, 3, 256, 256), torch.float32, False, 0, 264),
    ((2, 3, 19, 21), torch.float32, False, 64, 16),
]


def run_cases(device: torch.device) -> list[list[torch.Tensor]]:
    """[y, dx, dweight, dbias, dresidual] per case, on the CPU."""
    from instyle.ops.triton import instance_norm as tin

    results = []
    for index, (shape, dtype, channels_last, max_tile, min_programs) in enumerate(CASES):
        gen = torch.Generator().manual_seed(index)
        x, residual, grad = (torch.randn(shape, generator=gen).to(dtype) for _ in range(3))
        weight, bias = (torch.randn(shape[1], generator=gen).to(dtype) for _ in range(2))
        leaves = [t.to(device).requires_grad_() for t in (x, weight, bias, residual)]
        if channels_last:
            leaves[0] = leaves[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        y = tin.instance_norm_triton(leaves[0], None, None, leaves[1], leaves[2], True, 0.1, 1e-5, "relu", leaves[3],
                                     max_tile=max_tile, min_programs=min_programs)
        y.backward(grad.to(device))
        results.append([t.detach().cpu() for t in (y, *(leaf.grad for leaf in leaves))])
    return results


if __name__ == "__main__":
    torch.save(run_cases(torch.device("cpu")), sys.argv[1])
