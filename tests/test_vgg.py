"""VGGFeatures: layer names, truncation, the input convention applied inside, freezing, memory formats, autocast,
and (with the real weights) activations that behave like a trained network's."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from instyle.engine.losses import gram_matrix
from instyle.engine.models import VGGFeatures
from instyle.engine.models.vgg import vgg_layer_names
from instyle.engine.weights import CONVENTIONS, VGGWeights, conv_names


def random_weights(arch: str = "vgg16", convention: str = "torchvision", seed: int = 0) -> VGGWeights:
    torch.manual_seed(seed)
    full = VGGFeatures([conv_names(arch)[-1]], weights=None, arch=arch)
    return VGGWeights(full.state_dict(), arch, convention, source="<random>", sha256="0" * 64)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch, blocks", [("vgg16", (2, 2, 3, 3, 3)), ("vgg19", (2, 2, 4, 4, 4))])
def test_layer_names_follow_the_architecture(arch, blocks):
    names = vgg_layer_names(arch)
    expected = []
    for b, n in enumerate(blocks, 1):
        expected += [f"{kind}{b}_{i}" for i in range(1, n + 1) for kind in ("conv", "relu")] + [f"pool{b}"]
    assert names == expected


def test_unknown_layers_are_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown vgg16 layer\(s\) \['relu5_4'\].*relu5_3"):
        VGGFeatures(["relu1_1", "relu5_4"], weights=None)
    with pytest.raises(TypeError, match="sequence of layer names"):
        VGGFeatures("relu1_1", weights=None)
    with pytest.raises(ValueError, match="pooling"):
        VGGFeatures(["relu1_1"], weights=None, pooling="median")


def test_only_layers_up_to_the_deepest_requested_are_built_and_match_the_full_net(images):
    weights = random_weights()
    short = VGGFeatures(["relu2_2", "conv1_2"], weights=weights)
    full = VGGFeatures(["relu5_3", "relu2_2", "conv1_2"], weights=weights)
    assert [name for name, _ in short.named_children()] == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    out_short, out_full = short(images), full(images)
    assert list(out_short) == ["relu2_2", "conv1_2"]  # the caller's order
    for name in out_short:
        torch.testing.assert_close(out_short[name], out_full[name], rtol=0, atol=0)


def test_outputs_have_the_layer_shapes(images):
    names = ["conv1_1", "relu1_1", "pool1", "relu3_3", "pool3", "relu5_3", "pool5"]
    out = VGGFeatures(names, weights=None)(images)
    h, w = images.shape[-2:]
    assert out["conv1_1"].shape == (2, 64, h, w)
    assert out["pool1"].shape == (2, 64, h // 2, w // 2)
    assert out["relu3_3"].shape == (2, 256, h // 4, w // 4)
    assert out["pool3"].shape == (2, 256, h // 8, w // 8)
    assert out["relu5_3"].shape == (2, 512, h // 16, w // 16)
    assert out["pool5"].shape == (2, 512, h // 32, w // 32)
    assert bool((out["conv1_1"] < 0).any()) and bool((out["relu1_1"] >= 0).all())


def test_requested_conv_output_is_not_overwritten_by_its_relu(images):
    out = VGGFeatures(["conv2_1", "relu2_1"], weights=None)(images)
    torch.testing.assert_close(out["relu2_1"], out["conv2_1"].clamp(min=0), rtol=0, atol=0)
    assert bool((out["conv2_1"] < 0).any())


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_input_convention_is_applied_inside(images, convention):
    weights = random_weights(convention=convention)
    conv1 = VGGFeatures(["conv1_1"], weights=weights)(images)["conv1_1"]
    c = CONVENTIONS[convention]
    x = images.double()
    if c["bgr"]:
        x = x[:, [2, 1, 0]]
    x = (x * c["scale"] - torch.tensor(c["mean"]).double().view(1, 3, 1, 1)) / torch.tensor(c["std"]).double().view(1, 3, 1, 1)
    expected = F.conv2d(x, weights.state_dict["conv1_1.weight"].double(), weights.state_dict["conv1_1.bias"].double(), padding=1)
    torch.testing.assert_close(conv1.double(), expected, rtol=1e-5, atol=1e-3 if convention == "caffe" else 1e-5)


def test_frozen_but_differentiable_with_respect_to_the_input(images):
    vgg = VGGFeatures(["relu3_1"], weights=None)
    assert not any(p.requires_grad for p in vgg.parameters())
    parent = torch.nn.Sequential(vgg).train()
    assert not vgg.training and not parent[0].training
    x = images.clone().requires_grad_(True)
    vgg(x)["relu3_1"].square().mean().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    assert all(p.grad is None for p in vgg.parameters())


def test_channels_last_gives_the_same_features(images):
    vgg = VGGFeatures(["relu1_2", "relu3_3"], weights=random_weights())
    expected = vgg(images)
    vgg_cl = VGGFeatures(["relu1_2", "relu3_3"], weights=random_weights()).to(memory_format=torch.channels_last)
    got = vgg_cl(images.to(memory_format=torch.channels_last))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)


def test_bf16_autocast_stays_close_to_fp32(images):
    vgg = VGGFeatures(["relu2_1", "relu4_1"], weights=random_weights())
    expected = vgg(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = vgg(images)
    for name in expected:
        assert got[name].dtype == torch.bfloat16
        error = float((got[name].float() - expected[name]).norm() / expected[name].norm())
        assert error < 0.05, (name, error)  # bf16 has 8 bits of mantissa: ~1% per layer


def test_bf16_parameters_accept_fp32_images(images):
    vgg = VGGFeatures(["relu2_1"], weights=random_weights()).to(torch.bfloat16)
    assert vgg(images)["relu2_1"].dtype == torch.bfloat16


def test_average_pooling_option(images):
    weights = random_weights()
    out_max = VGGFeatures(["pool1", "relu2_1"], weights=weights)(images)
    out_avg = VGGFeatures(["pool1", "relu2_1"], weights=weights, pooling="avg")(images)
    relu1_2 = VGGFeatures(["relu1_2"], weights=weights)(images)["relu1_2"]
    torch.testing.assert_close(out_avg["pool1"], F.avg_pool2d(relu1_2, 2))
    torch.testing.assert_close(out_max["pool1"], F.max_pool2d(relu1_2, 2))


def test_vgg19_weights_give_vgg19_layers(images):
    vgg = VGGFeatures(["relu5_4", "relu3_4"], weights=random_weights("vgg19"))
    out = vgg(images)
    assert vgg.arch == "vgg19" and out["relu5_4"].shape[1] == 512
    with pytest.raises(ValueError, match="arch='vgg16' but"):
        VGGFeatures(["relu1_1"], weights=random_weights("vgg19"), arch="vgg16")


def test_bad_inputs_are_named():
    vgg = VGGFeatures(["relu4_1"], weights=None)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(3, 32, 32\)"):
        vgg(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(1, 4, 32, 32\)"):
        vgg(torch.rand(1, 4, 32, 32))
    with pytest.raises(TypeError, match="uint8"):
        vgg(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="too small for layer relu4_1: need at least 8x8"):
        vgg(torch.rand(1, 3, 7, 30))
    assert vgg(torch.rand(1, 3, 8, 8))["relu4_1"].shape == (1, 512, 1, 1)


def test_repr_names_arch_layers_and_weights():
    text = repr(VGGFeatures(["relu1_1", "relu2_1"], weights=random_weights()))
    assert "arch=vgg16" in text and "('relu1_1', 'relu2_1')" in text and "pooling='max'" in text
    assert "convention='torchvision'" in text and "<random>" in text
    assert "weights=random" in repr(VGGFeatures(["relu1_1"], weights=None))


# --- the real weights -----------------------------------------------------------------------------------------
def _load(path, long_side=256) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    image.thumbnail((long_side, long_side))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.network
def test_real_vgg_features_behave_like_a_trained_network(default_vgg_weights, shared_data):
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_3"]
    vgg = VGGFeatures(layers, weights=default_vgg_weights)
    assert vgg.convention == "caffe"
    starry = _load(shared_data / "styles" / "starry_night.jpg")
    others = [_load(shared_data / "styles" / f"{name}.jpg") for name in ("composition_vii", "udnie", "cezanne")]
    noise = torch.rand(starry.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = {name: gram_matrix(f) for name, f in vgg(starry).items()}
        grams = [{name: gram_matrix(f) for name, f in vgg(x).items()} for x in [starry.flip(-1), noise, *others]]

    def distance(a, b):
        return float((a - b).norm() / a.norm())

    for name in layers:
        flipped, to_noise, *to_others = (distance(reference[name], g[name]) for g in grams)
        # A mirrored painting keeps its style statistics; noise does not. Measured here (relu1_1 .. relu5_3):
        # mirrored 0.03 .. 0.30, noise 0.70 .. 0.93, the other three paintings 0.47 .. 1.04.
        assert flipped < 0.5 * to_noise, name
        if name != "relu5_3":  # the deepest layer is orientation-selective: mirrored 0.30 against 0.47
            assert flipped < 0.5 * min(to_others), name

    random_net = VGGFeatures(["relu5_3"], weights=None, convention="caffe")
    with torch.no_grad():
        real, rand = vgg(starry)["relu5_3"], random_net(starry)["relu5_3"]
    assert bool(torch.isfinite(real).all())
    assert distance(real, rand) > 0.5
