"""instyle.image against real files written by Pillow in tmp_path (no mocks): the cases listed
under "Images" in docs ROBUSTNESS.md, save round trips, atomic writes, and the shared data."""

import io
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from instyle.engine.image import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    default_content_images,
    iter_image_files,
    load_image,
    load_pixels,
    pixels_to_float,
    resize_long_side,
    save_image,
    to_pil,
)

ROOT = Path(__file__).resolve().parents[1]
# ../shared relative to the repo root; INSTYLE_SHARED_DATA points a worktree elsewhere.
SHARED_DATA = Path(os.environ.get("INSTYLE_SHARED_DATA", ROOT.parent / "shared" / "data"))

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _rgb(values) -> torch.Tensor:
    """An RGB triple in 0..255 as a (3,) tensor in [0, 1]."""
    return torch.tensor(values, dtype=torch.float32) / 255


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h: int, w: int) -> torch.Tensor:
    """A smooth (3, H, W) picture that lossy codecs keep close."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([x, y, 0.5 + 0.4 * torch.sin(6 * x) * torch.cos(4 * y)])


def _declare_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG with its IHDR claiming another size (CRC fixed, pixel data unchanged)."""
    assert png[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def _pillow(path, lazy: bool = False) -> Image.Image:
    """What Pillow itself makes of a file, with the file closed again (lazy: header only)."""
    with open(path, "rb") as f:
        image = Image.open(io.BytesIO(f.read()))
    if not lazy:
        image.load()
    return image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- what loads, and how


def test_rgb_png_loads_exactly(tmp_path):
    pixels = _noise(5, 9)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.dtype == torch.float32 and image.shape == (3, 5, 9) and image.is_contiguous()
    torch.testing.assert_close(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)


# Quadrants of a 32x16 (W x H) picture; orientation o displays it so the top-left shows
# the quadrant named here (EXIF 2.3, "Orientation"), in a W x H or H x W frame.
QUADRANTS = {"tl": RED, "tr": GREEN, "bl": BLUE, "br": WHITE}


@pytest.mark.parametrize(
    "orientation, top_left, shape",
    [
        (1, "tl", (16, 32)),  # as stored
        (3, "br", (16, 32)),  # rotated 180
        (6, "bl", (32, 16)),  # phone held upright: rotate 90 clockwise
        (8, "tr", (32, 16)),  # rotate 90 counter-clockwise
        (2, "tr", (16, 32)),  # mirrored
    ],
)
def test_exif_orientation_applied(tmp_path, orientation, top_left, shape):
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:8, :16], pixels[:8, 16:] = QUADRANTS["tl"], QUADRANTS["tr"]
    pixels[8:, :16], pixels[8:, 16:] = QUADRANTS["bl"], QUADRANTS["br"]
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    assert _pillow(path).getexif()[0x0112] == orientation

    image = load_image(path)
    assert image.shape[1:] == shape
    torch.testing.assert_close(image[:, 2, 2], _rgb(QUADRANTS[top_left]), atol=0.06, rtol=0)


def test_rgba_composited_on_white_hides_no_colour(tmp_path):
    pixels = np.zeros((2, 3, 4), np.uint8)
    pixels[0, :] = (255, 0, 0, 0)  # red, fully transparent: must not show
    pixels[1, 0] = (0, 255, 0, 255)  # opaque green
    pixels[1, 1] = (0, 0, 255, 128)  # half-transparent blue
    pixels[1, 2] = (7, 99, 201, 0)  # another hidden colour
    Image.fromarray(pixels, "RGBA").save(tmp_path / "alpha.png")

    image = load_image(tmp_path / "alpha.png")
    a = 128 / 255
    torch.testing.assert_close(image[:, 0, :], torch.ones(3, 3))
    torch.testing.assert_close(image[:, 1, 0], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(image[:, 1, 1], torch.tensor([1 - a, 1 - a, 1.0]))
    torch.testing.assert_close(image[:, 1, 2], torch.ones(3))


def test_la_and_palette_transparency_composited(tmp_path):
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA")  # black: hidden, shown
    la.save(tmp_path / "la.png")
    torch.testing.assert_close(load_image(tmp_path / "la.png")[:, 0, :], torch.tensor([[1.0, 0.0]] * 3))

    palette = Image.new("P", (2, 1))
    palette.putpalette([*RED, *BLUE])
    palette.putdata([0, 1])
    palette.info["transparency"] = 0  # index 0 (red) transparent
    palette.save(tmp_path / "p.png")
    palette.save(tmp_path / "p.gif")
    for name in ("p.png", "p.gif"):
        image = load_image(tmp_path / name)
        torch.testing.assert_close(image[:, 0], torch.stack([torch.ones(3), _rgb(BLUE)]).T, msg=name)

    keyed = Image.fromarray(np.array([[RED, GREEN]], np.uint8))  # RGB PNG with a tRNS colour key
    keyed.save(tmp_path / "key.png", transparency=RED)
    torch.testing.assert_close(load_image(tmp_path / "key.png")[:, 0], torch.stack([torch.ones(3), _rgb(GREEN)]).T)


def test_16bit_png_scaled_not_saturated(tmp_path):
    values = np.linspace(0, 65535, 6 * 11).round().astype(np.uint16).reshape(6, 11)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert _pillow(tmp_path / "deep.png").mode.startswith("I")

    image = load_image(tmp_path / "deep.png")
    expected = torch.from_numpy(values.astype(np.float32) / 65535)
    for channel in image:
        torch.testing.assert_close(channel, expected)
    assert len(torch.unique(image[0])) == values.size  # every level kept, none clipped to 1


def test_32bit_int_tiff_scaled_by_its_range(tmp_path):
    in_16_bits = np.array([[0, 1000, 65535]], np.int32)
    Image.fromarray(in_16_bits).save(tmp_path / "i16.tif")
    assert _pillow(tmp_path / "i16.tif").mode == "I"
    torch.testing.assert_close(load_image(tmp_path / "i16.tif")[0, 0], torch.tensor([0, 1000 / 65535, 1.0]))

    wide = np.array([[-5, 95, 100_000 - 5]], np.int32)  # beyond 16 bits: stretched min..max
    Image.fromarray(wide).save(tmp_path / "i32.tif")
    torch.testing.assert_close(load_image(tmp_path / "i32.tif")[0, 0], torch.tensor([0.0, 1e-3, 1.0]))


def test_float_tiff_kept_or_stretched_never_saturated(tmp_path):
    unit = np.linspace(0, 1, 4 * 5, dtype=np.float32).reshape(4, 5)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    assert _pillow(tmp_path / "unit.tif").mode == "F"
    torch.testing.assert_close(load_image(tmp_path / "unit.tif")[1], torch.from_numpy(unit))

    hdr = np.array([[-1.0, 0.0, 3.0]], np.float32)  # outside [0, 1]: stretched, order kept
    Image.fromarray(hdr).save(tmp_path / "hdr.tif")
    torch.testing.assert_close(load_image(tmp_path / "hdr.tif")[2, 0], torch.tensor([0.0, 0.25, 1.0]))

    Image.fromarray(np.array([[0.5, np.nan]], np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(ImageError, match="nan.tif.*NaN"):
        load_image(tmp_path / "nan.tif")


def test_cmyk_jpeg_converted(tmp_path):
    cmyk = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red
    cmyk.paste((255, 0, 0, 0), (16, 0, 32, 16))  # cyan
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    assert _pillow(tmp_path / "cmyk.jpg").mode == "CMYK"

    image = load_image(tmp_path / "cmyk.jpg")
    assert image.shape == (3, 16, 32)
    torch.testing.assert_close(image[:, 8, 4], torch.tensor([1.0, 0.0, 0.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(image[:, 8, 28], torch.tensor([0.0, 1.0, 1.0]), atol=0.03, rtol=0)


def test_grayscale_and_bilevel_become_rgb(tmp_path):
    Image.fromarray(np.array([[0, 128, 255]], np.uint8)).save(tmp_path / "l.png")
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "one.bmp")
    torch.testing.assert_close(load_image(tmp_path / "l.png"), torch.tensor([0, 128 / 255, 1.0]).expand(3, 1, 3))
    torch.testing.assert_close(load_image(tmp_path / "one.bmp"), torch.tensor([1.0, 0.0]).expand(3, 1, 2))


@pytest.mark.parametrize("ext", ["gif", "png", "webp"])
def test_animated_first_frame(tmp_path, ext):
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / f"anim.{ext}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    assert _pillow(path).n_frames == 3

    image = load_image(path)
    assert image.shape == (3, 8, 8)
    torch.testing.assert_close(image, _rgb(RED)[:, None, None].expand(3, 8, 8), atol=0.02, rtol=0)


def test_multi_picture_jpeg_loads_first_picture(tmp_path):
    # Phone cameras write MPO (JPEG + extra pictures); Pillow reports it as "MPO", not "JPEG".
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (16, 8), RED).save(path, "MPO", save_all=True, append_images=[Image.new("RGB", (16, 8), BLUE)])
    assert _pillow(path).format == "MPO"
    torch.testing.assert_close(load_image(path)[:, 4, 4], _rgb(RED), atol=0.02, rtol=0)


@pytest.mark.parametrize("size", [(1, 1), (2, 7), (7, 2)])
@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "tiff", "gif", "webp"])
def test_tiny_images_load(tmp_path, size, ext):
    width, height = size
    Image.new("RGB", size, (200, 40, 90)).save(tmp_path / f"tiny.{ext}")
    image = load_image(tmp_path / f"tiny.{ext}")
    assert image.shape == (3, height, width)
    torch.testing.assert_close(image[:, 0, 0], _rgb((200, 40, 90)), atol=0.05, rtol=0)


def test_format_comes_from_the_header_not_the_extension(tmp_path):
    Image.new("RGB", (3, 2), GREEN).save(tmp_path / "really_a_png.jpg", format="PNG")
    torch.testing.assert_close(load_image(tmp_path / "really_a_png.jpg"), _rgb(GREEN)[:, None, None].expand(3, 2, 3))

    Image.new("RGB", (3, 2)).save(tmp_path / "really_a_ppm.png", format="PPM")
    with pytest.raises(ImageError, match="really_a_ppm.png: not an image in an allowed format"):
        load_image(tmp_path / "really_a_ppm.png")


def test_other_sources_match_the_file(tmp_path):
    pixels = _noise(4, 6, seed=3)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    from_path = load_image(str(path))
    torch.testing.assert_close(load_image(path.read_bytes()), from_path)
    torch.testing.assert_close(load_image(bytearray(path.read_bytes())), from_path)
    torch.testing.assert_close(load_image(_pillow(path, lazy=True)), from_path)
    torch.testing.assert_close(load_image(pixels), from_path)


def test_arrays_by_dtype_and_shape():
    torch.testing.assert_close(load_image(np.array([[0, 65535]], np.uint16)), torch.tensor([0.0, 1.0]).expand(3, 1, 2))
    torch.testing.assert_close(load_image(np.array([[True, False]])), torch.tensor([1.0, 0.0]).expand(3, 1, 2))
    clamped = load_image(np.array([[[-0.5], [1.5]]], np.float64))
    torch.testing.assert_close(clamped, torch.tensor([0.0, 1.0]).expand(3, 1, 2))
    rgba = np.array([[[0, 0, 0, 0]]], np.uint8)  # transparent black: white, as for files
    torch.testing.assert_close(load_image(rgba), torch.ones(3, 1, 1))

    with pytest.raises(ImageError, match="<array>: expected shape"):
        load_image(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.array([[np.nan]]))
    with pytest.raises(ImageError, match="unsupported dtype int64"):
        load_image(np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="list"):
        load_image([[0]])


# ------------------------------------------------------------------------------ what is refused


def test_pixel_limit_checked_before_decoding(tmp_path):
    # ~12 KB PNGs whose headers declare more pixels than their data holds. Decoding would need
    # GBs, and would fail on the short data with "cannot decode": the size error proves that
    # the refusal came from the header, before any pixel was decoded.
    png = _png_bytes(Image.fromarray(_noise(64, 64)))
    for width, height in [(20000, 20000), (8000, 8000)]:
        path = tmp_path / f"bomb_{width}.png"
        path.write_bytes(_declare_size(png, width, height))
        assert 10_000 < path.stat().st_size < 16_000
        with pytest.raises(ImageError, match=rf"bomb_{width}.png: .*(too many pixels|pixels exceeds)"):
            load_image(path)
    with pytest.raises(ImageError, match="bomb_8000.png: 8000x8000 = 64000000 pixels exceeds the limit of 50000000"):
        load_image(tmp_path / "bomb_8000.png")
    with pytest.raises(ImageError, match="bomb_20000.png: too many pixels: over the limit of 50000000"):
        load_image(tmp_path / "bomb_20000.png")  # Pillow's own refusal, as our error


def test_pillow_bomb_warning_becomes_our_error(tmp_path):
    # 10000 x 10000: Pillow only warns (over 89 MP, under 179 MP); our 50 MP limit refuses.
    path = tmp_path / "warns.png"
    path.write_bytes(_declare_size(_png_bytes(Image.fromarray(_noise(64, 64))), 10000, 10000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        expected = f"warns.png: 10000x10000 = 100000000 pixels exceeds the limit of {DEFAULT_MAX_PIXELS}"
        with pytest.raises(ImageError, match=expected):
            load_image(path)


def test_our_limit_decides_over_pillows_warning(tmp_path, monkeypatch):
    Image.new("RGB", (40, 40)).save(tmp_path / "1600.png")
    Image.new("RGB", (50, 50)).save(tmp_path / "2500.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns over 1000, refuses over 2000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "1600.png").shape == (3, 40, 40)
        with pytest.raises(ImageError, match="1600.png: 40x40 = 1600 pixels exceeds the limit of 1599"):
            load_image(tmp_path / "1600.png", max_pixels=1599)
        with pytest.raises(ImageError, match="2500.png: too many pixels.*MAX_IMAGE_PIXELS"):
            load_image(tmp_path / "2500.png", max_pixels=10_000)


def test_pixel_limit_from_argument_and_environment(tmp_path, monkeypatch):
    Image.new("RGB", (20, 20)).save(tmp_path / "400.png")
    assert load_image(tmp_path / "400.png", max_pixels=400).shape == (3, 20, 20)
    with pytest.raises(ImageError, match="exceeds the limit of 399"):
        load_image(tmp_path / "400.png", max_pixels=399)
    with pytest.raises(ImageError, match="exceeds the limit of 399"):
        load_image(_pillow(tmp_path / "400.png", lazy=True), max_pixels=399)

    monkeypatch.setenv("INSTYLE_MAX_PIXELS", "100")
    with pytest.raises(ImageError, match="exceeds the limit of 100 .*INSTYLE_MAX_PIXELS"):
        load_image(tmp_path / "400.png")
    assert load_image(tmp_path / "400.png", max_pixels=1000).shape == (3, 20, 20)  # argument wins

    monkeypatch.setenv("INSTYLE_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="INSTYLE_MAX_PIXELS='lots'"):
        load_image(tmp_path / "400.png")
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        load_image(tmp_path / "400.png", max_pixels=0)


def test_truncated_files(tmp_path):
    full = tmp_path / "full.jpg"
    Image.fromarray(_noise(64, 64)).save(full, quality=90)
    data = full.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "header_only.png").write_bytes(_png_bytes(Image.new("RGB", (8, 8)))[:20])
    png = _png_bytes(Image.fromarray(_noise(32, 32)))
    (tmp_path / "half.png").write_bytes(png[: len(png) // 2])

    with pytest.raises(ImageError, match=r"half.jpg: cannot decode JPEG data .*truncated"):
        load_image(tmp_path / "half.jpg")
    with pytest.raises(ImageError, match="half.png: cannot decode PNG data"):
        load_image(tmp_path / "half.png")
    with pytest.raises(ImageError, match="header_only.png: cannot read the image header"):
        load_image(tmp_path / "header_only.png")


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("page.jpg", b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>", "looks like HTML"),
        ("notes.png", b"just some text, not pixels\n" * 10, "not an image in an allowed format"),
        ("random.webp", bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)), "not an image"),
    ],
)
def test_non_images_raise_one_error_naming_the_path(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=f"{name}: .*{reason}") as caught:
        load_image(path)
    assert isinstance(caught.value, ValueError)
    assert caught.value.source == str(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="nope.png: No such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def _fits() -> bytes:
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8", "NAXIS   =                    2",
             "NAXIS1  =                    4", "NAXIS2  =                    4", "END"]  # fmt: skip
    header = b"".join(card.encode().ljust(80) for card in cards).ljust(2880)
    return header + bytes(2880)


def _psd() -> bytes:
    # Signature, version 1, 3 channels, 2 x 4, 8-bit RGB; empty sections; raw planes.
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 2, 4, 8, 3)
    return header + struct.pack(">IIIH", 0, 0, 0, 0) + bytes(3 * 2 * 4)


def _pillow_written(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), RED).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt, content",
    [
        ("EPS", lambda: _pillow_written("EPS")),  # decoding runs Ghostscript
        ("PSD", _psd),
        ("FITS", _fits),
        ("PPM", lambda: _pillow_written("PPM")),
        ("ICO", lambda: _pillow_written("ICO")),
        ("TGA", lambda: _pillow_written("TGA")),
    ],
)
def test_formats_outside_the_allowlist_refused(tmp_path, fmt, content):
    path = tmp_path / "picture.png"
    path.write_bytes(content())
    with Image.open(path) as image:  # Pillow would read it...
        assert image.format == fmt
    with pytest.raises(ImageError, match=r"picture.png: not an image in an allowed format \(PNG, JPEG"):
        load_image(path)  # ...we do not
    with pytest.raises(ImageError, match="<bytes>: not an image in an allowed format"):
        load_image(path.read_bytes())


# ----------------------------------------------------------------------------------------- save


def test_png_round_trip_exact(tmp_path):
    image = torch.from_numpy(_noise(7, 5, seed=1)).permute(2, 0, 1).float() / 255
    path = save_image(image, tmp_path / "out.png")
    assert path == tmp_path / "out.png"
    assert _pillow(path).format == "PNG"
    torch.testing.assert_close(load_image(path), image)


@pytest.mark.parametrize("ext, fmt", [("jpg", "JPEG"), ("jpeg", "JPEG"), ("JPG", "JPEG"), ("webp", "WEBP")])
def test_lossy_round_trips(tmp_path, ext, fmt):
    image = _smooth(40, 60)
    path = save_image(image.unsqueeze(0), tmp_path / f"out.{ext}")  # (1, 3, H, W) accepted
    assert _pillow(path).format == fmt
    loaded = load_image(path)
    assert loaded.shape == image.shape
    assert (loaded - image).abs().mean() < 0.01


def test_save_clamps_and_accepts_pil(tmp_path):
    image = torch.tensor([-0.5, 0.5, 1.5]).expand(3, 1, 3).contiguous()
    save_image(image, tmp_path / "clamped.png")
    torch.testing.assert_close(load_image(tmp_path / "clamped.png"), torch.tensor([0, 128 / 255, 1.0]).expand(3, 1, 3))

    rgba = Image.fromarray(np.array([[[255, 0, 0, 0], [0, 0, 255, 255]]], np.uint8), "RGBA")
    save_image(rgba, tmp_path / "rgba.png")
    assert _pillow(tmp_path / "rgba.png").mode == "RGBA"  # PNG keeps the alpha
    save_image(rgba, tmp_path / "rgba.jpg")  # JPEG has none: composited on white, as load does
    torch.testing.assert_close(load_image(tmp_path / "rgba.jpg")[:, 0, 0], torch.ones(3), atol=0.1, rtol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_output_refused_and_old_file_kept(tmp_path, bad):
    path = tmp_path / "out.png"
    save_image(torch.full((3, 4, 4), 0.25), path)
    before = path.read_bytes()
    image = torch.full((3, 4, 4), 0.5)
    image[1, 2, 3] = bad
    with pytest.raises(ValueError, match="out.png: 1 of 48 values are NaN or infinite"):
        save_image(image, path)
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_pil(image)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_failed_save_leaves_old_file_intact(tmp_path):
    path = tmp_path / "out.webp"
    save_image(_smooth(8, 8), path)
    before = path.read_bytes()
    # WebP cannot hold 16384 pixels across: the encoder fails midway through a real save.
    with pytest.raises((ValueError, OSError), match="WebP"):
        save_image(torch.zeros(3, 1, 16384), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.webp"]  # no temporary file left behind


def test_save_replaces_and_keeps_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    new = save_image(_smooth(4, 4), tmp_path / "new.png")
    assert new.stat().st_mode & 0o777 == 0o666 & ~umask  # like any new file, not mkstemp's 0600

    path = tmp_path / "kept.png"
    save_image(torch.zeros(3, 4, 4), path)
    path.chmod(0o640)
    save_image(torch.ones(3, 4, 4), path)
    assert path.stat().st_mode & 0o777 == 0o640
    torch.testing.assert_close(load_image(path), torch.ones(3, 4, 4))


def test_save_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"out.gif: cannot tell the format from '.gif'"):
        save_image(torch.zeros(3, 2, 2), tmp_path / "out.gif")
    with pytest.raises(ValueError, match=r"expected shape \(3, H, W\) or \(1, 3, H, W\), got \(2, 3, 2, 2\)"):
        save_image(torch.zeros(2, 3, 2, 2), tmp_path / "out.png")
    with pytest.raises(ValueError, match="float tensor"):
        save_image(torch.zeros(3, 2, 2, dtype=torch.uint8), tmp_path / "out.png")
    with pytest.raises(FileNotFoundError, match="missing"):
        save_image(torch.zeros(3, 2, 2), tmp_path / "missing" / "out.png")
    assert os.listdir(tmp_path) == []


def test_to_pil():
    pil = to_pil(torch.tensor([0.0, 0.5, 1.0]).expand(1, 3, 2, 3))
    assert pil.mode == "RGB" and pil.size == (3, 2)
    assert pil.getpixel((1, 1)) == (128, 128, 128)


# -------------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "shape, size, expected",
    [
        ((3, 100, 50), 40, (3, 40, 20)),  # portrait, down
        ((3, 50, 100), 40, (3, 20, 40)),  # landscape, down
        ((2, 3, 7, 2), 14, (2, 3, 14, 4)),  # batch, up
        ((3, 1, 1000), 10, (3, 1, 10)),  # short side never below 1
        ((3, 33, 33), 33, (3, 33, 33)),  # already there
    ],
)
def test_resize_long_side_shapes(shape, size, expected):
    image = torch.rand(shape)
    out = resize_long_side(image, size)
    assert out.shape == expected
    assert 0 <= out.min() and out.max() <= 1
    assert image.shape == shape  # caller's tensor untouched


def test_resize_long_side_antialiased():
    # 63 -> 9 samples every 7th pixel centre: without a low-pass filter each output pixel is a
    # single 0 or 1 of the checkerboard; antialiased, each averages a 7x7 patch to about 0.5.
    checker = ((torch.arange(63)[:, None] + torch.arange(63)[None, :]) % 2).float()
    out = resize_long_side(checker.expand(3, 63, 63), 9)
    torch.testing.assert_close(out, torch.full((3, 9, 9), 0.5), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="size must be a positive int"):
        resize_long_side(torch.rand(3, 4, 4), 0)


def test_iter_image_files(tmp_path):
    for name in ["b.png", "a.JPG", "c.txt", ".hidden.png", "._a.jpg", "sub/d.webp", "sub/deeper/e.tiff"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")

    def names(paths, **kw):
        return [p.relative_to(tmp_path).as_posix() for p in iter_image_files(paths, **kw)]

    assert names(tmp_path) == ["a.JPG", "b.png"]
    assert names(str(tmp_path), recursive=True) == ["a.JPG", "b.png", "sub/d.webp", "sub/deeper/e.tiff"]
    assert names(str(tmp_path / "*.png")) == ["b.png"]
    assert names(str(tmp_path / "**" / "*.webp"), recursive=True) == ["sub/d.webp"]
    assert names([tmp_path / "c.txt", tmp_path, tmp_path / "b.png"]) == ["c.txt", "a.JPG", "b.png"]  # each once
    with pytest.raises(FileNotFoundError, match="nope.png: no such file"):
        list(iter_image_files(tmp_path / "nope.png"))
    with pytest.raises(FileNotFoundError, match="no files match"):
        list(iter_image_files(str(tmp_path / "*.gif")))


def _listed(paths, recursive, timeout=20):
    """iter_image_files in a thread, so that a walk that never ends fails the test instead of hanging it."""
    found = []
    worker = threading.Thread(target=lambda: found.append(list(iter_image_files(paths, recursive=recursive))), daemon=True)
    worker.start()
    worker.join(timeout)
    assert found, f"iter_image_files({paths!r}) did not finish in {timeout} s"
    return found[0]


def test_iter_image_files_enters_each_real_folder_once(tmp_path):
    """Links to folders are followed, but a folder reached again (a loop, or a second link to it)
    is not entered again: globs with "**" and --recursive walks end, each photo listed once."""
    loop = tmp_path / "loopdir"
    for name in ["a.png", "sub/b.png", "sub/.hidden/c.png"]:
        (loop / name).parent.mkdir(parents=True, exist_ok=True)
        (loop / name).write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "d.png").write_bytes(b"x")
    (loop / "self").symlink_to(".")
    (loop / "up").symlink_to("../loopdir")
    (loop / "sub" / "back").symlink_to("..")
    (loop / "there").symlink_to("../elsewhere")

    def names(paths, recursive=True):
        return [p.relative_to(tmp_path).as_posix() for p in _listed(paths, recursive)]

    walked = ["loopdir/a.png", "loopdir/sub/.hidden/c.png", "loopdir/sub/b.png", "loopdir/there/d.png"]
    assert names(loop) == walked
    globbed = ["loopdir/a.png", "loopdir/sub/b.png", "loopdir/there/d.png"]  # glob's "**" skips hidden folders
    assert names(str(loop / "**" / "*.png")) == globbed
    assert names(str(loop / "**")) == walked  # folders matched are walked in turn
    # below sub, back leads to loopdir once more: its photos are listed under that name, once
    below_sub = ["loopdir/sub/b.png", "loopdir/sub/back/a.png", "loopdir/sub/back/there/d.png"]
    assert names(str(tmp_path / "loop*" / "su*" / "**" / "*.png")) == below_sub
    # without "**" (or not recursive, where "**" is "*") a glob names what it matches, links
    # included: a.png as self/a.png, once
    one_down = ["loopdir/self/a.png", "loopdir/sub/b.png", "loopdir/there/d.png"]
    assert names(str(loop / "*" / "*.png"), recursive=False) == one_down
    assert names(str(loop / "**" / "*.png"), recursive=False) == one_down


def test_default_content_images():
    images = default_content_images()
    names = [name for name, _ in images]
    assert {"astronaut", "coffee", "chelsea", "rocket"} <= set(names)
    assert len(set(names)) == len(names)
    for name, image in images:
        assert image.dtype == torch.float32 and image.dim() == 3 and image.shape[0] == 3, name
        assert 0 <= image.min() and image.max() <= 1, name
        assert (image[0] - image[1]).abs().mean() > 0.01, f"{name} is not a colour photo"


# ----------------------------------------------------------------------------------- shared data


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} not present")
@pytest.mark.parametrize("relative", ["content/amber.jpg", "content/chicago.jpg", "styles/starry_night.jpg"])
def test_shared_data_images(relative):
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} not present")
    image = load_image(path)
    with Image.open(path) as raw:
        width, height = ImageOps.exif_transpose(raw).size
    assert image.shape == (3, height, width)
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.05
    small = resize_long_side(image, 256)
    assert max(small.shape[1:]) == 256


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "RGBA", "I;16"])
def test_load_pixels_is_load_image_without_the_float_copy(tmp_path, mode):
    """8-bit opaque images come back as uint8 whose x / 255 is load_image's float32, bit for
    bit; the others (transparency, 16-bit) as load_image's float32 itself."""
    g = np.random.default_rng(5)
    rgba = Image.fromarray(g.integers(0, 256, (23, 31, 4), dtype=np.uint8), "RGBA")
    image = rgba if mode == "RGBA" else rgba.convert("RGB").convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    pixels = load_pixels(path)
    assert pixels.shape == (3, 23, 31)
    assert pixels.dtype == (torch.float32 if mode in ("RGBA", "I;16") else torch.uint8)
    assert torch.equal(pixels_to_float(pixels), load_image(path))
    assert torch.equal(pixels_to_float(load_pixels(Image.open(path))), load_image(Image.open(path)))


def test_load_pixels_checks_like_load_image(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png: empty file"):
        load_pixels(empty)
    array = np.zeros((4, 5, 3), dtype=np.uint8)
    assert load_pixels(array).dtype == torch.uint8 and load_pixels(array).shape == (3, 4, 5)
