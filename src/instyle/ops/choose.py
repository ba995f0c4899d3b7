"""``backend="auto"`` where no backend wins everywhere (CUDA: the Triton kernels against torch's
native instance norm): each candidate is timed once per call class at first use, in this process, and
the fastest is kept, as ``torch.backends.cudnn.benchmark`` does for convolutions. A call class is the
device, dtype, layout, fusion (the native candidate's time includes the residual add and the ReLU it
does as separate ops), whether a backward follows, and the power-of-two buckets of the plane count
and the plane size. Nothing is timed while torch.compile traces or a CUDA graph captures: those calls
take a class's choice if there is one, else the first candidate.

Timings differ between runs, so two processes may choose differently where the candidates are close;
``INSTYLE_BACKEND`` (or ``backend=``) fixes the backend where the bits must repeat across processes.

:func:`fastest` is the timing and the cache under both this choice and the Triton kernels' launch
configurations per size class (instyle.ops.triton.instance_norm), whose candidates give the same bits.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Hashable, Sequence, TypeVar

import torch
from torch import Tensor

__all__ = [
    "TIMED", "choose", "fastest", "may_time", "call_class", "set_timer", "clear_choices", "choices", "device_timer",
]  # fmt: skip

# Candidates timed against each other per device type, preferred first when nothing may be timed.
# Mutable on purpose: a benchmark may add or pin candidates.
TIMED: dict[str, tuple[str, ...]] = {"cuda": ("triton", "native")}
REPEATS = 5

Timer = Callable[[Callable[[], None], torch.device], float]
_timer: Timer | None = None
_choices: dict = {}  # key -> the chosen candidate (a backend name, or a kernel launch)
_timings: dict = {}  # key -> {candidate: seconds}
T = TypeVar("T")


def _bucket(n: int) -> int:
    return max(0, math.ceil(math.log2(max(n, 1))))


def call_class(input: Tensor, activation: str | None, residual: Tensor | None, backward: bool) -> tuple:
    """The key under which one choice serves every similar call."""
    planes = input.shape[0] * input.shape[1]
    plane = input[0, 0].numel() if planes else 0
    layout = "contiguous" if input.is_contiguous() else "strided"
    return (str(input.device), input.dtype, input.dim(), layout, activation, residual is not None, backward,
            _bucket(planes), _bucket(plane))  # fmt: skip


def device_timer(run: Callable[[], None], device: torch.device) -> float:
    """Median seconds of ``run`` after one warm-up call (which compiles and autotunes kernels): CUDA
    events on CUDA, the wall clock elsewhere."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    run()
    sync()
    times = []
    for _ in range(REPEATS):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            begin = time.perf_counter()
            run()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def set_timer(timer: Timer | None) -> Timer | None:
    """Use ``timer(run, device) -> seconds`` for the timings (None: :func:`device_timer`); returns the
    previous one. Clears the choices made so far."""
    global _timer
    previous, _timer = _timer, timer
    clear_choices()
    return previous


def clear_choices() -> None:
    _choices.clear()
    _timings.clear()


def choices() -> dict:
    """Every choice made in this process: key -> (choice, {candidate: seconds}); a choice is a backend
    name (key: a call class) or a Triton launch (key: ("triton-launch", ...))."""
    return {key: (name, dict(_timings.get(key, {}))) for key, name in _choices.items()}


def may_time(input: Tensor) -> bool:
    """Whether a call on ``input`` may run timings: not while torch.compile or the JIT traces, a
    CUDA graph captures, or on fake, functional or meta tensors."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or input.device.type == "meta":
        return False
    if type(input) is not Tensor and not isinstance(input, torch.nn.Parameter):  # fake or functional tensors
        return False
    return not (input.device.type == "cuda" and torch.cuda.is_current_stream_capturing())


def fastest(key: Hashable, candidates: Sequence[T], runner: Callable[[T], Callable[[], None]],
            device: torch.device, may: Callable[[], bool]) -> T:  # fmt: skip
    """The candidate whose ``runner(candidate)()`` took least time, timed once per ``key`` in this
    process (ties: the earlier); where nothing was chosen and ``may()`` is false, the first. ``may`` is
    asked only when there is something to time: a call whose key is chosen costs one dict lookup."""
    if key in _choices:
        return _choices[key]
    if len(candidates) < 2 or not may():
        return candidates[0]
    timer = _timer or device_timer
    times = {candidate: timer(runner(candidate), device) for candidate in candidates}
    chosen = min(candidates, key=times.__getitem__)
    _choices[key], _timings[key] = chosen, times
    return chosen


def _one_call(fn: Callable[..., Tensor], input: Tensor, activation, residual, backward: bool) -> Callable[[], None]:
    """One call of ``fn`` as the generators make it (affine, fp32 gamma/beta), on the caller's data
    (nothing written to it), with its backward when one follows."""
    c = input.shape[1]
    weight = torch.ones(c, device=input.device, requires_grad=backward)
    bias = torch.zeros(c, device=input.device, requires_grad=backward)
    x = input.detach().requires_grad_(backward)
    r = None if residual is None else residual.detach().requires_grad_(backward)
    grad: list[Tensor] = []

    def run() -> None:
        with torch.enable_grad() if backward else torch.no_grad():
            y = fn(x, None, None, weight, bias, True, 0.1, 1e-5, activation, r)
            if backward:
                if not grad:
                    grad.append(torch.ones_like(y))
                torch.autograd.backward(y, grad[0])
                x.grad = weight.grad = bias.grad = None
                if r is not None:
                    r.grad = None

    return run


def choose(
    candidates: Sequence[str], fns: Callable[[str], Callable[..., Tensor]], input: Tensor,
    activation: str | None = None, residual: Tensor | None = None,
) -> str:  # fmt: skip
    """The fastest of ``candidates`` (registered names; ``fns(name)`` gives a backend's function) for
    calls like this one; the first candidate where nothing may be timed."""
    backward = torch.is_grad_enabled() and (input.requires_grad or (residual is not None and residual.requires_grad))
    key = call_class(input, activation, residual, backward)
    return fastest(key, tuple(candidates), lambda name: _one_call(fns(name), input, activation, residual, backward),
                   input.device, lambda: may_time(input))
