"""backend="auto" where candidates are timed (issue #22 part 1): the choice logic on CPU with
injected timings, INSTYLE_BACKEND, and the native backend the CUDA choice weighs."""

from __future__ import annotations

import pytest
import torch

import instyle.functional as F
from instyle.ops import choose, registry


@pytest.fixture
def timed_cpu(monkeypatch):
    """CPU calls timed between "cpu" and "reference", with a timer that reports ``times[name]`` and
    records each timed call's backend and whether it ran a backward."""
    registry.load_optional_backends()
    monkeypatch.setitem(choose.TIMED, "cpu", ("cpu", "reference"))
    monkeypatch.delenv("INSTYLE_BACKEND", raising=False)
    state = {"times": {"cpu": 2.0, "reference": 1.0}, "calls": []}

    def fns(name):
        fn = registry.get_backend(name).fn

        def recorded(x, *args):
            state["calls"].append((name, torch.is_grad_enabled(), args[-2], args[-1] is not None))
            return fn(x, *args)

        return recorded

    def timer(run, device):
        before = len(state["calls"])
        run()
        return state["times"][state["calls"][before][0]]

    monkeypatch.setattr(registry, "_BACKENDS", {**registry._BACKENDS})
    for name in ("cpu", "reference"):
        registry._BACKENDS[name] = registry.Backend(fns(name), registry._BACKENDS[name].supports)
    previous = choose.set_timer(timer)
    yield state
    choose.set_timer(previous)


def test_auto_takes_the_faster_candidate_and_times_each_class_once(timed_cpu):
    x = torch.randn(2, 3, 16, 16)
    assert registry.select_backend("auto", x) == "reference"
    timed = len(timed_cpu["calls"])
    assert timed == 2
    assert registry.select_backend("auto", torch.randn(2, 3, 15, 15)) == "reference"  # same class: no timing
    assert len(timed_cpu["calls"]) == timed
    timed_cpu["times"] = {"cpu": 1.0, "reference": 3.0}
    assert registry.select_backend("auto", torch.randn(2, 3, 64, 64)) == "cpu"  # another plane-size bucket
    assert {key[-1] for key in choose.choices()} == {8, 12}


def test_the_choice_runs_the_call(timed_cpu):
    x = torch.randn(2, 3, 8, 8)
    y = F.instance_norm(x)
    torch.testing.assert_close(y, torch.nn.functional.instance_norm(x), atol=1e-5, rtol=0)


def test_fused_calls_are_timed_with_the_ops_they_replace(timed_cpu):
    x, r = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    registry.select_backend("auto", x, "relu", r)
    assert timed_cpu["calls"] and all(call[2:] == ("relu", True) for call in timed_cpu["calls"])
    registry.select_backend("auto", x)  # the unfused form is a class of its own
    assert timed_cpu["calls"][-1][2:] == (None, False)


def test_a_call_with_a_backward_is_timed_with_its_backward(timed_cpu):
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    registry.select_backend("auto", x)
    assert all(call[1] for call in timed_cpu["calls"])
    before = len(timed_cpu["calls"])
    with torch.no_grad():
        registry.select_backend("auto", x)
    assert len(timed_cpu["calls"]) == before + 2 and not any(c[1] for c in timed_cpu["calls"][before:])
    assert x.grad is None  # the caller's tensor is untouched


def test_nothing_is_timed_where_it_may_not_be(timed_cpu):
    assert registry.select_backend("auto", torch.empty(2, 3, 8, 8, device="meta")) == "reference"  # no timed cpu class
    x = torch.empty(2, 3, 8, 8, device="meta")
    assert choose.choose(("cpu", "reference"), lambda n: registry.get_backend(n).fn, x) == "cpu"  # the first
    assert not timed_cpu["calls"] and not choose.choices()


def test_instyle_backend_forces_auto_only(timed_cpu, monkeypatch):
    x = torch.randn(2, 3, 8, 8)
    monkeypatch.setenv("INSTYLE_BACKEND", "cpu")
    assert registry.select_backend("auto", x) == "cpu"
    assert registry.select_backend("reference", x) == "reference"  # backend= wins over the variable
    assert not timed_cpu["calls"]
    monkeypatch.setenv("INSTYLE_BACKEND", "cuda-fast")
    with pytest.raises(ValueError, match="INSTYLE_BACKEND='cuda-fast': unknown backend"):
        F.instance_norm(x)


def test_the_default_timer_measures_real_calls(monkeypatch):
    registry.load_optional_backends()
    monkeypatch.setitem(choose.TIMED, "cpu", ("cpu", "native"))
    monkeypatch.delenv("INSTYLE_BACKEND", raising=False)
    previous = choose.set_timer(None)
    try:
        chosen = registry.select_backend("auto", torch.randn(2, 8, 32, 32))
        ((name, times),) = choose.choices().values()
        assert chosen == name == min(times, key=times.get) and set(times) == {"cpu", "native"}
        assert all(t > 0 for t in times.values())
    finally:
        choose.set_timer(previous)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_native_backend_is_torch_plus_the_fused_ops(layout):
    registry.load_optional_backends()
    x = torch.randn(2, 4, 6, 5).to(memory_format=layout)
    r, w, b = torch.randn(2, 4, 6, 5), torch.randn(4), torch.randn(4)
    mean, var = torch.zeros(4), torch.ones(4)
    y = F.instance_norm(x, mean, var, w, b, activation="relu", residual=r, backend="native")
    ref_mean, ref_var = torch.zeros(4), torch.ones(4)
    expected = torch.relu(torch.nn.functional.instance_norm(x, ref_mean, ref_var, w, b) + r)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close((mean, var), (ref_mean, ref_var))
    assert y.is_contiguous(memory_format=layout)
