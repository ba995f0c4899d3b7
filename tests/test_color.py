"""Colour preservation: luminance-only transfer and colour-statistics matching."""

import pytest
import torch

from instyle.engine.color import preserve_color, rgb_to_yiq, yiq_to_rgb


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


def test_histogram_matches_the_content_colour_statistics():
    content = torch.stack([_image(3)[0] * 0.2 + 0.6, _image(4)[0] * 0.3 + 0.1, _image(5)[0] * 0.1 + 0.4])
    stylized = _image(6) * 0.4 + 0.3
    out = preserve_color(stylized.unsqueeze(0), content.unsqueeze(0), "histogram")[0]
    torch.testing.assert_close(out.mean(dim=(1, 2)), content.mean(dim=(1, 2)), atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.cov(out.reshape(3, -1)), torch.cov(content.reshape(3, -1)), atol=1e-3, rtol=0)


def test_content_of_another_size_is_resized_and_none_is_identity():
    stylized = _image(7, (1, 3, 20, 30))
    content = _image(8, (1, 3, 40, 60))
    assert preserve_color(stylized, content, "luminance").shape == stylized.shape
    assert preserve_color(stylized, content, "none") is stylized
    with pytest.raises(ValueError, match="preserve_color must be one of none, luminance, histogram"):
        preserve_color(stylized, content, "lab")


def test_colour_moments_over_parts_equal_the_whole_image():
    """stylize accumulates the histogram statistics band by band; parts of any size combine
    to torch.cov of the whole, even far from zero mean."""
    from instyle.engine.color import ColorMoments

    image = 0.9 + 0.01 * _image(6, (3, 50, 40)).double()
    moments = ColorMoments()
    for y0, y1 in ((0, 1), (1, 17), (17, 50)):
        moments.add(image[:, y0:y1])
    pixels = image.reshape(3, -1)
    torch.testing.assert_close(moments.mean[:, 0], pixels.mean(1), atol=1e-15, rtol=0)
    torch.testing.assert_close(moments.covariance(), torch.cov(pixels), atol=1e-15, rtol=1e-12)
