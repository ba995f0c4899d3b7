"""ConditionalInstanceNorm2d, AdaIN and the make_norm registry."""

import pytest
import torch

from instyle import functional as F
from instyle import nn as inn


def _cin(num_styles=3, channels=4):
    layer = inn.ConditionalInstanceNorm2d(channels, num_styles)
    with torch.no_grad():
        layer.weight.copy_(torch.randn_like(layer.weight))
        layer.bias.copy_(torch.randn_like(layer.bias))
    return layer


def test_conditional_in_index_selects_that_styles_affine():
    layer = _cin()
    x = torch.randn(2, 4, 5, 6)
    y = layer(x, torch.tensor([2, 0]))
    for i, s in enumerate([2, 0]):
        expected = F.instance_norm(x[i : i + 1], weight=layer.weight[s], bias=layer.bias[s])
        torch.testing.assert_close(y[i : i + 1], expected, atol=1e-5, rtol=1e-5)


def test_conditional_in_one_hot_weights_equal_indices_and_blend_linearly():
    layer = _cin()
    x = torch.randn(2, 4, 5, 6)
    indices = torch.tensor([1, 2])
    one_hot = torch.nn.functional.one_hot(indices, 3).float()
    torch.testing.assert_close(layer(x, one_hot), layer(x, indices))
    mix = torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.0, 0.5]])
    a, b = layer(x, torch.tensor([0, 0])), layer(x, torch.tensor([1, 2]))
    blended = layer(x, mix)
    torch.testing.assert_close(blended[0], 0.25 * a[0] + 0.75 * b[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blended[1], 0.5 * a[1] + 0.5 * b[1], atol=1e-5, rtol=1e-5)


def test_conditional_in_bad_style_arguments():
    layer = _cin()
    x = torch.randn(2, 4, 5, 6)
    with pytest.raises(IndexError, match=r"out of range \[0, 3\)"):
        layer(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"style weights must have shape \(2, 3\)"):
        layer(x, torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"expected \(N, 4, H, W\)"):
        layer(torch.randn(2, 5, 3, 3), torch.tensor([0, 1]))
    assert "num_styles=3" in repr(layer)


def test_adain_transfers_the_style_statistics():
    content = torch.randn(2, 3, 16, 16)
    style = 3 * torch.randn(2, 3, 12, 10) + 5
    y = inn.AdaIN()(content, style)
    s_mean, s_std = F.calc_mean_std(style)
    y_mean, y_std = F.calc_mean_std(y)
    torch.testing.assert_close(y_mean, s_mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y_std, s_std, atol=1e-3, rtol=1e-3)


def test_adain_functional_takes_mean_and_std_directly():
    content = torch.randn(1, 3, 8, 8)
    y = F.adaptive_instance_norm(content, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(y.mean(dim=(2, 3)), torch.tensor([[1.0, 2.0, 3.0]]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="style_std must have shape"):
        F.adaptive_instance_norm(content, torch.zeros(3), torch.ones(4))


@pytest.mark.parametrize(
    "name, cls",
    [
        ("instance", inn.InstanceNorm2d),
        ("batch", torch.nn.BatchNorm2d),
        ("group", torch.nn.GroupNorm),
        ("layer", torch.nn.GroupNorm),
        ("none", torch.nn.Identity),
    ],
)
def test_make_norm_builds_each_registered_norm(name, cls):
    layer = inn.make_norm(name, 16)
    assert isinstance(layer, cls)
    x = torch.randn(2, 16, 4, 4)
    assert layer(x).shape == x.shape


def test_make_norm_instance_is_affine_and_conditional_takes_styles():
    assert inn.make_norm("instance", 8).affine
    cin = inn.make_norm("conditional_instance", 8, num_styles=4)
    assert cin.weight.shape == (4, 8)
    with pytest.raises(ValueError, match="unknown norm 'weird'; choose one of"):
        inn.make_norm("weird", 8)
