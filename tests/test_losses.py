"""Perceptual losses against float64 references, on a tiny stand-in encoder (no download needed)."""

import math

import pytest
import torch

from instyle.engine.losses import (
    PerceptualLoss,
    content_loss,
    gram_matrix,
    mean_std,
    style_loss,
    style_statistic,
    total_variation,
)


def gram_ref(features: torch.Tensor) -> torch.Tensor:
    n, c, h, w = features.shape
    f = features.double().reshape(n, c, h * w)
    return torch.einsum("nik,njk->nij", f, f) / (c * h * w)


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- the functions ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape",
    [
        (2, 8, 5, 7),  # odd spatial size
        (1, 64, 32, 32),  # a realistic early layer
        (3, 16, 1, 1),  # a single position
    ],
)
def test_gram_matrix_matches_float64(shape):
    features = torch.randn(shape)
    gram = gram_matrix(features)
    assert gram.dtype == torch.float32 and gram.shape == (shape[0], shape[1], shape[1])
    torch.testing.assert_close(gram.double(), gram_ref(features), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gram, gram.transpose(1, 2))  # BLAS sums (i, j) and (j, i) in different orders


def test_gram_matrix_is_fp32_for_bf16_features_and_under_autocast():
    features = torch.randn(2, 32, 16, 16).bfloat16()
    expected = gram_ref(features)  # of the bf16 values, exactly representable in fp64
    gram = gram_matrix(features)
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram.double(), expected, rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram_autocast = gram_matrix(features.float())
    assert gram_autocast.dtype == torch.float32
    torch.testing.assert_close(gram_autocast.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gram_matrix_reads_channels_last_features_in_place(channels_last):
    features = torch.randn(2, 8, 6, 10)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gram_matrix(features).double(), gram_ref(features), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_gram_gradient_on_the_cpu_is_one_bf16_gemm_within_its_rounding(channels_last):
    """bf16 features (the VGG under CPU autocast): the Gram in fp32, exact for the bf16 values, and its
    gradient dF = (dG + dG^T) F from one bf16 GEMM with fp32 accumulation, within bf16 rounding of the
    float64 gradient, in the features' dtype and layout."""
    features = torch.randn(2, 16, 8, 12).bfloat16()
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(2, 16, 16)
    features.requires_grad_()
    (gram_matrix(features) * weight).sum().backward()
    exact = features.detach().double().requires_grad_()
    (gram_ref(exact) * weight.double()).sum().backward()
    assert features.grad.dtype == torch.bfloat16
    assert features.grad.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(features.grad.double(), exact.grad, rtol=1e-2, atol=1e-2 * exact.grad.abs().max().item())


@pytest.mark.parametrize("channels_last", [False, True])
def test_half_gram_function_gradients_with_the_position_split(channels_last, monkeypatch):
    """The CUDA Gram of 16-bit features (a custom autograd function, split over positions for
    channels_last features) against autograd's numerical Jacobian, run on the CPU in float64."""
    import instyle.engine.losses.gram as losses

    monkeypatch.setattr(losses, "GRAM_SPLIT_POSITIONS", 8)  # 32 positions: 4 chunks
    features = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    assert losses._split_chunks(32) == 4
    features.requires_grad_()
    assert torch.autograd.gradcheck(losses._HalfGram.apply, (features,))
    torch.testing.assert_close(losses._HalfGram.apply(features) / (3 * 32), gram_ref(features.detach()))


def test_mean_std_matches_float64_with_shifted_means():
    features = 1e3 + torch.randn(2, 4, 16, 16)  # a one-pass E[x^2] - E[x]^2 loses most digits here
    stats = mean_std(features, eps=0.0)
    flat = features.double().flatten(2)
    torch.testing.assert_close(stats[:, 0].double(), flat.mean(2), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(stats[:, 1].double(), flat.std(2, correction=0), rtol=1e-3, atol=1e-4)
    assert style_statistic(features, "mean_std").shape == (2, 2, 4)
    with pytest.raises(ValueError, match="style_stat"):
        style_statistic(features, "histogram")


def test_content_loss_is_mse_and_broadcasts_the_target():
    features, target = torch.randn(3, 4, 5, 5), torch.randn(1, 4, 5, 5)
    expected = (features.double() - target.double()).square().mean()
    torch.testing.assert_close(content_loss(features, target).double(), expected)
    assert float(content_loss(features, features)) == 0
    with pytest.raises(ValueError, match="content features"):
        content_loss(features, torch.randn(1, 4, 6, 5))


def test_style_loss_broadcasts_one_target_over_the_batch():
    one = torch.randn(1, 8, 6, 6)
    target = gram_matrix(torch.randn(1, 8, 9, 9))
    single = style_loss(one, target)
    batch = style_loss(one.expand(3, -1, -1, -1), target)
    torch.testing.assert_close(batch, single)
    expected = (gram_ref(one) - target.double()).square().mean()
    torch.testing.assert_close(single.double(), expected, rtol=1e-5, atol=1e-12)
    assert float(style_loss(one, gram_matrix(one))) == 0


@pytest.mark.parametrize("p", [1, 2])
def test_total_variation_matches_a_loop(p):
    images = rand(2, 3, 5, 6)
    x = images.double()
    dh = [abs(float(x[n, c, i + 1, j] - x[n, c, i, j])) ** p for n in range(2) for c in range(3) for i in range(4) for j in range(6)]
    dw = [abs(float(x[n, c, i, j + 1] - x[n, c, i, j])) ** p for n in range(2) for c in range(3) for i in range(5) for j in range(5)]
    expected = sum(dh) / len(dh) + sum(dw) / len(dw)
    assert math.isclose(float(total_variation(images, p=p)), expected, rel_tol=1e-5)
    assert float(total_variation(torch.full((1, 3, 4, 4), 0.3), p=p)) == 0
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        total_variation(images, p=3)


# --- PerceptualLoss --------------------------------------------------------------------------------------------
def make_loss(encoder, **kw):
    options = dict(content_layers=["relu2_1"], style_layers=["relu1_1", "relu2_1", "relu3_1"], content_weight=1.0,
                   style_weight=10.0, tv_weight=0.1)  # fmt: skip
    options.update(kw)
    return PerceptualLoss(encoder, **options)


def test_total_is_the_weighted_sum_of_the_terms(tiny_encoder):
    loss_fn = make_loss(tiny_encoder, layer_weights={"relu3_1": 2.0})
    style, content, x = rand(1, 3, 24, 24, seed=1), rand(2, 3, 16, 16, seed=2), rand(2, 3, 16, 16, seed=3)
    loss_fn.set_style(style)
    total, terms = loss_fn(x.requires_grad_(), content, per_layer=True)
    assert set(terms) == {"content", "style", "tv", "content/relu2_1", "style/relu1_1", "style/relu2_1", "style/relu3_1"}

    fx, fc, fs = tiny_encoder(x), tiny_encoder(content), tiny_encoder(style)
    expected_content = (fx["relu2_1"].double() - fc["relu2_1"].double()).square().mean()
    expected_style = sum(
        w * (gram_ref(fx[name]) - gram_ref(fs[name])).square().mean()
        for name, w in (("relu1_1", 1.0), ("relu2_1", 1.0), ("relu3_1", 2.0))
    )
    expected_tv = total_variation(x.double())
    torch.testing.assert_close(terms["content"].double(), expected_content, rtol=1e-5, atol=0)
    torch.testing.assert_close(terms["style"].double(), 10.0 * expected_style, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["tv"].double(), 0.1 * expected_tv, rtol=1e-5, atol=0)
    torch.testing.assert_close(total, terms["content"] + terms["style"] + terms["tv"])
    assert total.requires_grad and not any(t.requires_grad for t in terms.values())


def test_the_mean_std_term_joins_the_gram_term_in_the_style_term(tiny_encoder):
    """``mean_std_weight``: the style term also holds the MSE of the per-channel means and stds (what
    AdaIN's loss and ``instyle score`` compare); stored Gram targets carry none, so without the image's
    statistics the loss refuses to run rather than silently drop the term."""
    loss_fn = make_loss(tiny_encoder, mean_std_weight=3.0, layer_weights={"relu3_1": 2.0})
    style, content, x = rand(1, 3, 24, 24, seed=1), rand(2, 3, 16, 16, seed=2), rand(2, 3, 16, 16, seed=3)
    loss_fn.set_style(style)
    _, terms = loss_fn(x, content, per_layer=True)
    fx, fs = tiny_encoder(x), tiny_encoder(style)

    def moments(f):
        f = f.double().flatten(2)
        return torch.stack([f.mean(2), (f.var(2, correction=0) + 1e-5).sqrt()], dim=1)

    weights = (("relu1_1", 1.0), ("relu2_1", 1.0), ("relu3_1", 2.0))
    gram = sum(w * (gram_ref(fx[n]) - gram_ref(fs[n])).square().mean() for n, w in weights)
    moment = sum(w * (moments(fx[n]) - moments(fs[n])).square().mean() for n, w in weights)
    torch.testing.assert_close(terms["style"].double(), 10.0 * gram + 3.0 * moment, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["style_mean_std/relu2_1"].double(), (moments(fx["relu2_1"]) - moments(fs["relu2_1"])).square().mean(), rtol=1e-4, atol=0)
    # the moments alone (style_weight 0) still count
    only = make_loss(tiny_encoder, style_weight=0.0, mean_std_weight=3.0, layer_weights={"relu3_1": 2.0})
    only.set_style(style)
    torch.testing.assert_close(only(x, content).terms["style"].double(), 3.0 * moment, rtol=1e-4, atol=0)
    # stored Gram targets without moments: refused by name; with them, the same loss as set_style's
    grams = {n: loss_fn.style_target(n) for n in loss_fn.style_layers}
    stored = make_loss(tiny_encoder, mean_std_weight=3.0, layer_weights={"relu3_1": 2.0})
    stored.set_style_targets(grams, vgg_weights_sha256=None)
    with pytest.raises(RuntimeError, match="mean_std_weight"):
        stored(x, content)
    stored.set_style_targets(grams, vgg_weights_sha256=None, moments={n: loss_fn.moment_term.target(n) for n in grams})
    torch.testing.assert_close(stored(x, content).total, loss_fn(x, content).total)
    with pytest.raises(ValueError, match="mean_std_weight must be a finite number >= 0"):
        make_loss(tiny_encoder, mean_std_weight=-1.0)


def test_style_targets_are_computed_once(tiny_encoder):
    loss_fn = make_loss(tiny_encoder)
    loss_fn.set_style(rand(1, 3, 20, 20))
    assert tiny_encoder.calls == 1
    x, content = rand(1, 3, 16, 16, seed=1).requires_grad_(), rand(1, 3, 16, 16, seed=2)
    for _ in range(3):
        loss_fn(x, content).total.backward()
    assert tiny_encoder.calls == 1 + 3 * 2  # input and content per call, never the style again
    loss_fn.set_content(content)
    loss_fn(x)
    assert tiny_encoder.calls == 1 + 3 * 2 + 1 + 1
    assert all(not b.requires_grad for b in loss_fn.buffers())
    assert not any(k.startswith(("style_target", "content_target")) for k in loss_fn.state_dict())


def test_cached_content_equals_content_per_call(tiny_encoder):
    loss_fn = make_loss(tiny_encoder)
    loss_fn.set_style(rand(1, 3, 20, 20))
    x, content = rand(1, 3, 16, 16, seed=1), rand(1, 3, 16, 16, seed=2)
    per_call = loss_fn(x, content).total
    loss_fn.set_content(content)
    torch.testing.assert_close(loss_fn(x).total, per_call, rtol=0, atol=0)


def test_a_batch_loss_is_the_mean_of_the_per_image_losses(tiny_encoder):
    loss_fn = make_loss(tiny_encoder)
    loss_fn.set_style(rand(1, 3, 20, 20))
    x, content = rand(3, 3, 16, 16, seed=1), rand(3, 3, 16, 16, seed=2)
    batch = loss_fn(x, content).total
    singles = torch.stack([loss_fn(x[i : i + 1], content[i : i + 1]).total for i in range(3)])
    torch.testing.assert_close(batch, singles.mean(), rtol=1e-5, atol=0)


def test_blended_styles_average_their_statistics(tiny_encoder):
    a, b = rand(1, 3, 20, 20, seed=1), rand(1, 3, 28, 24, seed=2)  # different sizes
    loss_fn = make_loss(tiny_encoder)
    loss_fn.set_style([a, b], weights=[3, 1])
    fa, fb = tiny_encoder(a), tiny_encoder(b)
    for name in loss_fn.style_layers:
        expected = 0.75 * gram_ref(fa[name]) + 0.25 * gram_ref(fb[name])
        torch.testing.assert_close(loss_fn.style_target(name).double(), expected, rtol=1e-5, atol=1e-8)
    x = rand(1, 3, 16, 16, seed=3)
    only_a = make_loss(tiny_encoder)
    only_a.set_style(a)
    loss_fn.set_style([a, b], weights=[1, 0])
    torch.testing.assert_close(loss_fn(x, x).total, only_a(x, x).total)


def test_set_style_rejects_bad_weights(tiny_encoder):
    loss_fn = make_loss(tiny_encoder)
    style = rand(2, 3, 16, 16)
    for weights, message in (([1], "2 style images but 1 weights"), ([1, -1], ">= 0"), ([0, 0], "not all zero")):
        with pytest.raises(ValueError, match=message):
            loss_fn.set_style(style, weights=weights)


def test_mean_std_statistic_is_zero_on_the_style_itself(tiny_encoder):
    loss_fn = make_loss(tiny_encoder, style_stat="mean_std", content_weight=0.0, tv_weight=0.0)
    style = rand(1, 3, 16, 16)
    loss_fn.set_style(style)
    assert loss_fn.style_target("relu1_1").shape == (1, 2, 8)
    assert float(loss_fn(style).total) == 0
    assert float(loss_fn(rand(1, 3, 16, 16, seed=5)).total) > 0


def test_optimising_an_image_lowers_the_loss(tiny_encoder):
    loss_fn = make_loss(tiny_encoder)
    loss_fn.set_style(rand(1, 3, 24, 24, seed=1))
    loss_fn.set_content(rand(1, 3, 16, 16, seed=2))
    x = rand(1, 3, 16, 16, seed=3).requires_grad_()
    optimizer = torch.optim.Adam([x], lr=0.05)
    first = None
    for _ in range(40):
        total, _ = loss_fn(x)
        first = float(total.detach()) if first is None else first
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert float(loss_fn(x).total.detach()) < 0.5 * first


def test_bf16_autocast_gives_fp32_losses_close_to_fp32(tiny_encoder):
    loss_fn = make_loss(tiny_encoder)
    loss_fn.set_style(rand(1, 3, 24, 24, seed=1))
    x, content = rand(2, 3, 16, 16, seed=2), rand(2, 3, 16, 16, seed=3)
    expected = loss_fn(x, content).total
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_fn(x, content).total
    assert got.dtype == torch.float32 and math.isfinite(float(got))
    assert abs(float(got) - float(expected)) < 0.05 * float(expected)


def test_targets_move_with_the_module(tiny_encoder):
    loss_fn = make_loss(tiny_encoder)
    loss_fn.set_style(rand(1, 3, 16, 16))
    loss_fn.to(torch.float64)
    assert loss_fn.style_target("relu1_1").dtype == torch.float64
    x, content = rand(1, 3, 16, 16, dtype=torch.float64), rand(1, 3, 16, 16, seed=2, dtype=torch.float64)
    assert loss_fn(x, content).total.dtype == torch.float64


def test_configuration_errors_are_named(tiny_encoder):
    with pytest.raises(ValueError, match=r"does not compute layer\(s\) \['relu4_2'\]"):
        make_loss(tiny_encoder, content_layers=["relu4_2"])
    with pytest.raises(ValueError, match="style_weight must be a finite number >= 0"):
        make_loss(tiny_encoder, style_weight=-1)
    with pytest.raises(ValueError, match="tv_weight"):
        make_loss(tiny_encoder, tv_weight=float("nan"))
    with pytest.raises(ValueError, match="style_stat"):
        make_loss(tiny_encoder, style_stat="gramm")
    with pytest.raises(ValueError, match=r"layer_weights names layer\(s\) \['relu9_9'\]"):
        make_loss(tiny_encoder, layer_weights={"relu9_9": 1.0})
    loss_fn = make_loss(tiny_encoder)
    with pytest.raises(RuntimeError, match="set_style"):
        loss_fn(rand(1, 3, 16, 16), rand(1, 3, 16, 16))
    loss_fn.set_style(rand(1, 3, 16, 16))
    with pytest.raises(RuntimeError, match="no content targets"):
        loss_fn(rand(1, 3, 16, 16))


def test_repr_shows_the_configuration(tiny_encoder):
    text = repr(make_loss(tiny_encoder))
    assert "content_layers=('relu2_1',)" in text and "style_weight=10" in text and "style_stat='gram'" in text



def test_the_term_modules_are_the_functions_summed_over_layers(tiny_encoder):
    from instyle.engine.losses import ContentLoss, StyleLoss, TotalVariationLoss

    x, content, style = rand(2, 3, 16, 16, seed=1), rand(2, 3, 16, 16, seed=2), rand(1, 3, 16, 16, seed=3)
    fx, fc, fs = tiny_encoder(x), tiny_encoder(content), tiny_encoder(style)
    zero = torch.zeros(())
    total, per_layer = ContentLoss(["relu1_1", "relu2_1"], {"relu2_1": 3.0})(fx, fc, zero)
    assert set(per_layer) == {"content/relu1_1", "content/relu2_1"}
    assert torch.equal(per_layer["content/relu2_1"], content_loss(fx["relu2_1"], fc["relu2_1"]))
    assert torch.equal(total, zero + per_layer["content/relu1_1"] + 3.0 * per_layer["content/relu2_1"])

    term = StyleLoss(["relu1_1", "relu3_1"], stat="mean_std")
    term.store_targets({name: style_statistic(fs[name], "mean_std") for name in term.layers})
    total, per_layer = term(fx, None, zero)
    expected = style_loss(fx["relu3_1"], style_statistic(fs["relu3_1"], "mean_std"), "mean_std")
    assert torch.equal(per_layer["style/relu3_1"], expected)
    assert torch.equal(TotalVariationLoss(p=2)(x), total_variation(x, p=2))
    with pytest.raises(ValueError, match="style_stat"):
        StyleLoss(["relu1_1"], stat="histogram")


def test_from_config_takes_a_loss_config(tiny_encoder):
    from instyle.engine.config import LossConfig

    config = LossConfig(content_layers=("relu2_1",), style_layers=("relu1_1", "relu3_1"), style_weight=7.0, tv_weight=0.5)
    loss_fn = PerceptualLoss.from_config(config, tiny_encoder)
    assert (loss_fn.content_layers, loss_fn.style_layers) == (("relu2_1",), ("relu1_1", "relu3_1"))
    assert (loss_fn.content_weight, loss_fn.style_weight, loss_fn.tv_weight) == (1.0, 7.0, 0.5)
    with pytest.raises(ValueError, match="vgg_weights"):  # None is not a network; the task settles it first
        PerceptualLoss.from_config(LossConfig(vgg_weights=None))


@pytest.mark.network
def test_with_the_real_vgg(default_vgg_weights, shared_data):
    """The loss the trainers build: default layers, VGG on real weights, a painting against itself and a photo."""
    import numpy as np
    from PIL import Image

    from instyle.engine.models import VGGFeatures

    def load(path):
        image = Image.open(path).convert("RGB").resize((128, 128))
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]

    content_layers, style_layers = ["relu4_2"], ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    vgg = VGGFeatures(content_layers + style_layers, weights=default_vgg_weights)
    loss_fn = PerceptualLoss(vgg, content_layers, style_layers, content_weight=1.0, style_weight=1e5, tv_weight=1e-6)
    starry, photo = load(shared_data / "styles" / "starry_night.jpg"), load(shared_data / "content" / "chicago.jpg")
    loss_fn.set_style(starry)
    total_self, terms_self = loss_fn(starry, starry)
    total_photo, terms_photo = loss_fn(photo, photo)
    assert float(terms_self["style"]) == 0 and float(terms_self["content"]) == 0
    assert float(terms_photo["style"]) > 0 and float(total_photo) > float(total_self)
