"""An op's forward and backward as an ``autograd.Function``, for eager calls that record a graph:
the same setup-context and backward functions the custom op registers, without the custom op's
dispatch, whose Python machinery costs more per call than small kernels take (the Triton backend on
an H100, the CPU backend on small planes: docs/performance.md). Under torch.compile, tracing,
dispatch or function modes and functorch transforms the backends call their custom ops instead."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["eager_function"]


def eager_function(
    forward: Callable, setup_context: Callable, backward: Callable, direct_backward: Callable, name: str
) -> type[torch.autograd.Function]:
    """A Function running ``forward(*inputs)``, ``setup_context(ctx, inputs, output)`` and
    ``backward(ctx, *grads, bwd=direct_backward)``: the op's registered pieces, its kernels called directly."""

    def run_forward(ctx, *inputs):
        output = forward(*inputs)
        setup_context(ctx, inputs, output)
        return output

    def run_backward(ctx, *grads):
        return backward(ctx, *grads, bwd=direct_backward)

    namespace = {"forward": staticmethod(run_forward), "backward": staticmethod(run_backward), "__doc__": __doc__}
    return type(name, (torch.autograd.Function,), namespace)
