"""The "cpu" backend against the float64 reference (backend="reference" on float64 input)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from instyle.functional import instance_norm, select_backend
from instyle.ops.cpu.instance_norm import PARALLEL_MIN_ELEMENTS

from .test_instance_norm import check_edge_case

pytestmark = pytest.mark.filterwarnings("ignore:instyle")

SHAPES = [
    pytest.param((2, 3, 5, 7), id="odd-plane"),  # odd H and W: vector tails only
    pytest.param((3, 4, 37, 70), id="npot-plane"),  # 2590 elements: more than one 2048 chunk, ragged
    pytest.param((2, 3, 1, 2), id="1x2-plane"),  # smallest plane with a defined variance
    pytest.param((1, 5, 130, 67), id="one-sample"),  # N=1, odd C
    pytest.param((2, 3, 9), id="3d"),  # (N, C, L)
    pytest.param((2, 3, 4, 5, 6), id="5d"),  # (N, C, D, H, W)
]

# (dtype, output atol/rtol, gradient atol/rtol) for fp32; 16-bit tolerances are measured below.
FP32_TOL = dict(atol=2e-5, rtol=2e-5)


def _layouts(shape):
    yield "contiguous"
    if len(shape) in (4, 5):
        yield "channels_last"


def _make(shape, layout, dtype=torch.float32, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + shift).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    return x


def _cl_format(x):
    return torch.channels_last if x.dim() == 4 else torch.channels_last_3d


def _run(x, backend, affine, relu, residual, grad_out, eps=1e-5):
    """Output and the gradients of (x, weight, bias, residual), all from the same grad_out."""
    c = x.shape[1]
    g = torch.Generator().manual_seed(1)
    leaves = {"x": x.detach().clone(memory_format=torch.preserve_format).requires_grad_()}
    weight = bias = res = None
    if affine:
        leaves["weight"] = weight = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(x.dtype).requires_grad_()
        leaves["bias"] = bias = torch.randn(c, generator=g, dtype=torch.float64).to(x.dtype).requires_grad_()
    if residual:
        r = torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype)
        leaves["residual"] = res = r.contiguous(memory_format=torch.preserve_format).requires_grad_()
    y = instance_norm(
        leaves["x"], weight=weight, bias=bias, eps=eps, activation="relu" if relu else None, residual=res,
        backend=backend,
    )  # fmt: skip
    y.backward(grad_out.to(y.dtype))
    return y, {k: v.grad for k, v in leaves.items()}


def _reference64(x, affine, relu, residual, grad_out, eps=1e-5):
    return _run(x.double(), "reference", affine, relu, residual, grad_out.double(), eps)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
@pytest.mark.parametrize("residual", [False, True], ids=["", "residual"])
def test_matches_float64_reference(shape, affine, relu, residual):
    for layout in _layouts(shape):
        x = _make(shape, layout)
        grad_out = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        y, grads = _run(x, "cpu", affine, relu, residual, grad_out)
        y64, grads64 = _reference64(x, affine, relu, residual, grad_out)
        assert y.dtype == x.dtype
        if layout == "channels_last":
            assert y.is_contiguous(memory_format=_cl_format(x)), "channels_last in must give channels_last out"
        torch.testing.assert_close(y.double(), y64, **FP32_TOL)
        assert grads.keys() == grads64.keys()
        for name in grads:
            torch.testing.assert_close(grads[name].double(), grads64[name], atol=1e-4, rtol=1e-4, msg=name)


def test_auto_selects_cpu_backend():
    x = torch.randn(2, 3, 4, 4)
    assert select_backend("auto", x) == "cpu"
    assert select_backend("auto", x.bfloat16()) == "cpu"


def test_channels_last_output_is_not_a_copy_of_an_nchw_result():
    x = _make((2, 8, 6, 5), "channels_last")
    y = instance_norm(x, backend="cpu")
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    torch.testing.assert_close(y, instance_norm(x.contiguous(), backend="cpu"), atol=1e-6, rtol=1e-6)


def test_non_contiguous_input():
    x = _make((2, 3, 9, 14), "contiguous")[..., ::2]  # stride-2 view
    torch.testing.assert_close(
        instance_norm(x, backend="cpu").double(), instance_norm(x.double(), backend="reference"), **FP32_TOL
    )


def _torch_error(x, y64, affine):
    """torch's own error in x.dtype against the float64 result (its group_norm: same math)."""
    return (F.instance_norm(x).double() - y64).abs().max().item() if not affine else None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_half_precision_error_at_most_twice_torch(dtype, layout):
    shape = (2, 6, 33, 47)
    x = _make(shape, layout, dtype)
    grad_out = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y, grads = _run(x, "cpu", True, True, True, grad_out)
    y64, grads64 = _reference64(x, True, True, True, grad_out)
    # torch's error in the same dtype, same fused computation done with torch ops in `dtype`
    xt = x.detach().clone().requires_grad_()
    g = torch.Generator().manual_seed(1)
    w = (torch.rand(6, generator=g, dtype=torch.float64) + 0.5).to(dtype).requires_grad_()
    b = torch.randn(6, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    r = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    yt = torch.relu(F.instance_norm(xt, weight=w, bias=b) + r)
    yt.backward(grad_out.to(dtype))
    torch_grads = {"x": xt.grad, "weight": w.grad, "bias": b.grad, "residual": r.grad}
    y_err = (y.double() - y64).abs().max().item()
    y_err_torch = (yt.double() - y64).abs().max().item()
    assert y_err <= 2 * y_err_torch + 1e-6, (y_err, y_err_torch)
    for name in grads:
        err = (grads[name].double() - grads64[name]).abs().max().item()
        err_torch = (torch_grads[name].double() - grads64[name]).abs().max().item()
        assert err <= 2 * err_torch + 1e-6, (name, err, err_torch)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shift, atol", [(1e3, 1e-4), (1e4, 2e-3)])
def test_shifted_means(layout, shift, atol):
    x = _make((2, 3, 64, 48), layout, shift=shift) / 2  # randn + shift
    y = instance_norm(x, backend="cpu")
    y64 = instance_norm(x.double(), backend="reference")
    assert (y.double() - y64).abs().max().item() < atol


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("magnitude", [1e19, 1e25, 1e30])
def test_huge_magnitudes_are_not_zeros(layout, magnitude):
    x = _make((2, 3, 10, 12), layout) * magnitude
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y, grads = _run(x, "cpu", True, False, False, grad_out)
    y64, grads64 = _reference64(x, True, False, False, grad_out)
    assert y.abs().amax().item() > 0.5
    torch.testing.assert_close(y.double(), y64, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads["weight"].double(), grads64["weight"], atol=1e-4, rtol=1e-4)
    # dx scales as 1/magnitude
    torch.testing.assert_close(grads["x"].double() * magnitude, grads64["x"] * magnitude, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nan_stays_in_its_plane(layout):
    x = _make((2, 4, 9, 11), layout)
    w, b = torch.rand(4) + 0.5, torch.randn(4)
    clean = instance_norm(x, weight=w, bias=b, activation="relu", backend="cpu")
    x_nan = x.clone(memory_format=torch.preserve_format)
    x_nan[1, 2, 3, 4] = float("nan")
    dirty = instance_norm(x_nan, weight=w, bias=b, activation="relu", backend="cpu")
    assert torch.isnan(dirty[1, 2]).all()
    others = torch.ones(2, 4, dtype=torch.bool)
    others[1, 2] = False
    assert torch.equal(dirty[others], clean[others])


def test_empty_batch_with_affine_gives_zero_grads():
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    w = torch.ones(3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    y = instance_norm(x, weight=w, bias=b, backend="cpu")
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros(3)) and torch.equal(b.grad, torch.zeros(3))


def test_constant_plane_gives_bias_and_eps_zero_no_nan():
    x = torch.full((1, 2, 4, 4), 3.0)
    b = torch.tensor([0.25, -1.0])
    y = instance_norm(x, weight=torch.ones(2), bias=b, backend="cpu")
    torch.testing.assert_close(y, b.view(1, 2, 1, 1).expand_as(y))
    assert torch.isfinite(instance_norm(x, eps=0.0, backend="cpu")).all()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("momentum", [0.1, 1.0])
def test_running_stats(layout, momentum):
    x = _make((3, 4, 6, 5), layout, shift=2.0)
    stats = {}
    mean0, var0 = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.5
    for backend, dtype in (("cpu", torch.float32), ("reference", torch.float64)):
        rm, rv = mean0.to(dtype), var0.to(dtype)
        instance_norm(x.to(dtype), rm, rv, momentum=momentum, backend=backend)
        stats[backend] = (rm, rv)
    for ours, ref in zip(stats["cpu"], stats["reference"]):
        torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)


def test_running_stats_in_eval_mode_with_grads():
    x = _make((2, 4, 6, 5), "channels_last")
    rm, rv = torch.randn(4), torch.rand(4) + 0.5
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    outs = []
    for backend, dtype in (("cpu", torch.float32), ("reference", torch.float64)):
        xx = x.detach().to(dtype).requires_grad_()
        w = torch.linspace(0.5, 1.5, 4, dtype=dtype, requires_grad=True)
        y = instance_norm(xx, rm.to(dtype), rv.to(dtype), w, use_input_stats=False, activation="relu", backend=backend)
        y.backward(grad_out.to(dtype))
        outs.append((y, xx.grad, w.grad))
    for ours, ref in zip(*outs):
        torch.testing.assert_close(ours.double(), ref.double(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_twice_bitwise_identical_and_deterministic(layout):
    x = _make((2, 5, 64, 70), layout)
    assert x.numel() >= PARALLEL_MIN_ELEMENTS  # large enough to run on every thread
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.use_deterministic_algorithms(True)
    try:
        first = _run(x, "cpu", True, True, True, grad_out)
        second = _run(x, "cpu", True, True, True, grad_out)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            single = _run(x, "cpu", True, True, True, grad_out)
        finally:
            torch.set_num_threads(threads)
    finally:
        torch.use_deterministic_algorithms(False)
    for other in (second, single):
        assert torch.equal(first[0], other[0])
        for name in first[1]:
            assert torch.equal(first[1][name], other[1][name]), name


def test_float64_delegates_to_reference():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    assert torch.equal(instance_norm(x, backend="cpu"), instance_norm(x, backend="reference"))


def test_compiles_without_graph_breaks():
    torch._dynamo.reset()

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.weight = torch.nn.Parameter(torch.ones(4))
            self.bias = torch.nn.Parameter(torch.zeros(4))

        def forward(self, x):
            return instance_norm(self.conv(x), weight=self.weight, bias=self.bias, activation="relu", backend="cpu")

    model = Block()
    x = torch.randn(2, 3, 8, 8)
    instance_norm(x, backend="cpu")  # load the backends eagerly (their import is not traced)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, backend="aot_eager")
    y = compiled(x)
    y.sum().backward()
    grad = model.conv.weight.grad.clone()
    model.zero_grad()
    model(x).sum().backward()
    torch.testing.assert_close(y, model(x))
    torch.testing.assert_close(grad, model.conv.weight.grad)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_pure_torch_path_matches_kernels(layout, monkeypatch):
    """Without a C++ compiler the backend runs the same math in torch ops."""
    from instyle.ops.cpu import build

    if build.load() is None:
        pytest.skip("the C++ kernels are not built here")
    x = _make((2, 3, 17, 23), layout)
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    native = _run(x, "cpu", True, True, True, grad_out)
    monkeypatch.setattr(build, "_lib", None)
    portable = _run(x, "cpu", True, True, True, grad_out)
    torch.testing.assert_close(native[0], portable[0], atol=1e-5, rtol=1e-5)
    for name in native[1]:
        torch.testing.assert_close(native[1][name], portable[1][name], atol=1e-5, rtol=1e-5, msg=name)


def _cpu_norm(x, weight, bias, eps):
    return instance_norm(x, weight=weight, bias=bias, eps=eps, backend="cpu")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case, eps", [("max_2e38", 1e-5), ("one_against_many", 1e-5), ("tiny_eps0", 0.0)])
def test_pure_torch_path_at_the_edge_of_fp32(case, eps, layout, monkeypatch):
    """Without a C++ compiler: the same scaled statistics, output and gradients."""
    from instyle.ops.cpu import build

    build.load()
    monkeypatch.setattr(build, "_lib", None)
    check_edge_case(case, eps, _cpu_norm, layout)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_huge_planes_split_over_threads(layout):
    """N * C = 3 large planes on 2 threads (chunks shared by all threads): flagged, redone, right."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        check_edge_case("few_large_planes", 1e-5, _cpu_norm, layout)
    finally:
        torch.set_num_threads(threads)


# Channels-last layouts of the kernels: lcm(C, 16) <= 128 reads blocks flat with C-periodic
# vectors, larger C goes in groups of up to 128 channels with a masked last vector.
CL_CASES = [
    pytest.param((1, 8, 37, 41), id="C8-one-vector-two-rows"),
    pytest.param((2, 3, 33, 47), id="C3-period-48"),
    pytest.param((1, 5, 64, 70), id="C5-period-80-several-blocks"),
    pytest.param((2, 7, 9, 13), id="C7-period-112-ragged"),
    pytest.param((3, 1, 20, 21), id="C1"),
    pytest.param((2, 24, 19, 17), id="C24-period-48"),
    pytest.param((1, 200, 11, 9), id="C200-two-groups-last-masked"),
    pytest.param((2, 130, 5, 7), id="C130-last-group-one-masked-vector"),
    pytest.param((2, 512, 6, 7), id="C512-whole-rows-three-blocks"),  # 16 rows per block
    pytest.param((1, 1000, 5, 7), id="C1000-whole-rows-masked-tail"),
]


@pytest.mark.parametrize("shape", CL_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_channels_last_equals_nchw(shape, dtype):
    """Same values as the same tensor in NCHW (statistics reduce in another order: 1 ulp)."""
    x = _make(shape, "contiguous", dtype)
    grad_out = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y, grads = _run(x, "cpu", True, True, True, grad_out)
    y_cl, grads_cl = _run(x.contiguous(memory_format=torch.channels_last), "cpu", True, True, True, grad_out)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    tol = FP32_TOL if dtype == torch.float32 else dict(atol=2e-2, rtol=1e-2)  # bf16: an ulp of |y| < 4
    torch.testing.assert_close(y_cl, y, **tol)
    for name in grads:
        torch.testing.assert_close(grads_cl[name], grads[name], **tol, msg=name)
    if dtype == torch.float32:  # and against float64 (bf16: test_half_precision_error_at_most_twice_torch)
        torch.testing.assert_close(y_cl.double(), _reference64(x, True, True, True, grad_out)[0], **FP32_TOL)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_few_planes_split_over_threads_deterministic(layout, dtype):
    """N * C = 3 planes on 2 threads: every plane's chunks are shared; same bits as 1 thread."""
    x = _make((1, 3, 107, 111), layout, dtype)  # 11877 elements a plane: six chunks, the last ragged
    assert x.numel() >= PARALLEL_MIN_ELEMENTS
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = _run(x, "cpu", True, True, True, grad_out)
        torch.set_num_threads(1)
        one = _run(x, "cpu", True, True, True, grad_out)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(two[0], one[0])
    for name in one[1]:
        assert torch.equal(two[1][name], one[1][name]), name
    y64, grads64 = _reference64(x, True, True, True, grad_out)
    if dtype == torch.float32:
        torch.testing.assert_close(one[0].double(), y64, **FP32_TOL)
        torch.testing.assert_close(one[1]["x"].double(), grads64["x"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_large_output_streaming_stores(layout):
    """Outputs of 16 MB and more are written with non-temporal stores; same values."""
    x = _make((1, 16, 512, 512), layout)  # 16 MiB fp32
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y, grads = _run(x, "cpu", True, True, True, grad_out)
    y64, grads64 = _reference64(x, True, True, True, grad_out)
    torch.testing.assert_close(y.double(), y64, **FP32_TOL)
    torch.testing.assert_close(grads["x"].double(), grads64["x"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads["residual"].double(), grads64["residual"], **FP32_TOL)


def test_bf16_subnormal_outputs_round_like_torch():
    """bf16 stores round to nearest even like torch, fp32 subnormals included (not flushed)."""
    x = torch.randn(1, 1, 4, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    for b in (1e-39, -3e-39, 5e-40, 1.1e-38, 2.5, -0.0):
        bias = torch.tensor([b], dtype=torch.float32)
        # weight 0: y = 0 * xhat + bias, the fp32 bias rounded to bf16
        y = instance_norm(x, weight=torch.zeros(1), bias=bias, backend="cpu")
        assert torch.equal(y, bias.expand(x.shape).bfloat16()), b


needs_thp = pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_HUGEPAGE"), reason="no MADV_HUGEPAGE here")


@needs_thp
@pytest.mark.parametrize("shape", [(2, 3, 37, 70), (2, 3, 4, 5, 6)], ids=["4d", "5d"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_huge_page_outputs_equal_plain_ones(shape, layout, monkeypatch):
    """Large outputs come from huge-page-advised mappings: same strides, same bits, freed with the
    tensor. The threshold is lowered so that small tensors take that path."""
    from instyle.ops.cpu import instance_norm as cpu_backend

    x = _make(shape, layout)
    grad_out = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    plain = _run(x, "cpu", True, True, True, grad_out)
    monkeypatch.setattr(cpu_backend, "HUGE_PAGE_MIN_BYTES", 0)
    huge = _run(x, "cpu", True, True, True, grad_out)
    assert huge[0].stride() == plain[0].stride() and huge[1]["x"].stride() == plain[1]["x"].stride()
    assert torch.equal(huge[0], plain[0])
    for name in plain[1]:
        assert torch.equal(huge[1][name], plain[1][name]), name
    assert not huge[0].untyped_storage().resizable(), "the output did not come from a mapping"


@needs_thp
def test_huge_page_outputs_are_unmapped_when_freed(monkeypatch):
    from instyle.ops.cpu import instance_norm as cpu_backend

    monkeypatch.setattr(cpu_backend, "HUGE_PAGE_MIN_BYTES", 0)
    x = _make((1, 4, 256, 256), "contiguous")  # 1 MiB outputs

    def mapped_mib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) / 1024

    instance_norm(x, backend="cpu")  # load the kernels first
    before = mapped_mib()
    outputs = [instance_norm(x, backend="cpu") for _ in range(32)]
    assert mapped_mib() >= before + 30
    del outputs
    assert mapped_mib() <= before + 2


@pytest.fixture(scope="module")
def portable_library(tmp_path_factory):
    """The kernels built with -DINSTYLE_PORTABLE: the 16-float struct a CPU without AVX-512 runs."""
    import ctypes
    import subprocess

    from instyle.ops.cpu import build

    cxx = build._compiler()
    if cxx is None or build.load() is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("portable") / "instance_norm.so"
    flags = ["-O1" if flag == "-O3" else flag for flag in build.FLAGS]  # -O3 takes minutes for the lane loops
    subprocess.run([cxx, *flags, "-DINSTYLE_PORTABLE", str(build.SOURCE), "-o", str(out)], check=True)
    lib = ctypes.CDLL(str(out))
    build._declare(lib)
    return lib


@pytest.mark.parametrize("shape", [(2, 3, 37, 70), (2, 7, 9, 13), (2, 200, 11, 9), (1, 3, 67, 71)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_portable_build_gives_the_same_bits(shape, dtype, portable_library, monkeypatch):
    """Built without AVX-512, the kernels give the bits the vector build gives, in both layouts."""
    from instyle.ops.cpu import build

    for layout in ("contiguous", "channels_last"):
        x = _make(shape, layout, dtype)
        grad_out = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        native = _run(x, "cpu", True, True, True, grad_out)
        with monkeypatch.context() as patch:
            patch.setattr(build, "load", lambda: portable_library)
            portable = _run(x, "cpu", True, True, True, grad_out)
        assert torch.equal(portable[0], native[0]), layout
        for name in native[1]:
            assert torch.equal(portable[1][name], native[1][name]), (layout, name)


def test_launch_signatures_match_the_cpp_source():
    """build.SIGNATURES names each C parameter in the order instance_norm.cpp declares them."""
    import re

    from instyle.ops.cpu import build

    source = build.SOURCE.read_text()
    extern = source[source.index('extern "C" {') :]
    for name, (_, params) in build.SIGNATURES.items():
        declared = re.search(rf"\b{name}\(([^)]*)\)", extern).group(1)
        c_names = [re.split(r"[\s*]+", p.strip())[-1] for p in declared.split(",") if p.strip()]
        assert [n for n, _ in params] == c_names, name


def test_launch_names_a_missing_or_unexpected_argument():
    from instyle.ops.cpu import build

    with pytest.raises(TypeError, match=r"missing arguments \['nt'\], unexpected arguments \['threads'\]"):
        build.launch(
            "instyle_instance_norm_bwd", dtype=0, cl=0, dy=None, x=None, y=None, mean=None, rstd=None,
            exponent=None, w=None, dx=None, dr=None, dw=None, db=None, N=0, C=0, S=0, stats=0, relu=0, threads=1,
        )  # fmt: skip


def test_eager_inference_skips_the_custom_op_and_dynamo():
    """Eager calls that record no graph run the kernels directly: a process that only stylizes never
    imports torch._dynamo (the custom op's first call costs ~2 s of start-up), with the same output."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from instyle.functional import instance_norm\n"
        "x = torch.randn(2, 4, 9, 7); w = torch.nn.Parameter(torch.rand(4)); b = torch.nn.Parameter(torch.rand(4))\n"
        "with torch.no_grad():\n"
        "    y = instance_norm(x, weight=w, bias=b, activation='relu', backend='cpu')\n"
        "    z = instance_norm(x.bfloat16().contiguous(memory_format=torch.channels_last), backend='cpu')\n"
        "assert 'torch._dynamo' not in sys.modules, 'dynamo imported'\n"
        "ref = instance_norm(x, weight=w, bias=b, activation='relu', backend='reference')\n"
        "assert torch.allclose(y, ref, atol=1e-5), (y - ref).abs().max()\n"
        "assert z.is_contiguous(memory_format=torch.channels_last)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_graph_recording_eager_calls_skip_the_ops_dispatch_and_match_the_op(monkeypatch):
    """With gradients wanted, eager calls run the kernels through _EagerFunction (the op's own
    setup_context and backward, without its dispatch); under a dispatch mode, as when torch.compile
    traces, the custom op and its registered autograd run. Both give the same bits."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from instyle.ops.cpu import instance_norm as module

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    direct, eager = [], []
    real, real_eager = module._forward_kernels, module._EagerFunction

    class Eager:
        @staticmethod
        def apply(*inputs):
            eager.append(1)
            return real_eager.apply(*inputs)

    monkeypatch.setattr(module, "_forward_kernels", lambda *a: direct.append(1) or real(*a))
    monkeypatch.setattr(module, "_EagerFunction", Eager)
    x = torch.randn(2, 3, 6, 6)
    weight, bias = torch.randn(3), torch.randn(3)
    grads = []
    for mode in (None, Recorder()):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        with mode or contextlib.nullcontext():
            y = instance_norm(leaves[0], weight=leaves[1], bias=leaves[2], backend="cpu", activation="relu")
            y.backward(torch.ones_like(y))
        grads.append([y.detach()] + [t.grad for t in leaves])
        if mode is None:
            assert eager == [1] and direct == []
        else:
            assert any("instance_norm_cpu_fwd" in op for op in mode.ops), mode.ops
            assert any("instance_norm_cpu_bwd" in op for op in mode.ops), mode.ops
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert eager == [1]  # not under the mode
    with torch.no_grad():
        instance_norm(x, backend="cpu")
    assert direct == [1]
