import pytest
import torch
from torch import nn

from instyle.engine.models import NormAct, TextureNet, TransformerNet
from instyle.engine.inference.tiling import (
    BYTES_PER_PIXEL,
    CACHE_BYTES,
    tile_spans as _spans,
    _Staged,
    auto_tile,
    stylize_tiled,
    stylize_tiled_rows,
    tile_halo,
    whole_image_in_stats,
)


def tiny_model(norm: str = "instance", num_residual: int = 1) -> TransformerNet:
    """Width 0.25 (8/16/32 channels) keeps CI fast; the affine terms are randomized so
    that a wrong statistic cannot hide behind gamma = 1, beta = 0."""
    torch.manual_seed(0)
    model = TransformerNet(norm=norm, width=0.25, num_residual=num_residual)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) and m.affine:
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.5, 0.5, generator=g)
    return model.eval()


def ramp_image(h: int, w: int, seed: int = 2) -> torch.Tensor:
    """Noise over a left-to-right ramp: every tile has different statistics."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 0.7, w)[None, None, None, :]
    return (0.3 * torch.rand(1, 3, h, w, generator=g) + ramp).clamp(0, 1)


def untiled_stats(model: nn.Module, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    stats = []

    def record(module, args):
        stats.append((args[0].mean(dim=(0, 2, 3)), args[0].var(dim=(0, 2, 3), correction=0)))

    layers = [m for m in model.modules() if isinstance(m, NormAct) and m.uses_input_stats]
    handles = [layer.register_forward_pre_hook(record) for layer in layers]
    with torch.no_grad():
        model(image)
    for handle in handles:
        handle.remove()
    return stats


@pytest.mark.parametrize("size", [
    (256, 256),  # the CI stand-in for 2048 x 2048: 3 x 3 tiles of 96
    (250, 203),  # odd sizes: last tiles are short and the strided grids round up
])  # fmt: skip
def test_whole_image_stats_match_untiled(size):
    model, image = tiny_model(), ramp_image(*size)
    expected = untiled_stats(model, image)
    got = whole_image_in_stats(model, image, tile=96)
    assert len(got) == len(expected) == 7  # 3 down, 2 per residual block, 2 up
    for (mean, var), (mean_ref, var_ref) in zip(got, expected):
        torch.testing.assert_close(mean, mean_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(var, var_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size, tile, overlap", [
    ((256, 256), 96, 32),  # the required check at CI size
    ((250, 203), 96, 32),  # odd sizes
    ((130, 77), 40, 0),  # no blending band: exact tiles are pasted
    ((64, 64), 128, 64),  # one tile covers the image
])  # fmt: skip
def test_tiled_equals_untiled(size, tile, overlap):
    model, image = tiny_model(), ramp_image(*size)
    with torch.no_grad():
        expected = model(image)
    got = stylize_tiled(model, image, tile=tile, overlap=overlap)
    assert got.shape == expected.shape
    # The requirement is 1/255; exact halos give float32 round-off (about 1e-6).
    assert (got - expected).abs().max() < 1 / 255
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_tiled_equals_untiled_in_float64():
    """In float64 the two agree to round-off, so no contaminated pixel hides under a tolerance."""
    model, image = tiny_model(num_residual=2).double(), ramp_image(150, 170).double()
    with torch.no_grad():
        expected = model(image)
    got = stylize_tiled(model, image, tile=64, overlap=16)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


def test_batches_are_tiled_one_image_at_a_time():
    model = tiny_model()
    image = torch.cat([ramp_image(100, 120, seed=s) for s in (3, 4)])
    with torch.no_grad():
        expected = model(image)  # instance norm: each image has its own statistics
    torch.testing.assert_close(stylize_tiled(model, image, tile=48, overlap=16), expected, atol=1e-5, rtol=0)


def test_the_halo_is_what_makes_tiles_exact():
    model, image = tiny_model(), ramp_image(192, 192)
    with torch.no_grad():
        expected = model(image)
    assert tile_halo(model) == 32  # receptive radius 31 rounded up to the stride 4
    seams = stylize_tiled(model, image, tile=64, overlap=16, halo=0)
    assert (seams - expected).abs().max() > 1 / 255


def test_precomputed_stats_give_the_same_result():
    model, image = tiny_model(), ramp_image(160, 144)
    stats = whole_image_in_stats(model, image, tile=64)
    a = stylize_tiled(model, image, tile=64, overlap=16)
    b = stylize_tiled(model, image, tile=64, overlap=16, stats=stats)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="stats has 1 entries"):
        stylize_tiled(model, image, tile=64, overlap=16, stats=stats[:1])


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_models_without_instance_norm_tile_too(norm):
    model, image = tiny_model(norm=norm), ramp_image(120, 100)
    assert whole_image_in_stats(model, image, tile=48) == []
    with torch.no_grad():
        expected = model(image)
    torch.testing.assert_close(stylize_tiled(model, image, tile=48, overlap=16), expected, atol=1e-5, rtol=0)


def test_model_is_left_unchanged():
    model = tiny_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stylize_tiled(model, ramp_image(100, 100), tile=48, overlap=16)
    assert model.training and all(m.training for m in model.modules())
    assert all(m.frozen_stats is None for m in model.modules() if isinstance(m, NormAct))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_model_is_restored_after_an_error():
    model = tiny_model().train()
    with pytest.raises(ValueError, match="stats has"):
        stylize_tiled(model, ramp_image(64, 64), tile=32, overlap=16, stats=[])
    assert model.training
    assert all(m.frozen_stats is None for m in model.modules() if isinstance(m, NormAct))


def test_bad_arguments_are_clear_errors():
    model, image = tiny_model(), ramp_image(64, 64)
    with pytest.raises(ValueError, match="multiple of the model's tile_stride"):
        stylize_tiled(model, image, tile=50)
    with pytest.raises(ValueError, match="overlap"):
        stylize_tiled(model, image, tile=32, overlap=40)
    with pytest.raises(ValueError, match="halo"):
        stylize_tiled(model, image, tile=32, overlap=16, halo=-1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        stylize_tiled(model, image[0], tile=32, overlap=16)
    with pytest.raises(ValueError, match="one image"):
        whole_image_in_stats(model, image.expand(2, -1, -1, -1), tile=32)
    with pytest.raises(TypeError, match="TextureNet does not support tiled inference"):
        stylize_tiled(TextureNet(num_scales=2, channels=2), image, tile=32, overlap=16)


def test_stray_instance_norm_is_refused():
    model = tiny_model()
    model.extra = nn.InstanceNorm2d(3)  # outside any NormAct: its statistics could not be frozen
    with pytest.raises(TypeError, match="inside a NormAct; not: extra"):
        stylize_tiled(model, ramp_image(64, 64), tile=32, overlap=16)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_group_and_layer_norm_are_refused(norm):
    model = TransformerNet(norm=norm, width=0.25, num_residual=1)
    with pytest.raises(TypeError, match="group or layer norm: down.0.norm_act.norm"):
        stylize_tiled(model, ramp_image(64, 64), tile=32, overlap=16)


def test_auto_tile():
    assert auto_tile(512, 512, 512 * 512 * BYTES_PER_PIXEL) is None  # fits whole
    budget = 1 << 30
    tile = auto_tile(4096, 4096, budget, halo=64, overlap=64, stride=4)
    assert tile % 4 == 0 and tile >= 64
    window = tile + 64 + 2 * 64 + 4
    assert window**2 * BYTES_PER_PIXEL <= budget < (window + 8) ** 2 * BYTES_PER_PIXEL
    with pytest.raises(ValueError, match="too small"):
        auto_tile(4096, 4096, 100 * 100 * BYTES_PER_PIXEL)
    with pytest.raises(ValueError, match="budget_bytes"):
        auto_tile(4096, 4096, 0)


@pytest.mark.parametrize("size, tile, overlap, halo", [
    (256, 96, 32, 32),  # the CI case
    (50, 4, 0, 0),  # windows shorter than the minimum get widened
    (103, 8, 6, 1),  # odd overlap and halo: bands and window starts round
    (7, 64, 16, 64),  # one tile larger than the image
])  # fmt: skip
def test_spans_cover_the_image(size, tile, overlap, halo):
    spans = _spans(size, tile, overlap, halo, stride=4)
    assert [s.core0 for s in spans] == list(range(0, size, tile))  # cores partition [0, size)
    assert spans[-1].core1 == size and all(a.core1 == b.core0 for a, b in zip(spans, spans[1:]))
    for s in spans:
        assert s.window0 % 4 == 0  # strided grids line up with the untiled ones
        assert 0 <= s.window0 <= max(s.out0 - halo, 0) and min(s.out1 + halo, size) <= s.window1 <= size
        assert s.out0 <= s.core0 < s.core1 <= s.out1
        assert s.window1 - s.window0 >= min(16, size)


# ------------------------------------------------------------------ staged path, uint8, row bands


@pytest.mark.parametrize("size, tile, overlap", [
    ((256, 256), 96, 32),  # the CI stand-in for 2048 x 2048
    ((250, 203), 64, 16),  # odd sizes: the 1/4 maps round up, the last windows crop before the head
    ((96, 300), 32, 8),  # trunk maps 8 rows per strip: several strips, reflection at both ends
])  # fmt: skip
def test_staged_and_generic_paths_both_equal_untiled(size, tile, overlap):
    model, image = tiny_model(num_residual=2), ramp_image(*size)
    assert _Staged.plan(model, image, tile, None, CACHE_BYTES) is not None
    assert _Staged.plan(model, image, tile, None, cache_bytes=0) is None  # maps too large: generic
    with torch.no_grad():
        expected = model(image)
    staged = stylize_tiled(model, image, tile=tile, overlap=overlap)
    generic = stylize_tiled(model, image, tile=tile, overlap=overlap, cache_bytes=0)
    for got in (staged, generic):
        assert (got - expected).abs().max() < 1 / 255
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    stats = whole_image_in_stats(model, image, tile=tile)
    for (mean, var), (mean_ref, var_ref) in zip(stats, untiled_stats(model, image), strict=True):
        torch.testing.assert_close(mean, mean_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(var, var_ref, atol=1e-5, rtol=1e-5)


def test_staged_path_in_float64_is_exact_to_round_off():
    model, image = tiny_model(num_residual=2).double(), ramp_image(150, 170).double()
    assert _Staged.plan(model, image, 64, None, CACHE_BYTES) is not None
    with torch.no_grad():
        expected = model(image)
    torch.testing.assert_close(stylize_tiled(model, image, tile=64, overlap=16), expected, atol=1e-10, rtol=0)


def test_staged_path_under_bf16_autocast_matches_untiled_within_one_level():
    """Where stylize runs on this CPU: the cached 1/4 maps are bf16, as the untiled forward's are."""
    model, image = tiny_model(num_residual=2), ramp_image(200, 160)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(image).float()
        got = stylize_tiled(model, image, tile=64, overlap=16)
    assert (got - expected).abs().max() <= 1 / 255


def test_uint8_images_tile_as_their_float_conversion():
    model = tiny_model()
    pixels = (ramp_image(120, 100) * 255).round().to(torch.uint8)
    as_float = pixels.float() / 255  # what load_image gives for the same file
    for cache_bytes in (CACHE_BYTES, 0):  # staged and generic
        got = stylize_tiled(model, pixels, tile=48, overlap=16, cache_bytes=cache_bytes)
        assert got.dtype == torch.float32
        assert torch.equal(got, stylize_tiled(model, as_float, tile=48, overlap=16, cache_bytes=cache_bytes))


@pytest.mark.parametrize("overlap", [0, 16, 48])
def test_rows_are_handed_on_once_top_to_bottom(overlap):
    model, image = tiny_model(), ramp_image(170, 90)
    bands = []
    stylize_tiled_rows(model, image, lambda y0, y1, rows: bands.append((y0, y1, rows.clone())), tile=48, overlap=overlap)
    assert bands[0][0] == 0 and bands[-1][1] == 170
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))  # consecutive, no gaps or repeats
    assert all(rows.shape == (1, 3, y1 - y0, 90) for y0, y1, rows in bands)
    whole = torch.cat([rows for _, _, rows in bands], dim=2)
    torch.testing.assert_close(whole, stylize_tiled(model, image, tile=48, overlap=overlap), atol=0, rtol=0)


# ------------------------------------------------------------------ the tiling protocol


def test_transformer_net_is_tileable_and_tiling_reads_only_the_protocol():
    import ast
    from pathlib import Path

    from instyle.engine.inference import tiling
    from instyle.engine.models.blocks import Tileable, TilingStages

    model = tiny_model(num_residual=2)
    assert isinstance(model, Tileable)
    stages = model.tiling_stages()
    assert isinstance(stages, TilingStages)
    assert stages.encoder == tuple(model.down) and stages.decoder == tuple(model.up) and stages.head is model.head
    assert stages.residual == tuple((b.conv1, b.conv2) for b in model.residual)
    source = Path(tiling.__file__).read_text()
    imported = {
        alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }  # fmt: skip
    assert not imported & {"TransformerNet", "ResidualBlock"}
    assert ".forward is" not in source  # no comparing forward functions


def test_a_subclass_with_its_own_forward_takes_the_generic_path():
    from instyle.engine.models.transformer import ResidualBlock

    class Brighter(TransformerNet):
        def forward(self, x):
            return super().forward(x) * 0.5

    class OddBlock(ResidualBlock):
        def forward(self, x):
            return self.conv2(self.conv1(x))  # no residual add

    image = ramp_image(96, 80)
    brighter = Brighter(width=0.25, num_residual=1).eval()
    assert brighter.tiling_stages() is None and _Staged.plan(brighter, image, 32, None, CACHE_BYTES) is None
    odd = tiny_model()
    odd.residual[0].__class__ = OddBlock
    assert odd.tiling_stages() is None and _Staged.plan(odd, image, 32, None, CACHE_BYTES) is None
    for model in (brighter, odd):
        with torch.no_grad():
            expected = model(image)
        torch.testing.assert_close(stylize_tiled(model, image, tile=32, overlap=16), expected, atol=1e-5, rtol=0)


def test_a_model_offering_stages_through_the_protocol_alone_is_staged():
    """tiling needs no TransformerNet: any module with the protocol's members takes the staged path."""
    from instyle.engine.models.blocks import TilingStages

    inner = tiny_model(num_residual=2)

    class Wrapper(nn.Module):
        tile_stride = 4

        def __init__(self):
            super().__init__()
            self.inner = inner

        @property
        def receptive_radius(self):
            return inner.receptive_radius

        def tiling_stages(self):
            s = inner.tiling_stages()
            return TilingStages(s.encoder, s.residual, s.decoder, s.head, output=lambda y: torch.sigmoid(y) * 0.5)

        def forward(self, x):
            return inner(x) * 0.5

    model, image = Wrapper().eval(), ramp_image(150, 130)
    assert _Staged.plan(model, image, 64, None, CACHE_BYTES) is not None
    with torch.no_grad():
        expected = model(image)
    torch.testing.assert_close(stylize_tiled(model, image, tile=64, overlap=16), expected, atol=1e-5, rtol=0)
