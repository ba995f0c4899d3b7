"""instance_norm and InstanceNorm*d: conformance with torch, and the cases torch gets wrong.

Every test taking the ``backend`` fixture runs once per backend that runs on CPU here.
"""

import copy
import pickle

import pytest
import torch

import instyle
from instyle import functional as F
from instyle import nn as inn

torch.manual_seed(0)

MODULES = {1: (torch.nn.InstanceNorm1d, inn.InstanceNorm1d), 2: (torch.nn.InstanceNorm2d, inn.InstanceNorm2d),
           3: (torch.nn.InstanceNorm3d, inn.InstanceNorm3d)}

# The configurations torch's own module tests use (common_nn), per dimensionality.
CONFIGS = [
    pytest.param({}, id="default"),
    pytest.param({"track_running_stats": True}, id="tracking_stats"),
    pytest.param({"affine": True}, id="affine"),
    pytest.param({"affine": True, "bias": False}, id="affine_no_bias"),
    pytest.param({"affine": True, "track_running_stats": True, "momentum": 0.3}, id="affine_tracking_momentum"),
]
SHAPES = {
    1: [(4, 3, 15), (3, 15)],  # batched; no batch dim
    2: [(2, 3, 6, 7), (3, 5, 9)],  # odd, non-power-of-two plane
    3: [(2, 3, 4, 5, 3), (3, 4, 2, 3)],
}


def _randomize_affine(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))


def _pair(dim, config, backend):
    torch_cls, our_cls = MODULES[dim]
    ref = torch_cls(3, **config)
    _randomize_affine(ref)
    ours = our_cls(3, **config, backend=backend)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "no_batch_dim"])
def test_module_matches_torch(dim, config, batched, backend):
    ref, ours = _pair(dim, config, backend)
    shape = SHAPES[dim][0 if batched else 1]
    for training in (True, True, False, True, False):  # train/eval switches
        ref.train(training)
        ours.train(training)
        x = torch.randn(shape) * 3 + 1
        x_ref = x.clone().requires_grad_()
        x_ours = x.clone().requires_grad_()
        y_ref, y_ours = ref(x_ref), ours(x_ours)
        torch.testing.assert_close(y_ours, y_ref, atol=2e-5, rtol=1e-5)
        grad = torch.randn_like(y_ref)  # one grad_output shared by both
        y_ref.backward(grad)
        y_ours.backward(grad)
        torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=5e-5, rtol=1e-4)
        for name, p in ref.named_parameters():
            torch.testing.assert_close(dict(ours.named_parameters())[name].grad, p.grad, atol=5e-5, rtol=1e-4)
        if ref.track_running_stats:
            torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-6, rtol=1e-5)
        ref.zero_grad()
        ours.zero_grad()


@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_round_trips_both_ways(config):
    ref, ours = _pair(2, config, "auto")
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, t in ref.state_dict().items():
        assert ours.state_dict()[name].shape == t.shape and ours.state_dict()[name].dtype == t.dtype
    back = torch.nn.InstanceNorm2d(3, **config)
    back.load_state_dict(ours.state_dict())  # strict, our checkpoint into torch
    for name, t in back.state_dict().items():
        torch.testing.assert_close(t, ours.state_dict()[name])
    assert isinstance(ours, torch.nn.InstanceNorm2d)


def test_momentum_none_is_a_cumulative_average(backend):
    # torch documents momentum=None as a cumulative average but silently uses 0 for instance
    # norm (its running stats never move); instyle does what the documentation says.
    layer = inn.InstanceNorm2d(3, momentum=None, track_running_stats=True, backend=backend)
    batches = [torch.randn(2, 3, 5, 5) * (i + 1) + i for i in range(4)]
    for x in batches:
        layer(x)
    means = torch.stack([x.mean(dim=(2, 3)).mean(0) for x in batches]).mean(0)
    variances = torch.stack([x.var(dim=(2, 3), correction=1).mean(0) for x in batches]).mean(0)
    torch.testing.assert_close(layer.running_mean, means, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.running_var, variances, atol=1e-4, rtol=1e-5)
    assert int(layer.num_batches_tracked) == 4


def _oracle(x, **kwargs):
    return F.instance_norm(x.double(), backend="reference", **kwargs)


@pytest.mark.parametrize(
    "offset, atol",
    [(1e3, 1e-4), (1e4, 2e-3)],  # the figures; a one-pass E[x^2]-E[x]^2 gives 0.29 and NaN
)
def test_shifted_means_fp32(offset, atol, backend):
    x = offset + torch.randn(2, 3, 31, 33)
    y = F.instance_norm(x, backend=backend)
    assert (y.double() - _oracle(x)).abs().max() <= atol


def test_fp16_around_200_is_finite_and_correct(backend):
    x = (200 + 50 * torch.randn(2, 3, 16, 16)).half()  # x^2 overflows fp16
    y = F.instance_norm(x, backend=backend)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    # fp16 rounding of outputs up to ~4 in magnitude: 2^-9 relative.
    assert (y.double() - _oracle(x)).abs().max() <= 1e-2


@pytest.mark.parametrize("magnitude", [1e19, 1e25, 1e30])
def test_huge_magnitudes_are_correct_not_zeros(magnitude, backend):
    x = magnitude * torch.randn(2, 3, 8, 8)  # torch returns zeros here
    y = F.instance_norm(x, backend=backend)
    assert torch.isfinite(y).all()
    assert (y.double() - _oracle(x)).abs().max() <= 1e-4
    assert y.abs().max() > 1


# --- the edge of fp32 (issue #17, item 6): every finite input, against float64 ground truth ---
TINY = 2.0**-149  # the smallest fp32 subnormal: outputs and gradients below ~1e-38 are that coarse


def _edge_input(case):
    """Finite fp32 inputs whose fp32 statistics overflow (or underflow, with eps=0)."""
    g = torch.Generator().manual_seed(3)
    if case == "max_2e38":  # the figure: 512 values, max |x| = 2e38
        x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
        return (x / x.abs().max() * 2e38).float()
    if case == "pair_3e38":  # +-3e38 among 14 zeros: +-sqrt(8) = +-2.83 there, zeros elsewhere
        x = torch.zeros(2, 3, 4, 4)
        x[0, 1, 0, 0], x[0, 1, 2, 3] = 3e38, -3e38
        return x
    if case == "one_against_many":  # mean -2.6e38: x - mean overflows for the one 3e38
        x = torch.full((1, 2, 4, 4), -3e38)
        x[:, :, 1, 2] = 3e38
        x[:, 1] *= torch.linspace(0.5, 1, 16, dtype=torch.float64).reshape(4, 4).float()
        return x
    if case == "huge_and_tiny":  # magnitudes log-uniform over 1e-45 .. 3e38, random signs
        exponent = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64) * 83.5 - 45
        sign = torch.randint(0, 2, (2, 3, 6, 6), generator=g) * 2 - 1
        x = (sign * 10**exponent).float()
        x[1, 2] = x[1, 2] * 1e-40  # a plane of subnormals and zeros: y ~ x / sqrt(eps)
        return x
    if case == "few_large_planes":  # 3 planes of 11877: the cpu kernels split each plane over threads
        x = torch.randn(1, 3, 107, 111, generator=g, dtype=torch.float64)
        return (x / x.abs().max() * 3e38).float()
    if case == "constant_planes":  # output 0, grad_input w * (g - mean g) / sqrt(eps): finite at any size
        return torch.tensor([7.3, 1.1e30, 3e38, -2.9e38, 0.0, 1e-40]).reshape(1, 6, 1, 1).expand(1, 6, 5, 7).clone()
    if case == "tiny_eps0":  # squares of 1e-30 underflow fp32; with eps=0 the output is O(1)
        return (torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64) * 1e-30).float()
    raise ValueError(case)


EDGE_CASES = [("max_2e38", 1e-5), ("pair_3e38", 1e-5), ("one_against_many", 1e-5), ("huge_and_tiny", 1e-5),
              ("constant_planes", 1e-5), ("tiny_eps0", 0.0)]


def _assert_close_per_plane(got, want, rtol, what):
    """|got - want| <= rtol * max|want| of each (n, c) plane, plus two fp32 subnormal units."""
    assert got.shape == want.shape and torch.isfinite(got).all(), f"{what}: not finite"
    err = (got.double() - want).abs().flatten(2).amax(-1)
    bound = rtol * want.abs().flatten(2).amax(-1) + 2 * TINY
    assert (err <= bound).all(), f"{what}: error {err.max().item():.3g} (planes {(err > bound).nonzero().tolist()})"


def _edge_run(x, norm, eps, grad_out, dtype=torch.float32, device="cpu"):
    """Output and gradients of x, weight, bias for ``norm(x, weight, bias, eps)`` in ``dtype``, on CPU."""
    c = x.shape[1]
    w = torch.linspace(0.5, 1.5, c, dtype=torch.float64)
    b = torch.linspace(-1, 1, c, dtype=torch.float64)
    leaves = [t.detach().to(device, dtype).requires_grad_() for t in (x, w, b)]
    y = norm(*leaves, eps)
    y.backward(grad_out.to(device, dtype))
    return [y.detach().cpu()] + [t.grad.cpu() for t in leaves]


def check_edge_case(case, eps, norm, layout="contiguous", dtype=torch.float32, grad_input=True, device="cpu"):
    """``norm(x, weight, bias, eps)`` in ``dtype`` against stock torch in float64 (where nothing
    overflows, nor underflows for squares above 1e-45): output and gradients of x, weight, bias.
    Tolerances are relative to each plane's largest value: a few fp32 units, or bf16's rounding."""
    x = _edge_input(case).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got = _edge_run(x, norm, eps, grad_out, dtype, device)
    out_tol, grad_tol = (1e-5, 1e-4) if dtype == torch.float32 else (1e-2, 1e-2)

    def torch64(x, w, b, eps):  # shifted by each plane's first value, as float64's mean of 35 x 1e30 rounds
        first = x.detach().flatten(2)[..., :1].unsqueeze(-1)
        return torch.nn.functional.instance_norm(x - first, weight=w, bias=b, eps=eps)

    want = _edge_run(x, torch64, eps, grad_out, torch.float64)
    for name, g, w in zip(("output", "grad_input")[: 1 + grad_input], got, want):
        _assert_close_per_plane(g, w, out_tol if name == "output" else grad_tol, name)
    for name, g, w in zip(("grad_weight", "grad_bias"), got[2:], want[2:]):
        atol = grad_tol * max(1.0, w.abs().max().item())
        torch.testing.assert_close(g.double(), w, atol=atol, rtol=grad_tol, msg=name)
    return got


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case, eps", EDGE_CASES, ids=[case for case, _ in EDGE_CASES])
def test_fp32_edge_inputs_match_float64(case, eps, layout, backend):
    def norm(x, w, b, eps):
        return F.instance_norm(x, weight=w, bias=b, eps=eps, backend=backend)

    y = check_edge_case(case, eps, norm, layout)[0]
    if case == "pair_3e38":  # the numbers: +-sqrt(8) = +-2.83 (the weight of channel 1 is 1)
        torch.testing.assert_close(y[0, 1, 0, 0], torch.tensor(8**0.5), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(y[0, 1, 2, 3], torch.tensor(-(8**0.5)), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("case", ["max_2e38", "one_against_many"])
def test_bf16_edge_inputs_match_float64(case, backend):  # bf16 has fp32's range
    def norm(x, w, b, eps):
        return F.instance_norm(x, weight=w, bias=b, eps=eps, backend=backend)

    # Triton runs in its interpreter here (CPU tensors), which rounds fp32 to bf16 subnormals
    # wrongly (1e-38 to 8.2e-39); these gradients are ~1e-38: its grad_input is checked in fp32.
    check_edge_case(case, 1e-5, norm, dtype=torch.bfloat16, grad_input=backend != "triton")


def test_fp32_subnormal_planes_with_eps_zero_are_normalized(backend):
    x = (torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 1e-42).float()
    got = F.instance_norm(x, eps=0.0, backend=backend)
    want = torch.nn.functional.instance_norm(x.double(), eps=0.0)
    _assert_close_per_plane(got, want, 1e-5, "output")


def test_running_mean_of_huge_planes_is_finite_and_right(backend):
    x = torch.full((2, 4, 3, 5), -3e38)  # plane means ~ -2.6e38: their sum over the batch overflows fp32
    x[:, :, 0, 0] = 3e38
    x[1] *= 0.75
    mean, var = torch.zeros(4), torch.ones(4)
    F.instance_norm(x, mean, var, momentum=0.5, backend=backend)
    want = x.double().mean(dim=(0, 2, 3)) * 0.5
    torch.testing.assert_close(mean.double(), want, rtol=1e-6, atol=0)
    assert not torch.isnan(var).any()  # variances ~1e76: inf, as the true value is beyond fp32


@pytest.mark.parametrize("shape", [(2, 4, 0, 8), (0, 4, 8, 8), (2, 0, 8, 8), (2, 4, 0)], ids=str)
@pytest.mark.parametrize("use_input_stats", [True, False], ids=["train", "eval"])
def test_empty_inputs_give_empty_outputs_and_grads_like_torch(shape, use_input_stats, backend):
    c = shape[1]
    x = torch.randn(shape, requires_grad=True)
    w, b = torch.randn(c, requires_grad=True), torch.randn(c, requires_grad=True)
    running = (torch.randn(c), torch.rand(c) + 0.5)
    before = [t.clone() for t in running]
    y = F.instance_norm(x, *running, w, b, use_input_stats=use_input_stats, backend=backend)
    expected = torch.nn.functional.instance_norm(torch.randn(shape), use_input_stats=use_input_stats,
                                                 *[t.clone() for t in running])
    assert y.shape == expected.shape == x.shape and y.dtype == x.dtype
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros(c)) and torch.equal(b.grad, torch.zeros(c))
    for got, old in zip(running, before):  # no data, no update (as torch)
        assert torch.equal(got, old)


def test_module_with_an_empty_plane_updates_nothing(backend):
    layer = inn.InstanceNorm2d(4, affine=True, track_running_stats=True, momentum=None, backend=backend)
    y = layer(torch.randn(2, 4, 0, 8))
    assert y.shape == (2, 4, 0, 8)
    assert int(layer.num_batches_tracked) == 0  # an empty batch is not a batch of the average
    assert torch.equal(layer.running_mean, torch.zeros(4)) and torch.equal(layer.running_var, torch.ones(4))
    layer.eval()
    assert layer(torch.randn(2, 4, 0, 8)).shape == (2, 4, 0, 8)


@pytest.mark.parametrize("case", ["max_2e38", "pair_3e38", "constant_planes"])
def test_adain_style_statistics_of_huge_planes(case, backend):
    style = _edge_input(case)
    mean, std = F.calc_mean_std(style)  # std was inf where var overflows fp32 (the true std fits)
    style64 = style.double()
    mean64 = style64.mean(dim=(2, 3))
    var64 = (style64 - style64[:, :, :1, :1]).var(dim=(2, 3), correction=0)  # shifted: exact for constants
    torch.testing.assert_close(mean.double(), mean64, rtol=1e-6, atol=1e-6 * style.abs().max().item())
    torch.testing.assert_close(std.double(), (var64 + 1e-5).sqrt(), rtol=1e-6, atol=0)
    content = torch.randn(style.shape[:2] + (3, 5))
    y = inn.AdaIN(backend=backend)(content, style)
    assert torch.isfinite(y).all()
    assert inn.AdaIN(backend=backend)(torch.randn(style.shape[:2] + (0, 5)), style).shape == style.shape[:2] + (0, 5)


def test_empty_batch_with_affine_gives_empty_output_and_zero_grads(backend):
    layer = inn.InstanceNorm2d(3, affine=True, track_running_stats=True, backend=backend)
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert torch.equal(layer.weight.grad, torch.zeros(3)) and torch.equal(layer.bias.grad, torch.zeros(3))
    assert torch.equal(layer.running_mean, torch.zeros(3))  # no data, no update


@pytest.mark.parametrize("affine", [False, True])
def test_channels_last_output_stays_channels_last(affine, backend):
    layer = inn.InstanceNorm2d(8, affine=affine, backend=backend)
    _randomize_affine(layer)
    x = torch.randn(2, 8, 7, 9)
    y_cl = layer(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, layer(x), atol=1e-6, rtol=1e-6)


def test_non_contiguous_input_gives_same_values(backend):
    base = torch.randn(2, 6, 9, 10)
    x = base[:, ::2, :, 1:]  # strided in C and W
    assert not x.is_contiguous()
    torch.testing.assert_close(F.instance_norm(x, backend=backend), F.instance_norm(x.contiguous(), backend=backend))


def test_nan_stays_in_its_plane(backend):
    x = torch.randn(2, 3, 6, 6)
    clean = F.instance_norm(x, backend=backend)
    x[1, 2, 3, 3] = float("nan")
    y = F.instance_norm(x, backend=backend)
    assert torch.isnan(y[1, 2]).all()
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False
    assert torch.equal(y[mask], clean[mask])  # every other plane bit-identical


def test_constant_plane_is_finite_and_equals_bias(backend):
    x = torch.full((2, 3, 4, 4), 7.0)
    bias = torch.tensor([0.5, -1.0, 2.0])
    y = F.instance_norm(x, weight=torch.ones(3) * 3, bias=bias, backend=backend)
    torch.testing.assert_close(y, bias.view(1, 3, 1, 1).expand_as(y))
    y0 = F.instance_norm(x, eps=0.0, backend=backend)  # eps=0: defined as 0, not NaN
    assert torch.equal(y0, torch.zeros_like(y0))


def test_single_spatial_element(backend):
    x = torch.randn(2, 3, 1, 1)
    with pytest.raises(ValueError, match=r"more than 1 spatial element.*\[2, 3, 1, 1\]"):
        F.instance_norm(x, backend=backend)
    layer = inn.InstanceNorm2d(3, track_running_stats=True, backend=backend).eval()
    torch.testing.assert_close(layer(x), x / (1 + 1e-5) ** 0.5)  # running stats 0 and 1


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(ValueError, match=r"InstanceNorm2d expected a 3D .* or 4D .* got 5D"):
        inn.InstanceNorm2d(3)(torch.randn(1, 3, 2, 2, 2))
    with pytest.raises(ValueError, match=r"at least 3 dimensions.*got 2D"):
        F.instance_norm(torch.randn(3, 4))
    with pytest.raises(TypeError, match="floating-point input, got torch.int64"):
        F.instance_norm(torch.ones(1, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\).*got \(4,\)"):
        F.instance_norm(torch.randn(1, 3, 4, 4), weight=torch.ones(4))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\).*got \(3, 1\)"):
        F.instance_norm(torch.randn(1, 3, 4, 4), bias=torch.ones(3, 1))
    with pytest.raises(ValueError, match="residual must have the input's shape"):
        F.instance_norm(torch.randn(1, 3, 4, 4), residual=torch.randn(1, 3, 4, 5))
    with pytest.raises(ValueError, match="activation must be one of"):
        F.instance_norm(torch.randn(1, 3, 4, 4), activation="gelu")
    with pytest.raises(ValueError, match="unknown backend 'cuda-magic'"):
        F.instance_norm(torch.randn(1, 3, 4, 4), backend="cuda-magic")
    with pytest.raises(ValueError, match=r"match num_features \(3\), but got: 4"):
        inn.InstanceNorm2d(3, affine=True)(torch.randn(1, 4, 2, 2))
    with pytest.warns(UserWarning, match="does not match num_features"):
        inn.InstanceNorm2d(3)(torch.randn(1, 4, 2, 2))


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("with_residual", [False, True])
def test_fusions_match_unfused_torch(activation, with_residual, backend):
    x = torch.randn(2, 4, 5, 7, requires_grad=True)
    w = torch.randn(4, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    r = torch.randn(2, 4, 5, 7, requires_grad=True) if with_residual else None
    y = F.instance_norm(x, weight=w, bias=b, activation=activation, residual=r, backend=backend)
    expected = torch.nn.functional.instance_norm(x, weight=w, bias=b)
    if r is not None:
        expected = expected + r
    if activation == "relu":
        expected = torch.relu(expected)
    torch.testing.assert_close(y, expected, atol=2e-5, rtol=1e-5)
    grad = torch.randn_like(y)
    inputs = [x, w, b] + ([r] if r is not None else [])
    ours = torch.autograd.grad(y, inputs, grad)
    theirs = torch.autograd.grad(expected, inputs, grad)
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e, atol=5e-5, rtol=1e-4)


def test_gradcheck_and_gradgradcheck_float64():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    r = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b, r):
        return F.instance_norm(x, weight=w, bias=b, residual=r, backend="reference")

    assert torch.autograd.gradcheck(fn, (x, w, b, r))
    assert torch.autograd.gradgradcheck(fn, (x, w, b, r))


def test_backward_twice_is_bitwise_identical_under_deterministic_algorithms(backend):
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    w = torch.randn(8, requires_grad=True)
    grad = torch.randn(2, 8, 16, 16)
    torch.use_deterministic_algorithms(True)
    try:
        grads = [torch.autograd.grad(F.instance_norm(x, weight=w, backend=backend), (x, w), grad) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_deepcopy_pickle_and_repr():
    layer = inn.InstanceNorm2d(4, affine=True, track_running_stats=True, backend="reference")
    _randomize_affine(layer)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert type(clone) is inn.InstanceNorm2d and clone.backend == "reference"
        x = torch.randn(2, 4, 3, 3)
        torch.testing.assert_close(clone(x), layer(x))
    assert repr(layer) == (
        "InstanceNorm2d(4, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True, backend='reference')"
    )


def test_drops_into_a_torch_model_with_no_other_change():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.InstanceNorm2d(8, affine=True), torch.nn.ReLU())
    ours = copy.deepcopy(model)
    ours[1] = inn.InstanceNorm2d(8, affine=True)
    ours.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 10, 10)
    torch.testing.assert_close(ours(x), model(x), atol=1e-5, rtol=1e-5)


def test_model_with_the_layer_compiles():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), inn.InstanceNorm2d(4, affine=True), torch.nn.ReLU())
    x = torch.randn(2, 3, 12, 12)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


def test_public_api():
    assert instyle.InstanceNorm2d is inn.InstanceNorm2d
    assert instyle.instance_norm is F.instance_norm
    assert "reference" in F.available_backends()
