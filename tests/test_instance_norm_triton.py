"""The Triton instance norm against the float64 reference: outputs and every gradient.

Without CUDA the kernels run on CPU tensors in Triton's interpreter, which TRITON_INTERPRET=1
turns on only if it is set before triton is first imported: the repository's root conftest.py
sets it on machines without CUDA, and this file does too when it is run first. Shapes stay small.
INSTYLE_TEST_DEVICE=cuda runs the same tests compiled on a GPU (benchmarks/gpu_session.sh, PHASE=kernels).
"""

import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported, where it can be

triton = pytest.importorskip("triton")

from instyle import functional as F  # noqa: E402
from instyle.ops.reference import update_running_stats  # noqa: E402
from instyle.ops.triton import instance_norm as tin  # noqa: E402

from .test_instance_norm import EDGE_CASES, check_edge_case  # noqa: E402

DEVICE = torch.device(os.environ.get("INSTYLE_TEST_DEVICE", "cpu"))
if DEVICE.type == "cpu" and not tin.interpreter_ready():
    pytest.skip("triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)

# (shape, max_tile, min_programs, why). max_tile / min_programs 0 / -1 are the launcher's defaults.
SHAPES = [
    pytest.param((2, 3, 7, 9), 0, -1, id="odd_plane_one_tile"),  # 63 positions, padded tile
    pytest.param((2, 3, 10, 10), 32, 0, id="plane_larger_than_a_block"),  # Chan merge over 8-wide tiles
    pytest.param((1, 2, 19, 21), 64, 16, id="few_planes_split_reduction"),  # chunks combined by Chan
    pytest.param((3, 4, 1, 2), 0, -1, id="1x2_planes"),  # the smallest plane with input statistics
    pytest.param((2, 37, 3, 5), 0, -1, id="many_small_planes"),  # several channels per program
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _leaves(tensors, dtype=None):
    return [None if t is None else t.detach().to(dtype or t.dtype).clone().requires_grad_() for t in tensors]


def _run(fn, tensors, grad_output):
    """Output and gradients of (x, weight, bias, residual) in float64, for one shared grad_output."""
    y = fn(*tensors)
    y.backward(grad_output.to(y.dtype))
    return [y.detach().double()] + [None if t is None else t.grad.double() for t in tensors]


def _errors(got, want):
    return [None if g is None else (g - w).abs().max().item() for g, w in zip(got, want)]


def _torch_lp(x, weight, bias, residual, relu):
    """Stock torch in the test dtype: the baseline error that our tolerance is measured against."""
    y = torch.nn.functional.instance_norm(x, weight=weight, bias=bias)
    if residual is not None:
        y = y + residual
    return torch.relu(y) if relu else y


def _reference(x, weight, bias, residual, relu):
    activation = "relu" if relu else None
    return F.instance_norm(x, weight=weight, bias=bias, residual=residual, activation=activation, backend="reference")


def _check_against_reference(shape, dtype, affine, relu, with_residual, max_tile, min_programs, shift=0.0,
                             channels_last=False, device=DEVICE):
    gen = torch.Generator().manual_seed(hash((shape, affine, relu, with_residual)) % 2**31)
    x = (shift + torch.randn(shape, generator=gen)).to(dtype)
    c = shape[1]
    weight = torch.randn(c, generator=gen).to(dtype) if affine else None
    bias = torch.randn(c, generator=gen).to(dtype) if affine else None
    residual = torch.randn(shape, generator=gen).to(dtype) if with_residual else None
    grad_output = torch.randn(shape, generator=gen).to(dtype)
    inputs = [t if t is None else t.to(device) for t in (x, weight, bias, residual)]
    if channels_last:
        inputs[0] = inputs[0].contiguous(memory_format=torch.channels_last)

    def ours(x, weight, bias, residual):
        activation = "relu" if relu else None
        return tin.instance_norm_triton(x, None, None, weight, bias, True, 0.1, 1e-5, activation, residual,
                                        max_tile=max_tile, min_programs=min_programs)

    got = _run(ours, _leaves(inputs), grad_output.to(device))
    want = _run(lambda *t: _reference(*t, relu), _leaves(inputs, torch.float64), grad_output.to(device).double())
    base = _run(lambda *t: _torch_lp(*t, relu), _leaves(inputs), grad_output.to(device))
    names = ["output", "grad_input", "grad_weight", "grad_bias", "grad_residual"]
    ulp = torch.finfo(dtype).eps
    for name, err, base_err, w in zip(names, _errors(got, want), _errors(base, want), want):
        if w is None:
            continue
        # At most twice torch's own error on the same input, plus one unit of the dtype at the
        # quantity's magnitude scaled by the shift (x - mean loses log2(shift) bits in any kernel).
        tol = 2 * base_err + ulp * (1 + shift) * max(1.0, w.abs().max().item())
        assert err <= tol, f"{name}: error {err:.3g} > {tol:.3g} (torch's own error {base_err:.3g})"
    return got


@pytest.mark.parametrize("shape, max_tile, min_programs", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_affine_relu_residual_matches_reference(shape, max_tile, min_programs, dtype):
    _check_against_reference(shape, dtype, True, True, True, max_tile, min_programs)


@pytest.mark.parametrize("shape, max_tile, min_programs", SHAPES)
@pytest.mark.parametrize("affine, relu, with_residual", [(False, False, False), (True, False, False),
                                                         (False, True, True), (True, False, True)])
def test_fusion_combinations_match_reference(shape, max_tile, min_programs, affine, relu, with_residual):
    _check_against_reference(shape, torch.float32, affine, relu, with_residual, max_tile, min_programs)


@pytest.mark.parametrize("max_tile, min_programs", [(0, -1), (64, 0), (64, 16)], ids=["fused", "looped", "split"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_channels_last_read_in_place(max_tile, min_programs, dtype):
    got = _check_against_reference((2, 6, 9, 11), dtype, True, True, True, max_tile, min_programs, channels_last=True)
    assert got is not None


@pytest.mark.parametrize("max_tile, min_programs", [(0, -1), (64, 16)], ids=["fused", "split"])
@pytest.mark.parametrize("dtype, shift", [(torch.float32, 1e3), (torch.float32, 1e4), (torch.float16, 1e3),
                                          (torch.bfloat16, 1e3)], ids=str)
def test_shifted_means(max_tile, min_programs, dtype, shift):
    _check_against_reference((1, 3, 12, 13), dtype, True, True, True, max_tile, min_programs, shift=shift)


def test_weight_only_and_bias_only():
    x = torch.randn(2, 3, 5, 6, device=DEVICE)
    w = torch.randn(3, device=DEVICE)
    for weight, bias in ((w, None), (None, w)):
        y = F.instance_norm(x, weight=weight, bias=bias, backend="triton")
        want = _reference(x.double(), *(t if t is None else t.double() for t in (weight, bias)), None, False)
        torch.testing.assert_close(y.double(), want, atol=1e-5, rtol=1e-5)


def test_output_keeps_memory_format_and_non_contiguous_input_is_correct():
    x = torch.randn(2, 4, 6, 5, device=DEVICE)
    y = F.instance_norm(x.contiguous(memory_format=torch.channels_last), backend="triton")
    assert y.is_contiguous(memory_format=torch.channels_last)
    strided = torch.randn(2, 8, 6, 10, device=DEVICE)[:, ::2, :, ::2]  # spatial dims do not collapse
    want = _reference(strided.double(), None, None, None, False)
    torch.testing.assert_close(F.instance_norm(strided, backend="triton").double(), want, atol=1e-5, rtol=1e-5)
    permuted = torch.randn(2, 6, 5, 4, device=DEVICE).permute(0, 3, 1, 2)  # (N, C, H, W) view of NHWC
    want = _reference(permuted.double(), None, None, None, False)
    torch.testing.assert_close(F.instance_norm(permuted, backend="triton").double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 17), (1, 2, 3, 4, 5)], ids=["1d", "3d"])
def test_3d_and_5d_inputs(shape):
    _check_against_reference(shape, torch.float32, True, True, True, 0, -1)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # the variance of 1e30 planes is inf, as in torch
@pytest.mark.parametrize("max_tile, min_programs", [(0, -1), (64, 16)], ids=["fused", "split"])
@pytest.mark.parametrize("magnitude", [1e19, 1e30])
def test_huge_magnitudes_are_correct_not_zeros(max_tile, min_programs, magnitude):
    x = magnitude * torch.randn(1, 2, 12, 13, device=DEVICE)
    y = tin.instance_norm_triton(x, None, None, None, None, True, 0.1, 1e-5,
                                 max_tile=max_tile, min_programs=min_programs)
    want = _reference(x.double(), None, None, None, False)
    assert torch.isfinite(y).all() and (y.double() - want).abs().max() < 1e-4


# fused: one tile per plane; looped: tiles of 2 merged by Chan; split: chunks combined by a second kernel
MODES = pytest.mark.parametrize("max_tile, min_programs", [(0, -1), (8, 0), (8, 16)], ids=["fused", "looped", "split"])


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # variances beyond fp32 are inf, as in torch
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # rsqrt(0) of padded lanes with eps=0
@MODES
@pytest.mark.parametrize("case, eps", EDGE_CASES, ids=[case for case, _ in EDGE_CASES])
def test_fp32_edge_inputs_in_every_mode(case, eps, max_tile, min_programs):
    def norm(x, weight, bias, eps):
        return tin.instance_norm_triton(x, None, None, weight, bias, True, 0.1, eps,
                                        max_tile=max_tile, min_programs=min_programs)

    check_edge_case(case, eps, norm, device=DEVICE)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@MODES
def test_running_mean_of_huge_planes(max_tile, min_programs):
    x = torch.full((2, 2, 3, 5), -3e38, device=DEVICE)
    x[:, :, 0, 0] = 3e38
    mean, var = torch.zeros(2, device=DEVICE), torch.ones(2, device=DEVICE)
    tin.instance_norm_triton(x, mean, var, None, None, True, 1.0, 1e-5, max_tile=max_tile, min_programs=min_programs)
    torch.testing.assert_close(mean.double(), x.double().mean(dim=(0, 2, 3)), rtol=1e-6, atol=0)


def test_fp16_around_200():
    x = (200 + 50 * torch.randn(2, 3, 16, 16, device=DEVICE)).half()  # x^2 overflows fp16
    y = F.instance_norm(x, backend="triton")
    assert torch.isfinite(y).all() and (y.double() - _reference(x.double(), None, None, None, False)).abs().max() < 1e-2


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # rsqrt(0) with eps=0, defined as 0
def test_constant_plane_gives_bias_and_eps_zero_gives_no_nan():
    x = torch.full((1, 2, 4, 4), 3.0, device=DEVICE)
    bias = torch.tensor([0.5, -2.0], device=DEVICE)
    y = F.instance_norm(x, weight=torch.ones(2, device=DEVICE), bias=bias, backend="triton")
    torch.testing.assert_close(y, bias.view(1, 2, 1, 1).expand_as(x))
    assert not torch.isnan(F.instance_norm(x, eps=0.0, backend="triton")).any()


def test_nan_stays_in_its_plane():
    x = torch.randn(2, 3, 5, 5, device=DEVICE)
    clean = F.instance_norm(x, backend="triton")
    x[1, 2, 0, 0] = float("nan")
    y = F.instance_norm(x, backend="triton")
    assert torch.isnan(y[1, 2]).all()
    keep = torch.ones(2, 3, dtype=torch.bool)
    keep[1, 2] = False
    assert torch.equal(y[keep], clean[keep])


@pytest.mark.parametrize("affine", [False, True])
def test_eval_with_running_stats_and_its_gradients(affine):
    x = torch.randn(2, 3, 4, 5, device=DEVICE) * 2 + 1
    mean, var = torch.randn(3, device=DEVICE), torch.rand(3, device=DEVICE) + 0.5
    weight, bias = (torch.randn(3, device=DEVICE), torch.randn(3, device=DEVICE)) if affine else (None, None)
    grad = torch.randn_like(x)
    results = []
    for backend, dtype in (("triton", torch.float32), ("reference", torch.float64)):
        leaves = _leaves((x, weight, bias), dtype)
        y = F.instance_norm(leaves[0], mean.to(dtype), var.to(dtype), leaves[1], leaves[2], use_input_stats=False,
                            activation="relu", backend=backend)
        y.backward(grad.to(dtype))
        results.append([y.double()] + [None if t is None else t.grad.double() for t in leaves])
    for got, want in zip(*results):
        if want is not None:
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("max_tile, min_programs", [(0, -1), (64, 16)], ids=["fused", "split"])
def test_running_stats_update_like_reference(max_tile, min_programs):
    x = torch.randn(3, 2, 9, 10, device=DEVICE) * 3 + 2
    stats = {name: (torch.zeros(2, device=DEVICE), torch.ones(2, device=DEVICE)) for name in ("triton", "reference")}
    tin.instance_norm_triton(x, *stats["triton"], None, None, True, 0.3, 1e-5,
                             max_tile=max_tile, min_programs=min_programs)
    F.instance_norm(x, *stats["reference"], momentum=0.3, backend="reference")
    for got, want in zip(stats["triton"], stats["reference"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # update_running_stats is the one rule; check its semantics once here too (unbiased variance).
    rm, rv = torch.zeros(2, device=DEVICE), torch.ones(2, device=DEVICE)
    var, mean = torch.var_mean(x, dim=(2, 3), correction=0)
    update_running_stats(rm, rv, mean, var, 90, 0.3)
    torch.testing.assert_close(rv, 0.7 + 0.3 * x.var(dim=(2, 3), correction=1).mean(0))


def test_empty_batch_gives_empty_output_and_zero_grads():
    x = torch.randn(0, 3, 4, 4, device=DEVICE, requires_grad=True)
    weight = torch.randn(3, device=DEVICE, requires_grad=True)
    bias = torch.randn(3, device=DEVICE, requires_grad=True)
    y = F.instance_norm(x, weight=weight, bias=bias, backend="triton")
    y.sum().backward()
    assert y.shape == x.shape and torch.equal(weight.grad, torch.zeros(3, device=DEVICE))
    assert torch.equal(bias.grad, torch.zeros(3, device=DEVICE))


@pytest.mark.parametrize("max_tile, min_programs", [(0, -1), (64, 16)], ids=["fused", "split"])
def test_backward_is_deterministic(max_tile, min_programs):
    x = torch.randn(1, 3, 11, 12, device=DEVICE)
    weight = torch.randn(3, device=DEVICE)
    grad = torch.randn_like(x)
    runs = []
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(2):
            leaves = _leaves((x, weight))
            y = tin.instance_norm_triton(leaves[0], None, None, leaves[1], None, True, 0.1, 1e-5,
                                         max_tile=max_tile, min_programs=min_programs)
            y.backward(grad)
            runs.append([leaves[0].grad, leaves[1].grad])
    finally:
        torch.use_deterministic_algorithms(previous)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_supports():
    x = torch.randn(1, 2, 3, 3)
    interpreting = os.environ.get("TRITON_INTERPRET") == "1" and tin.interpreter_ready()
    assert tin.supports(x) == interpreting
    assert not tin.supports(x.double())
    assert not tin.supports(torch.randn(1, 2, 2, 2, 2, 2))
    if interpreting:
        assert F.select_backend("triton", x) == "triton"
        assert F.select_backend("auto", x) != "triton"  # auto prefers triton on CUDA only


def test_opcheck():
    x = torch.randn(2, 3, 4, 5, device=DEVICE, requires_grad=True)
    weight = torch.randn(3, device=DEVICE, requires_grad=True)
    bias = torch.randn(3, device=DEVICE, requires_grad=True)
    residual = torch.randn(2, 3, 4, 5, device=DEVICE, requires_grad=True)
    rm, rv = torch.zeros(3, device=DEVICE), torch.ones(3, device=DEVICE)
    fwd = torch.ops.instyle.instance_norm_triton_fwd.default
    torch.library.opcheck(fwd, (x, weight, bias, residual, None, None, True, 1e-5, True, 0, -1))
    torch.library.opcheck(fwd, (x.contiguous(memory_format=torch.channels_last), None, None, None, rm, rv,
                                False, 1e-5, False, 0, -1))
    y, mean, rstd, _, inv_scale = fwd(x, weight, None, None, None, None, True, 1e-5, True, 0, -1)
    bwd = torch.ops.instyle.instance_norm_triton_bwd.default
    torch.library.opcheck(bwd, (torch.randn_like(x), x.detach(), y.detach(), weight.detach(), mean, rstd,
                                inv_scale, True, True, True, 0, -1))


def test_model_compiles_fullgraph():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.weight = torch.nn.Parameter(torch.randn(3))
            self.bias = torch.nn.Parameter(torch.randn(3))

        def forward(self, x):
            h = F.instance_norm(self.conv(x), weight=self.weight, bias=self.bias, activation="relu", residual=x,
                                backend="triton")
            return h.sum()

    model = Block().to(DEVICE)
    x = torch.randn(2, 3, 6, 6, device=DEVICE)
    eager = model(x)
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # aot_eager traces dynamo and AOT autograd (fake tensors through the op) without a C++ compiler.
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager" if DEVICE.type == "cpu" else "inductor")
    out = compiled(x)
    out.backward()
    torch.testing.assert_close(out, eager)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g)


def test_kernels_compile_for_sm90_without_a_gpu():
    """Catches what the interpreter forgives (types, layouts, constexpr use) by compiling the
    launcher's variants to cubin, in a process where the interpreter is off."""
    if tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 3):
        pytest.skip("ASTSource takes constexprs by name from Triton 3.3")
    env = dict(os.environ, TRITON_INTERPRET="0")
    script = os.path.join(os.path.dirname(__file__), "instance_norm_triton_compile.py")
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(8, 64, 128, 128), (1, 3, 512, 512), (4, 128, 33, 31)],
                         ids=["fused", "split", "odd"])
def test_gpu_sizes_match_reference(shape, dtype):
    cuda = torch.device("cuda")
    _check_against_reference(shape, dtype, True, True, True, 0, -1, device=cuda)
    _check_against_reference(shape, dtype, True, True, True, 0, -1, channels_last=True, device=cuda)
