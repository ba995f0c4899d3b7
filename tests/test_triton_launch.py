"""The Triton kernels' launch configurations (issue #22 part 2): every reduction across lanes is a
fixed tree of halves, so no tuned choice (num_warps, programs per multiprocessor) changes a bit; the
fastest launch per size class is timed once per process on a tuned device (here CPU, with injected
timings); INSTYLE_TRITON_TUNE=0 keeps the heuristic. The kernels run in Triton's interpreter
without CUDA; INSTYLE_TEST_DEVICE=cuda runs the same tests compiled on a GPU, where num_warps is real.
"""

import os

import pytest
import torch

# The kernel tests' start: TRITON_INTERPRET=1 before triton is imported where there is no CUDA,
# DEVICE from INSTYLE_TEST_DEVICE, and the module skipped where the interpreter cannot be had.
from .test_instance_norm_triton import DEVICE, tin, triton

import triton.language as tl  # noqa: E402  (isort: after the line above, which sets the interpreter up)

from instyle.ops import choose  # noqa: E402
from instyle.ops.triton import kernels  # noqa: E402

# (shape, max_tile, min_programs): a plane in registers, looped planes, looped and split planes.
PLANS = [((3, 5, 6, 7), 0, -1), ((2, 2, 13, 11), 64, 0), ((1, 2, 19, 21), 64, 16)]
PLAN_IDS = ["single_tile", "looped", "split"]


@triton.jit
def _tree_sum_kernel(X, Out, BLOCK_C: tl.constexpr, N: tl.constexpr):
    c = tl.arange(0, BLOCK_C)
    s = tl.arange(0, N)
    tl.store(Out + c, kernels._tree_sum(tl.load(X + c[:, None] * N + s[None, :]), BLOCK_C, N))


def _halves(x: torch.Tensor) -> torch.Tensor:
    """Each row's first half plus its second, level by level, in float32: the tree _tree_sum promises."""
    while x.shape[1] > 1:
        half = x.shape[1] // 2
        x = x[:, :half] + x[:, half:]
    return x[:, 0]


def test_tree_sum_adds_halves_level_by_level():
    # Magnitudes spread so that another order rounds differently (checked: the running sum differs).
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 64, generator=gen) * torch.logspace(-6, 6, 64)[torch.randperm(64, generator=gen)]).float()
    x = x.to(DEVICE)
    out = torch.empty(4, device=DEVICE)
    _tree_sum_kernel[(1,)](x, out, BLOCK_C=4, N=64)
    assert torch.equal(out, _halves(x))
    assert not torch.equal(out, x.cumsum(1)[:, -1])


def _forward_backward(shape, max_tile, min_programs, channels_last=False):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(DEVICE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(shape[1], generator=gen).to(DEVICE).requires_grad_()
    bias = torch.randn(shape[1], generator=gen).to(DEVICE).requires_grad_()
    residual = torch.randn(shape, generator=gen).to(DEVICE).requires_grad_()
    y = tin.instance_norm_triton(x, None, None, weight, bias, True, 0.1, 1e-5, "relu", residual,
                                 max_tile=max_tile, min_programs=min_programs)
    y.backward(torch.randn(shape, generator=gen).to(DEVICE))
    return [y.detach(), x.grad, weight.grad, bias.grad, residual.grad]


def _plan_of(shape, max_tile, min_programs):
    min_programs = tin._default_min_programs(DEVICE) if min_programs < 0 else min_programs
    return tin._plan(shape[0], shape[1], shape[2] * shape[3], False, max_tile, min_programs)


@pytest.mark.parametrize("shape, max_tile, min_programs", PLANS, ids=PLAN_IDS)
def test_every_candidate_launch_gives_the_same_bits(shape, max_tile, min_programs, monkeypatch):
    """On CPU the interpreter ignores num_warps, so this checks the programs-per-SM grids (one
    program taking every tile in turn); on CUDA it checks num_warps too."""
    launches = tin.candidates(_plan_of(shape, max_tile, min_programs))
    results = []
    for launch in launches:
        monkeypatch.setattr(tin, "FORCED", launch)
        results.append(_forward_backward(shape, max_tile, min_programs))
    for launch, result in zip(launches[1:], results[1:]):
        assert all(torch.equal(a, b) for a, b in zip(results[0], result)), launch


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="num_warps is real only on a GPU (INSTYLE_TEST_DEVICE=cuda)")
@pytest.mark.parametrize("shape", [(8, 64, 64, 64), (8, 64, 256, 256), (1, 3, 512, 512)],
                         ids=["single_tile", "looped", "split"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_gpu_sizes_give_the_same_bits_with_every_launch(shape, channels_last, monkeypatch):
    plan = tin._plan(shape[0], shape[1], shape[2] * shape[3], channels_last, 0, tin._default_min_programs(DEVICE))
    results = []
    for launch in tin.candidates(plan):
        monkeypatch.setattr(tin, "FORCED", launch)
        results.append(_forward_backward(shape, 0, -1, channels_last))
    assert len(results) > 1
    for launch, result in zip(tin.candidates(plan)[1:], results[1:]):
        assert all(torch.equal(a, b) for a, b in zip(results[0], result)), launch


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="compares a GPU's results with the interpreter's")
def test_gpu_bits_are_the_interpreters(tmp_path):
    """No FMA contraction, IEEE divisions and square roots, fixed reduction trees: every operation
    rounds as numpy does in Triton's interpreter."""
    import subprocess
    import sys

    here = os.path.dirname(__file__)
    sys.path.insert(0, here)
    from triton_interpreted_cases import CASES, run_cases

    out = tmp_path / "interpreted.pt"
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, os.path.join(here, "triton_interpreted_cases.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    names = ["output", "grad_input", "grad_weight", "grad_bias", "grad_residual"]
    for case, gpu, cpu in zip(CASES, run_cases(DEVICE), torch.load(out)):
        for name, a, b in zip(names, gpu, cpu):
            if name in ("grad_weight", "grad_bias"):  # the kernels' per-plane sums, then torch's sums over
                torch.testing.assert_close(a, b, rtol=2 * torch.finfo(a.dtype).eps, atol=0)  # samples and chunks
            else:
                assert torch.equal(a, b), (case, name, (a.double() - b.double()).abs().max().item())


def test_candidates_put_the_heuristic_first_and_bound_programs_only_for_looped_planes():
    for (shape, max_tile, min_programs), name in zip(PLANS, PLAN_IDS):
        plan = _plan_of(shape, max_tile, min_programs)
        launches = tin.candidates(plan)
        assert launches[0] == tin.Launch(plan.num_warps, 0) and len(set(launches)) == len(launches)
        assert all(1 <= launch.num_warps <= 16 for launch in launches)
        bounded = [launch for launch in launches if launch.programs_per_sm]
        assert bool(bounded) == (name == "looped"), (name, launches)


@pytest.fixture
def timed_launches(monkeypatch):
    """Launches on this device timed by a timer that reports ``times(launch)`` for the launch its
    run used; records every timed launch."""
    monkeypatch.setattr(tin, "TUNED_DEVICES", {DEVICE.type})
    monkeypatch.delenv(tin.TUNE_VARIABLE, raising=False)
    state = {"timed": [], "times": lambda launch: 1.0 / (launch.num_warps + launch.programs_per_sm)}
    used = []
    programs = tin._programs

    def recording(device, tiles, launch):
        used.append(launch)
        return programs(device, tiles, launch)

    def timer(run, device):
        run()
        state["timed"].append(used[-1])
        return state["times"](used[-1])

    monkeypatch.setattr(tin, "_programs", recording)
    previous = choose.set_timer(timer)
    state["used"] = used
    yield state
    choose.set_timer(previous)


def test_the_fastest_launch_is_timed_once_per_size_class_and_used(timed_launches):
    shape, max_tile, min_programs = PLANS[1]
    plan = _plan_of(shape, max_tile, min_programs)
    expected = max(tin.candidates(plan), key=lambda launch: launch.num_warps + launch.programs_per_sm)
    first = _forward_backward(shape, max_tile, min_programs)
    timed = list(timed_launches["timed"])
    assert set(timed) == set(tin.candidates(plan)) and len(timed) == 2 * len(tin.candidates(plan))  # fwd, bwd
    assert timed_launches["used"][-1] == expected  # the backward's real launch
    fwd_choice = [name for key, (name, _) in choose.choices().items() if key[:2] == ("triton-launch", "fwd")]
    assert fwd_choice == [expected]
    again = _forward_backward((2, 2, 12, 11), max_tile, min_programs)  # same class: nothing timed
    assert len(timed_launches["timed"]) == len(timed) and again[0].shape == (2, 2, 12, 11)
    timed_launches["times"] = lambda launch: 1.0  # a tie keeps the heuristic: the same bits as the choice
    other = _forward_backward((1, 2, 17, 17), max_tile, min_programs)  # another size class
    assert len(timed_launches["timed"]) > len(timed)
    assert timed_launches["used"][-1] == tin.candidates(_plan_of((1, 2, 17, 17), max_tile, min_programs))[0]
    untimed = choose.set_timer(None)
    try:
        choose.clear_choices()
        assert all(torch.equal(a, b) for a, b in zip(first, _forward_backward(shape, max_tile, min_programs)))
    finally:
        choose.set_timer(untimed)
    assert other[0].shape == (1, 2, 17, 17)


def test_tuning_off_keeps_the_heuristic_and_times_nothing(timed_launches, monkeypatch):
    monkeypatch.setenv(tin.TUNE_VARIABLE, "0")
    shape, max_tile, min_programs = PLANS[1]
    _forward_backward(shape, max_tile, min_programs)
    assert timed_launches["timed"] == []
    assert set(timed_launches["used"]) == {tin.candidates(_plan_of(shape, max_tile, min_programs))[0]}


def test_nothing_is_timed_while_compiling(timed_launches, monkeypatch):
    """torch.compile runs the custom op's fake while tracing; a launch under tracing (or a CUDA
    graph's capture) takes the heuristic and times nothing."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    shape, max_tile, min_programs = PLANS[1]
    y = tin.instance_norm_fwd(torch.randn(shape, device=DEVICE), None, None, None, None, None, True, 1e-5, False,
                              max_tile, min_programs)[0]
    assert timed_launches["timed"] == [] and timed_launches["used"] == [tin.candidates(_plan_of(*PLANS[1]))[0]]
    assert torch.isfinite(y).all()
