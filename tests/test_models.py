import copy
import json

import pytest
import torch
from torch import nn

from instyle.engine.models import ConvNormAct, NormAct, TextureNet, TransformerNet
from instyle.nn import InstanceNorm2d


def tiny_transformer(**kw) -> TransformerNet:
    torch.manual_seed(0)
    return TransformerNet(width=kw.pop("width", 0.25), num_residual=kw.pop("num_residual", 1), **kw)


def tiny_texture(**kw) -> TextureNet:
    torch.manual_seed(0)
    return TextureNet(num_scales=kw.pop("num_scales", 3), channels=kw.pop("channels", 4), **kw)


def randomize_affine(model: nn.Module) -> None:
    """Norm weights away from their (1, 0) init so that a wrong gamma/beta shows."""
    g = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, (nn.InstanceNorm2d, nn.BatchNorm2d)) and module.affine:
            module.weight.data.uniform_(0.5, 1.5, generator=g)
            module.bias.data.uniform_(-0.5, 0.5, generator=g)


SIZES = [
    (1, 1),  # smaller than the 9x9 reflection pad: edge-padded, then cropped
    (2, 7),  # tiny and non-square
    (5, 5),  # the smallest size that needs no padding
    (17, 33),  # odd: stride-2 layers round up, the output is cropped back
    (31, 64),  # odd by one row below a multiple of 4
]


@pytest.mark.parametrize("size", SIZES)
def test_transformer_keeps_odd_sizes(size):
    model = tiny_transformer()
    x = torch.rand(2, 3, *size)
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("size", SIZES)
def test_texture_keeps_odd_sizes(size):
    model = tiny_texture()
    y = model(torch.rand(2, 3, *size), seed=0)
    assert y.shape == (2, 3, *size)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


def test_transformer_channels_follow_width():
    model = TransformerNet(width=0.5, num_residual=2)
    convs = [m.conv for m in model.modules() if isinstance(m, ConvNormAct)]
    assert [c.out_channels for c in convs] == [16, 32, 64] + [64] * 4 + [32, 16, 3]
    assert len(model.residual) == 2


@pytest.mark.parametrize("cls, kwargs", [
    (TransformerNet, {"norm": "batch", "width": 0.5, "num_residual": 3}),
    (TextureNet, {"num_scales": 4, "channels": 6, "noise_channels": 2, "norm": "none", "negative_slope": 0.2}),
])  # fmt: skip
def test_config_round_trip(cls, kwargs):
    model = cls(**kwargs)
    config = json.loads(json.dumps(model.config))  # survives model-file metadata
    assert config["arch"] == cls.arch
    rebuilt = cls.from_config(config)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_from_config_rejects_wrong_arch_and_unknown_keys():
    with pytest.raises(ValueError, match="arch 'texture'"):
        TransformerNet.from_config(TextureNet().config)
    with pytest.raises(ValueError, match="unknown keys: depth"):
        TransformerNet.from_config({"arch": "transformer_net", "depth": 3})
    with pytest.raises(TypeError, match="mapping"):
        TransformerNet.from_config([("width", 1.0)])


def test_one_name_per_architecture_and_old_model_files_still_load():
    """The architecture is called "transformer" / "texture" in configs, on the command line and in new
    model files; files written before say "transformer_net" / "texture_net" and still load."""
    from instyle.engine.models import GENERATORS, generator_from_config

    assert set(GENERATORS) == {"transformer", "texture"} == {TransformerNet.arch, TextureNet.arch}
    old = {**TransformerNet(width=0.25, num_residual=1).config, "arch": "transformer_net"}
    assert generator_from_config(old).config["arch"] == "transformer"
    assert TextureNet.from_config({**TextureNet().config, "arch": "texture_net"}).config == TextureNet().config


@pytest.mark.parametrize("bad, message", [
    ({"width": 0.01}, "width must be a number from 0.03125 to 16, got 0.01"),
    ({"width": "wide"}, "width must be a number"),
    ({"width": 64.0}, "width must be a number from 0.03125 to 16, got 64.0"),
    ({"width": float("nan")}, "width must be a number"),
    ({"num_residual": -1}, "num_residual must be an integer from 0 to 64, got -1"),
    ({"num_residual": 1.5}, "num_residual must be an integer"),
    ({"num_residual": 20000}, "num_residual must be an integer from 0 to 64, got 20000"),
])  # fmt: skip
def test_transformer_rejects_bad_options(bad, message):
    with pytest.raises(ValueError, match=message):
        TransformerNet(**bad)


@pytest.mark.parametrize("bad, message", [
    ({"num_scales": 0}, "num_scales must be an integer from 1 to 10, got 0"),
    ({"num_scales": 11}, "num_scales must be an integer from 1 to 10, got 11"),
    ({"channels": True}, "channels must be an integer from 1 to 256, got True"),
    ({"negative_slope": -0.5}, "negative_slope must be a number from 0 to 1"),
    ({"noise_channels": 0, "content_channels": 0}, "noise_channels or content_channels"),
])  # fmt: skip
def test_texture_rejects_bad_options(bad, message):
    with pytest.raises(ValueError, match=message):
        TextureNet(**bad)


# Every norm a model file may name, on both architectures, and the edges of the settings' bounds.
STATE_CONFIGS = [
    *({"arch": "transformer", "norm": norm, "width": 0.25, "num_residual": 2} for norm in ("instance", "batch", "group", "layer", "none")),
    *({"arch": "texture_net", "norm": norm, "num_scales": 3, "channels": 4} for norm in ("instance", "batch", "group", "layer", "none")),
    {"arch": "transformer_net", "width": 0.03125, "num_residual": 0},
    {"arch": "transformer", "width": 0.375, "num_residual": 3},  # the bundled styles' shape
    {"arch": "transformer", "norm": "conditional_instance", "width": 0.25, "num_residual": 2, "num_styles": 3},
    {"arch": "texture", "num_scales": 1, "channels": 1, "noise_channels": 0, "content_channels": 3},
    {"arch": "texture", "num_scales": 4, "channels": 3, "noise_channels": 5, "content_channels": 0, "negative_slope": 0.2},
    {"arch": "adain-decoder"},  # VGG-19 mirrored to relu4_1
    {"arch": "adain-decoder", "blocks": [[8], [4, 4], [16]]},
]


@pytest.mark.parametrize("config", STATE_CONFIGS)
def test_derived_state_is_the_built_state_dict(config):
    """generator_state derives the names, shapes and kinds of a generator's state from its settings
    without building it (model files are checked with it): they are exactly the built module's."""
    from instyle.engine.models import generator_from_config, generator_state

    settings, entries = generator_state(config)
    built = generator_from_config(config)
    assert settings == built.config
    state = built.state_dict()
    assert {k: e.shape for k, e in entries.items()} == {k: tuple(t.shape) for k, t in state.items()}
    assert {k: e.floating for k, e in entries.items()} == {k: t.is_floating_point() for k, t in state.items()}


@pytest.mark.parametrize("config, message", [
    ({"arch": "adain-decoder", "blocks": [[64]] * 6}, "config.blocks must be 1 to 5 groups"),
    ({"arch": "adain-decoder", "blocks": [[100000]]}, "config.blocks must be 1 to 5 groups of 1 to 4 widths from 1 to 1024"),
    ({"arch": "adain-decoder", "blocks": "big"}, "config.blocks must be"),
    ({"arch": "transformer_net", "width": 64.0, "num_residual": 1}, "config.width must be a number from 0.03125 to 16, got 64.0"),
    ({"arch": "transformer_net", "num_residual": 20000, "width": 0.03125}, "config.num_residual must be an integer from 0 to 64"),
    ({"arch": "transformer", "num_residual": 2.0}, "config.num_residual must be an integer"),
    ({"arch": "transformer", "width": True}, "config.width must be a number"),
    ({"arch": "transformer", "norm": "conditional_instance"}, "config.num_styles must be an integer from 1 to 1024, got None"),
    ({"arch": "transformer", "norm": "conditional_instance", "num_styles": 0}, "config.num_styles must be an integer from 1"),
    ({"arch": "transformer", "norm": "instance", "num_styles": 2}, "config.num_styles is only for norm conditional_instance"),
    ({"arch": "texture", "norm": "conditional_instance"}, "config.norm must be one of instance, batch, group, layer, none"),
    ({"arch": "transformer", "norm": "adain"}, "config.norm must be one of instance, batch, group, layer, none, conditional_instance"),
    ({"arch": "transformer", "norm": 3}, "config.norm must be one of"),
    ({"arch": "transformer", "depth": 3}, "unknown keys: depth"),
    ({"width": 1.0}, "unknown architecture None"),
    ({"arch": "gan"}, "unknown architecture 'gan'"),
    ({"arch": "texture", "num_scales": 100}, "config.num_scales must be an integer from 1 to 10"),
    ({"arch": "texture", "channels": 100000}, "config.channels must be an integer from 1 to 256"),
    ({"arch": "texture", "noise_channels": 0, "content_channels": 0}, "config.noise_channels or config.content_channels"),
    ({"arch": "texture", "negative_slope": float("inf")}, "config.negative_slope must be a number"),
    (["arch", "transformer"], "not an object"),
    ({"arch": ["transformer"]}, r"unknown architecture \['transformer'\]"),
    ({"arch": "transformer", "num_residual": 10**100}, "got an integer of more than 40 digits"),
    ({"arch": "transformer", "norm": "x" * 10**6}, r"got 'xxxx.*\.\.\.$"),
    ({"arch": "texture", **{f"extra{i}": 0 for i in range(1000)}}, r"unknown keys: extra0, extra1, extra10, extra100, extra101 \.\.\.$"),
])  # fmt: skip
def test_stored_settings_are_bounded(config, message):
    from instyle.engine.models import generator_state

    with pytest.raises(ValueError, match=message):
        generator_state(config)


def test_unknown_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown norm 'weird'"):
        TransformerNet(norm="weird")


@pytest.mark.parametrize("norm, layer_type", [
    ("instance", InstanceNorm2d),
    ("batch", nn.BatchNorm2d),
    ("none", nn.Identity),
])  # fmt: skip
@pytest.mark.parametrize("make", [tiny_transformer, tiny_texture])
def test_norm_switching(make, norm, layer_type):
    model = make(norm=norm)
    norms = [m.norm for m in model.modules() if isinstance(m, NormAct)]
    expected = norms[-1:] if make is tiny_transformer else []  # the RGB head has no norm
    assert all(isinstance(n, layer_type) for n in norms if not any(n is e for e in expected))
    # A conv followed by a norm has no bias; one without a norm has.
    for block in (m for m in model.modules() if isinstance(m, ConvNormAct)):
        assert (block.conv.bias is None) == (not isinstance(block.norm_act.norm, nn.Identity))
    x = torch.rand(2, 3, 20, 24)
    assert model(x).shape == x.shape


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("make", [tiny_transformer, tiny_texture])
def test_one_training_step_lowers_the_loss(make, norm):
    model = make(norm=norm)
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    target = torch.full_like(x, 0.25)  # trivial: a flat grey image
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_now():
        kwargs = {"seed": 0} if make is tiny_texture else {}
        return torch.nn.functional.mse_loss(model(x, **kwargs), target)

    before = loss_now()
    optimizer.zero_grad()
    before.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    optimizer.step()
    assert loss_now().item() < before.item()


def with_torch_instance_norm(model: nn.Module) -> nn.Module:
    """A copy whose instyle InstanceNorm2d layers are torch.nn.InstanceNorm2d with the same
    weights, so NormAct takes its unfused norm-then-ReLU path."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, NormAct) and isinstance(module.norm, InstanceNorm2d):
            old = module.norm
            new = nn.InstanceNorm2d(old.num_features, eps=old.eps, affine=True)
            new.load_state_dict(old.state_dict())
            module.norm = new
    return twin


@pytest.mark.parametrize("make", [tiny_transformer, tiny_texture])
def test_fused_path_matches_torch_instance_norm(make):
    model = make()
    randomize_affine(model)
    twin = with_torch_instance_norm(model)
    assert any(type(m) is nn.InstanceNorm2d for m in twin.modules())
    x = torch.rand(2, 3, 19, 26, generator=torch.Generator().manual_seed(4))
    kwargs = {"seed": 0} if make is tiny_texture else {}
    y, y_twin = model(x, **kwargs), twin(x, **kwargs)
    torch.testing.assert_close(y, y_twin, atol=1e-5, rtol=1e-5)
    grad_output = torch.randn_like(y)
    (y * grad_output).sum().backward()
    (y_twin * grad_output).sum().backward()
    for (name, p), p_twin in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, p_twin.grad, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("make", [tiny_transformer, tiny_texture])
def test_channels_last_matches_contiguous(make):
    model = make()
    randomize_affine(model)
    x = torch.rand(2, 3, 21, 30, generator=torch.Generator().manual_seed(5))
    kwargs = {"seed": 0} if make is tiny_texture else {}
    expected = model(x, **kwargs)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    got = model_cl(x.contiguous(memory_format=torch.channels_last), **kwargs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [tiny_transformer, tiny_texture])
def test_bf16_autocast(make):
    model = make()
    randomize_affine(model)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    kwargs = {"seed": 0} if make is tiny_texture else {}
    expected = model(x, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x, **kwargs)
    assert got.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa; measured max errors here: 0.007 (TransformerNet), 0.02 (TextureNet).
    assert (got.float() - expected).abs().max() < 0.05
    got.float().sum().backward()  # the autocast graph trains


def test_receptive_radius_bounds_the_measured_one():
    """With pointwise norms, an output pixel's input gradient is zero beyond the radius."""
    model = tiny_transformer(norm="none", num_residual=2)
    x = torch.rand(1, 3, 96, 96, requires_grad=True)
    model(x)[0, :, 48, 48].sum().backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    measured = max((rows - 48).abs().max(), (cols - 48).abs().max()).item()
    assert measured <= model.receptive_radius
    assert model.receptive_radius - measured <= 12  # a bound, but not a loose one
    assert TransformerNet().receptive_radius == 63


def test_bad_inputs_are_clear_errors():
    model = tiny_transformer()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="activation"):
        NormAct(nn.Identity(), activation="gelu")


def test_texture_noise_is_deterministic_given_a_seed():
    model = tiny_texture()
    x = torch.rand(2, 3, 20, 28)
    a, b = model(x, seed=7), model(x, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, model(x, seed=8))
    assert torch.equal(a, model(x, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(a, model(x, noise=model.noise(2, (20, 28), torch.Generator().manual_seed(7))))
    with pytest.raises(ValueError, match="not both"):
        model(x, seed=1, generator=torch.Generator())


def test_texture_synthesis_from_noise_alone():
    model = tiny_texture(content_channels=0)
    a = model(None, size=(19, 30), batch_size=2, seed=3)
    assert a.shape == (2, 3, 19, 30)
    assert torch.equal(a, model(size=(19, 30), batch_size=2, seed=3))
    assert not torch.equal(a[0], a[1])  # each sample draws its own noise
    with pytest.raises(ValueError, match="size=\\(H, W\\)"):
        model(None)
    with pytest.raises(ValueError, match="content=None"):
        model(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="content_channels=0"):
        tiny_texture()(None, size=(8, 8))


def test_texture_rejects_wrong_noise_shapes():
    model = tiny_texture()
    noise = model.noise(1, (16, 16))
    with pytest.raises(ValueError, match="noise must be"):
        model(torch.rand(1, 3, 16, 16), noise=noise[:-1])


def test_texture_channels_grow_coarse_to_fine():
    model = TextureNet(num_scales=5, channels=8)
    assert model.head.in_channels == 40
    assert [j.block[0].conv.in_channels for j in model.joins] == [40, 32, 24, 16]


def test_reprs_show_the_options():
    assert "norm='instance', width=0.25, num_residual=1" in repr(tiny_transformer())
    assert "num_scales=3, channels=4" in repr(tiny_texture())
    block = ConvNormAct(3, 4, 3, upsample=2, activation="leaky_relu", negative_slope=0.2)
    text = repr(block)
    assert "upsample=2, padding=1, padding_mode='reflect'" in text
    assert "activation='leaky_relu', negative_slope=0.2" in text


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape, p", [((1, 12, 37, 53), 4), ((2, 8, 5, 6), 4), ((1, 3, 2, 2), 1), ((3, 24, 16, 9), 1)])
def test_channels_last_reflect_pad_is_torch_pad_bit_for_bit(shape, p, dtype):
    from instyle.engine.models.blocks import _fast_reflect_ok, reflect_pad_channels_last

    x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    assert _fast_reflect_ok(x, p)
    expected = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")
    got = reflect_pad_channels_last(x, p)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, expected)


def test_fast_reflect_pad_is_used_only_where_it_applies():
    from instyle.engine.models.blocks import _fast_reflect_ok

    cl = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    assert _fast_reflect_ok(cl.bfloat16(), 2)
    assert not _fast_reflect_ok(cl, 2)  # fp32: torch's pad
    cl = cl.bfloat16()
    assert not _fast_reflect_ok(cl.contiguous(), 2)  # NCHW: torch's pad
    assert not _fast_reflect_ok(cl, 8)  # pad as wide as the map: torch raises its own error
    assert not _fast_reflect_ok(cl.clone().requires_grad_(), 2)  # training: torch's pad and its backward
