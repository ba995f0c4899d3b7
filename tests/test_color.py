"""Colour preservation: luminance-only transfer, mean/covariance transfer and histogram matching."""

import pytest
import torch

from instyle.engine.color import BandTransfer, histogram_matching, preserve_color, rgb_to_yiq, yiq_to_rgb


def _image(seed, shape=(3, 24, 32)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


def test_yiq_round_trip():
    x = _image(0)
    torch.testing.assert_close(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5, rtol=1e-5)


def test_luminance_keeps_stylized_luminance_and_content_chroma():
    content = _image(1) * 0.5 + 0.25  # inside gamut, so clamping does not bite
    stylized = _image(2) * 0.5 + 0.25
    out = preserve_color(stylized, content, "luminance")
    yiq_out, yiq_st, yiq_ct = rgb_to_yiq(out), rgb_to_yiq(stylized), rgb_to_yiq(content)
    inside = ((yiq_to_rgb(torch.cat([yiq_st[:1], yiq_ct[1:]])) - 0.5).abs() < 0.5).all(0)
    torch.testing.assert_close(yiq_out[0][inside], yiq_st[0][inside], atol=1e-4, rtol=0)
    torch.testing.assert_close(yiq_out[1:, inside], yiq_ct[1:, inside], atol=1e-4, rtol=0)


def test_covariance_matches_the_content_colour_statistics():
    content = torch.stack([_image(3)[0] * 0.2 + 0.6, _image(4)[0] * 0.3 + 0.1, _image(5)[0] * 0.1 + 0.4])
    stylized = _image(6) * 0.4 + 0.3
    out = preserve_color(stylized.unsqueeze(0), content.unsqueeze(0), "covariance")[0]
    torch.testing.assert_close(out.mean(dim=(1, 2)), content.mean(dim=(1, 2)), atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.cov(out.reshape(3, -1)), torch.cov(content.reshape(3, -1)), atol=1e-3, rtol=0)


def test_content_of_another_size_is_resized_and_none_is_identity():
    stylized = _image(7, (1, 3, 20, 30))
    content = _image(8, (1, 3, 40, 60))
    assert preserve_color(stylized, content, "luminance").shape == stylized.shape
    assert preserve_color(stylized, content, "none") is stylized
    with pytest.raises(ValueError, match="preserve_color must be one of none, luminance, covariance, histogram"):
        preserve_color(stylized, content, "lab")


def test_colour_moments_over_parts_equal_the_whole_image():
    """stylize accumulates the covariance statistics band by band; parts of any size combine
    to torch.cov of the whole, even far from zero mean."""
    from instyle.engine.color import ColorMoments

    image = 0.9 + 0.01 * _image(6, (3, 50, 40)).double()
    moments = ColorMoments()
    for y0, y1 in ((0, 1), (1, 17), (17, 50)):
        moments.add(image[:, y0:y1])
    pixels = image.reshape(3, -1)
    torch.testing.assert_close(moments.mean[:, 0], pixels.mean(1), atol=1e-15, rtol=0)
    torch.testing.assert_close(moments.covariance(), torch.cov(pixels), atol=1e-15, rtol=1e-12)


def _levels(seed, shape, low, high):
    """Random 8-bit levels in [low, high] as floats: exactly what a saved image holds."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, shape, generator=g).double() / 255


def test_histogram_matching_equals_skimage_match_histograms():
    """On 8-bit levels (the values a saved image holds), exactly skimage's per-channel matching."""
    exposure = pytest.importorskip("skimage.exposure")
    content = torch.stack([_levels(10, (36, 52), 100, 220), _levels(11, (36, 52), 0, 90), _levels(12, (36, 52), 30, 60)])
    stylized = torch.stack([_levels(13, (36, 52), 0, 255), _levels(14, (36, 52), 50, 80), _levels(15, (36, 52), 200, 255)])
    out = preserve_color(stylized.unsqueeze(0), content.unsqueeze(0), "histogram")[0]
    expected = exposure.match_histograms(stylized.numpy(), content.numpy(), channel_axis=0)
    torch.testing.assert_close(out, torch.from_numpy(expected), atol=1e-12, rtol=0)
    # skimage on the uint8 images: the same values, truncated to uint8 by skimage
    as_uint8 = [(x * 255).round().to(torch.uint8).numpy() for x in (stylized, content)]
    theirs = torch.from_numpy(exposure.match_histograms(*as_uint8, channel_axis=0)).double()
    difference = out * 255 - theirs
    assert difference.min() > -1e-9 and difference.max() < 1
    # a float32 image and a content of another size: same levels, resized content
    small = preserve_color(stylized.float(), content[:, ::2, ::2].float(), "histogram")
    assert small.dtype == torch.float32 and small.shape == stylized.shape


def test_histogram_matching_gives_the_content_histogram():
    """Each channel's cumulative histogram becomes the content's: at every content level, the
    share of output values at or below it is the content's share, within the largest share
    of one source level (the quantization of 256 levels: one level is never split)."""
    content = torch.stack([_levels(20, (64, 64), 40, 200), _levels(21, (64, 64), 0, 255), _levels(22, (64, 64), 90, 110)])
    stylized = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    out = histogram_matching(stylized, content)
    for c in range(3):
        source_levels = torch.bincount((stylized[c] * 255).round().long().flatten(), minlength=256)
        slack = source_levels.max().item() / stylized[c].numel() + 1e-12
        for level in (content[c] * 255).round().unique():
            got = (out[c] * 255 <= level + 1e-6).double().mean()
            want = ((content[c] * 255).round() <= level).double().mean()
            assert abs(got - want) <= slack
        assert out[c].min() >= content[c].min() and out[c].max() <= content[c].max()


@pytest.mark.parametrize("method", ["covariance", "histogram"])
def test_band_transfer_over_bands_equals_the_whole_image(method):
    """stylize finishes these methods band by band: bands of any size give the whole-image result."""
    stylized, content = _image(30, (1, 3, 50, 40)), _image(31, (1, 3, 50, 40)) * 0.5 + 0.2
    whole = preserve_color(stylized, content, method)
    transfer = BandTransfer(method)
    bands = ((0, 1), (1, 17), (17, 50))
    for y0, y1 in bands:
        transfer.add(stylized[:, :, y0:y1])
    for y0, y1 in reversed(bands):
        transfer.add_content(content[:, :, y0:y1])
    banded = torch.cat([transfer.apply(stylized[:, :, y0:y1]) for y0, y1 in bands], dim=2)
    assert torch.equal(banded, whole)
    with pytest.raises(ValueError, match="method must be one of covariance, histogram"):
        BandTransfer("luminance")
