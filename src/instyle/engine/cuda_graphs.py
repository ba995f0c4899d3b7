"""CUDA graphs: work of fixed shapes recorded once and replayed, one launch instead of hundreds.

:func:`capture` is the one capture of the package, as torch's CUDA-graph notes prescribe: warm-up
runs on a side stream, then the recording; a capture that fails is said (a RuntimeWarning) and
answered with None, so that the caller goes on eagerly. Two users:

- :class:`ForwardGraphs`: a generator's untiled forward at inference (``StyleModel.stylize``);
- :class:`GraphedStep`: forward, loss and backward of a training step (the trainer).

The speed-ups that justify them are measured in docs/performance.md.
"""

from __future__ import annotations

import warnings
from collections import Counter, OrderedDict
from typing import Callable, TypeVar

import torch
from torch import Tensor

__all__ = ["ForwardGraphs", "GraphedStep", "capture"]

T = TypeVar("T")


def capture(
    run: Callable[[], T],
    device: torch.device,
    *,
    warmup: int = 1,
    reset: Callable[[], None] | None = None,
    fallback: str = "going on without it",
) -> tuple[torch.cuda.CUDAGraph, T] | None:
    """``run()`` ``warmup`` times on a side stream, then once more recorded as a CUDA graph on
    ``device``: the graph and what the recorded call returned (its tensors live in the graph's memory
    and are overwritten by each replay). ``reset`` runs before each of those calls and after a failed
    capture. On failure: a RuntimeWarning ``CUDA graph capture failed (...); {fallback}`` and None."""
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                if reset is not None:
                    reset()
                run()
        torch.cuda.current_stream(device).wait_stream(side)
        if reset is not None:
            reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            result = run()
    except Exception as err:  # noqa: BLE001 - any capture fault leaves the eager path
        if reset is not None:
            reset()
        torch.cuda.synchronize(device)
        warnings.warn(f"CUDA graph capture failed ({err}); {fallback}", RuntimeWarning, stacklevel=2)
        return None
    return graph, result


class ForwardGraphs:
    """A generator's untiled forward on CUDA, replayed from CUDA graphs: ``graphs(module, forward, x)``.

    Stylizing large images with the bundled architecture is bound by kernel launches, not by the GPU
    (measured in docs/performance.md#cuda-graphs). A graph is captured on the second forward of the same input
    shape, dtype and layout (one image alone is not worth a capture) and up to :attr:`KEEP` of them
    are kept, each holding its input, output and activation memory; images over :attr:`MAX_PIXELS`
    never get one. A capture that fails is said once and that shape runs eagerly.
    """

    KEEP = 2
    MAX_PIXELS = 2048 * 2048

    def __init__(self) -> None:
        self.seen: Counter = Counter()
        self.graphs: OrderedDict = OrderedDict()

    def __call__(self, module: torch.nn.Module, forward, x: Tensor) -> Tensor:
        if x.device.type != "cuda" or x.shape[-2] * x.shape[-1] > self.MAX_PIXELS:
            return forward(x)
        params = tuple(module.parameters())  # kept alive with the graph, whose kernels read them in place
        key = (id(module), tuple(p.data_ptr() for p in params), tuple(x.shape), x.dtype, x.stride(), x.device)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.seen) > 1000:  # a folder of many sizes: forget the shapes seen once
                self.seen.clear()
            self.seen[key] += 1
            if self.seen[key] != 2:
                return forward(x)
            entry = self._capture(forward, x, params)
            if entry is None:
                return forward(x)
            self.graphs[key] = entry
            while len(self.graphs) > self.KEEP:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        graph, static_in, static_out, _ = entry
        static_in.copy_(x)
        graph.replay()
        return static_out  # overwritten by the next replay: the caller copies it out at once

    @staticmethod
    def _capture(forward, x: Tensor, params):
        static_in = x.clone()
        captured = capture(lambda: forward(static_in), x.device, fallback="stylizing without it")
        if captured is None:
            return None
        graph, static_out = captured
        return graph, static_in, static_out, params


class GraphedStep:
    """Forward, loss and backward of a training step, captured once as a CUDA graph and replayed.

    Every step has the same shapes, so after :attr:`EAGER_STEPS` ordinary steps (cuDNN's algorithm
    search, Triton's compilation) the work of ``forward_backward`` is recorded on a side stream and
    each later step copies its batch into the captured input and replays: about a thousand kernel
    launches for one. The gradients live in the graph's memory and are overwritten, not accumulated,
    by every replay, so the optimizer (outside the graph, with the scheduler's learning rate) must not
    set them to None afterwards.
    """

    EAGER_STEPS = 2
    WARMUP = 2

    def __init__(self, graph, batch: Tensor, values: Tensor) -> None:
        self.graph, self.batch, self.values = graph, batch, values

    @classmethod
    def capture(cls, forward_backward, batch: Tensor, optimizer) -> GraphedStep | None:
        """The captured step, or None (with a warning) where capture fails: training goes on eagerly."""
        static_batch = batch.clone()
        captured = capture(
            lambda: forward_backward(static_batch, cache=False), batch.device, warmup=cls.WARMUP,
            reset=lambda: optimizer.zero_grad(set_to_none=True), fallback="training continues without it",
        )  # fmt: skip
        if captured is None:
            return None
        graph, values = captured
        return cls(graph, static_batch, values)

    def __call__(self, batch: Tensor) -> Tensor:
        self.batch.copy_(batch)
        self.graph.replay()
        return self.values
