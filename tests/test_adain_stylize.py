"""instyle stylize --style PAINTING (issue #18, part 3): arbitrary style transfer with AdaIN at
inference: strength, mixed paintings, masks, exact tiles, the Python API's kinds, and bad input.
Every run uses the real VGG-19 encoder and a seeded, untrained decoder on tiny images."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import instyle
from instyle.apps.cli import main
from instyle.engine import catalog
from instyle.engine.image import load_image, resize_long_side, save_image
from instyle.engine.inference import adain as adain_module
from instyle.engine.inference.adain import load_adain
from instyle.engine.models.adain import adain, feature_stats
from .conftest import save_spread_decoder
from .test_cli import run_cli

LEVEL = 1 / 255
STYLE = 128  # the paintings' long side for their statistics: 512 by default, smaller for speed


@pytest.fixture(scope="module")
def decoder_file(tmp_path_factory) -> Path:
    """The shared spread test decoder."""
    return save_spread_decoder(tmp_path_factory.mktemp("decoder") / "decoder.safetensors")


@pytest.fixture(scope="module")
def model(decoder_file):
    return load_adain(decoder_file)


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth gradient with noise: structure for the encoder, colours for the statistics."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([ys, xs, (ys + xs) / 2]) * torch.rand(3, 1, 1, generator=g)
    return (base + 0.3 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    save_image(_image(96, 80, 1), folder / "photo.png")
    save_image(_image(96, 96, 2), folder / "monet.png")
    save_image(_image(80, 112, 3), folder / "klimt.png")
    return folder


def _painting_stats(model, painting: torch.Tensor, size: int = STYLE):
    return feature_stats(model.encoder(resize_long_side(painting, size)[None])["relu4_1"])


def _far(a: torch.Tensor, b: torch.Tensor) -> float:
    """How far apart two results are: their largest difference."""
    return float((a - b).abs().max())


def _decoded(model, features: torch.Tensor) -> torch.Tensor:
    return model.decoder(features).clamp(0, 1)[0]


# ---------------------------------------------------------------------------- the command, end to end


def test_cli_stylizes_with_a_painting_file_as_the_api_does(files, decoder_file, tmp_path):
    out = tmp_path / "out"
    result = run_cli("stylize", files / "photo.png", "--style", files / "monet.png", "--decoder", decoder_file, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "photo_monet.png" in result.stdout
    written = np.asarray(Image.open(out / "photo_monet.png")).astype(int)
    expected = np.asarray(instyle.stylize(Image.open(files / "photo.png"), style=files / "monet.png", decoder=decoder_file))
    assert written.shape == (96, 80, 3)
    assert np.abs(written - expected.astype(int)).max() <= 1


def test_a_bundled_style_name_as_style_is_the_bundled_model(files, tmp_path, capsys):
    assert main(["stylize", str(files / "photo.png"), "--style", "starry_night", "-o", str(tmp_path / "a"), "--dtype", "fp32"]) == 0
    assert main(["stylize", str(files / "photo.png"), "--model", "starry_night", "-o", str(tmp_path / "b"), "--dtype", "fp32"]) == 0
    a, b = (load_image(tmp_path / d / "photo_starry_night.png") for d in "ab")
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------- what it computes


def test_strength_0_is_the_reconstruction_and_1_the_full_adain(model, files):
    photo, painting = load_image(files / "photo.png"), load_image(files / "monet.png")
    with torch.no_grad():
        features = model.encoder(photo[None])["relu4_1"]
        reconstruction = _decoded(model, features)
        full = _decoded(model, adain(features, *_painting_stats(model, painting, 512)))
    # the default style size (512), through instyle.stylize; then the statistics once
    one = instyle.stylize(photo, style=painting, strength=1.0, dtype="fp32", decoder=model.source)
    style = model.style(painting, style_size=512, dtype="fp32")
    zero = model.stylize(photo, style=style, strength=0.0, dtype="fp32")
    half = model.stylize(photo, style=style, strength=0.5, dtype="fp32")
    assert (zero - reconstruction).abs().max() <= LEVEL
    assert (one - full).abs().max() <= LEVEL
    # each differs from the others by far more than the tolerance: the comparisons above can fail
    assert min(_far(full, reconstruction), _far(half, full), _far(half, reconstruction)) > 5 * LEVEL


def test_paintings_mix_in_feature_space_and_weights_1_0_are_the_first(model, files):
    photo = load_image(files / "photo.png")
    monet, klimt = load_image(files / "monet.png"), load_image(files / "klimt.png")
    single = model.stylize(photo, style=monet, style_size=STYLE, dtype="fp32")
    first = model.stylize(photo, style=[monet, klimt], style_weights=[1, 0], style_size=STYLE, dtype="fp32")
    assert (single - first).abs().max() <= 1e-6
    mixed = model.stylize(photo, style=[monet, klimt], style_weights=[3, 1], style_size=STYLE, dtype="fp32")
    with torch.no_grad():  # sum_k w_k AdaIN(c, s_k), as the paper defines the interpolation
        features = model.encoder(photo[None])["relu4_1"]
        targets = [adain(features, *_painting_stats(model, p)) for p in (monet, klimt)]
        expected = _decoded(model, 0.75 * targets[0] + 0.25 * targets[1])
    assert (mixed - expected).abs().max() <= LEVEL
    assert _far(mixed, single) > 5 * LEVEL


def _halves_mask(h: int, w: int, left: int, right: int) -> Image.Image:
    mask = np.full((h, w), right, dtype=np.uint8)
    mask[:, : w // 2] = left
    return Image.fromarray(mask, mode="L")


def test_a_mask_gives_each_region_its_painting_with_its_own_statistics(model, files, tmp_path):
    """Left half black (the first region: the first painting), right half white; each half
    normalized by the photo's statistics over that half (AdaIN paper, sec. 7)."""
    photo = load_image(files / "photo.png")  # 96 x 80: relu4_1 cells 12 x 10, halves of 5 columns
    monet, klimt = load_image(files / "monet.png"), load_image(files / "klimt.png")
    _halves_mask(96, 80, 0, 255).save(tmp_path / "mask.png")
    _halves_mask(24, 20, 0, 255).save(tmp_path / "small_mask.png")  # resized to the photo
    style = model.style([monet, klimt], style_size=STYLE, dtype="fp32")
    result = model.stylize(photo, style=style, mask=tmp_path / "mask.png", dtype="fp32")
    resized = model.stylize(photo, style=style, mask=tmp_path / "small_mask.png", dtype="fp32")
    with torch.no_grad():
        features = model.encoder(photo[None])["relu4_1"]
        left, right = features[..., :5], features[..., 5:]
        expected = _decoded(model, torch.cat([
            adain(left, *_painting_stats(model, monet)), adain(right, *_painting_stats(model, klimt)),
        ], dim=-1))  # fmt: skip
    assert (result - expected).abs().max() <= LEVEL
    assert torch.equal(result, resized)
    _halves_mask(96, 80, 255, 0).save(tmp_path / "swapped.png")  # white left: the second painting there
    swapped = model.stylize(photo, style=style, mask=tmp_path / "swapped.png", dtype="fp32")
    assert _far(swapped, result) > 5 * LEVEL


@pytest.mark.parametrize("use_mask", [False, True])
def test_tiled_equals_untiled_within_one_level(model, use_mask):
    """300 x 260 (not a multiple of 8) in 2 x 2 tiles: the photo's statistics (per region) summed
    over the tiles' cores are the whole photo's, so the tiles' results are the untiled one's."""
    photo = _image(300, 260, 4)
    style = model.style([_image(96, 96, 5), _image(96, 128, 6)][: 1 + use_mask], style_size=STYLE, dtype="fp32")
    mask = _halves_mask(300, 260, 10, 200) if use_mask else None
    whole = model.stylize(photo, style=style, mask=mask, dtype="fp32", tile=10_000)
    tiled = model.stylize(photo, style=style, mask=mask, dtype="fp32", tile=160)
    assert whole.shape == tiled.shape == (3, 300, 260)
    assert (whole - tiled).abs().max() <= LEVEL  # the promise
    # and in fact to round-off (6e-7 measured): halos one receptive field short reach 1.5e-4
    assert (whole - tiled).abs().max() <= 2e-5


class _Tiled(Exception):
    pass


def test_tiles_are_chosen_when_a_window_would_not_fit(model, monkeypatch):
    """With a budget of a 250 x 250 window, a 300 x 260 photo goes in tiles of 48 (250 less the
    halos of 96 and a stride of rounding); a 200 x 100 one fits whole."""

    def stop(tiles):
        raise _Tiled(tiles.tile)

    monkeypatch.setattr(adain_module, "WINDOW_BUDGET", 250 * 250 * adain_module.BYTES_PER_PIXEL)
    monkeypatch.setattr(adain_module._Tiles, "gather_stats", stop)
    style = model.style(_image(64, 64, 5), style_size=64, dtype="fp32")
    with pytest.raises(_Tiled) as tiled:
        model.stylize(_image(300, 260, 4), style=style, dtype="fp32")
    assert tiled.value.args == (48,)
    model.stylize(_image(200, 100, 4), style=style, dtype="fp32")  # fits: untiled


def test_photos_of_any_size_come_back_at_their_size(model):
    style = model.style(_image(64, 64, 7), style_size=64, dtype="fp32")
    for h, w in ((9, 13), (17, 64), (33, 30)):
        assert model.stylize(_image(h, w, 8), style=style, dtype="fp32").shape == (3, h, w)


# ---------------------------------------------------------------------------- the Python API


def test_stylize_returns_what_it_was_given(files, decoder_file):
    photo = load_image(files / "photo.png")
    pixels = (photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    options = dict(style=files / "monet.png", decoder=decoder_file, style_size=STYLE)
    results = {
        "pil": instyle.stylize(Image.fromarray(pixels), **options),
        "path": instyle.stylize(files / "photo.png", **options),
        "uint8": instyle.stylize(pixels, **options),
        "float32": instyle.stylize(pixels.astype(np.float32) / 255, **options),
        "tensor": instyle.stylize(photo, **options),
        "batch": instyle.stylize(torch.stack([photo, photo.flip(-1)]), **options),
        "bundled": instyle.stylize(pixels, style="starry_night"),
    }
    assert isinstance(results["pil"], Image.Image) and results["pil"].size == (80, 96)
    assert isinstance(results["path"], Image.Image) and results["path"].size == (80, 96)
    for key, dtype in (("uint8", np.uint8), ("float32", np.float32), ("bundled", np.uint8)):
        assert isinstance(results[key], np.ndarray) and results[key].dtype == dtype and results[key].shape == (96, 80, 3)
    assert results["tensor"].shape == (3, 96, 80) and results["tensor"].dtype == torch.float32
    assert results["batch"].shape == (2, 3, 96, 80)
    assert np.array_equal(np.asarray(results["pil"]), results["uint8"])
    assert np.abs(results["float32"] * 255 - results["uint8"]).max() <= 1


def test_api_refuses_painting_options_for_a_trained_model_and_bad_weights(files, decoder_file):
    with pytest.raises(ValueError, match="mask: only for paintings"):
        instyle.stylize(files / "photo.png", style="starry_night", mask=files / "photo.png")
    for weights, message in (([1], "1 weight for 2 paintings"), ([1, -1], ">= 0"), ([0, 0], "all 0")):
        with pytest.raises(ValueError, match=message):
            instyle.stylize(files / "photo.png", style=[files / "monet.png"] * 2, style_weights=weights, decoder=decoder_file)


# ---------------------------------------------------------------------------- bad input


def _painting_file(tmp_path: Path, kind: str) -> Path:
    """A painting file that is bad or needs converting, as ``kind`` says."""
    path = tmp_path / f"{kind}.png"
    rgb = (_image(96, 96, 9).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if kind == "text":
        path.write_text("not an image")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        Image.fromarray(rgb).save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "small":
        Image.fromarray(rgb[:40]).save(path)
    elif kind == "huge":  # over --max-pixels 9000 (the photo is 96 x 80 = 7680)
        Image.fromarray(rgb).save(path)
    elif kind == "gray":
        Image.fromarray(rgb[..., 0]).save(path)
    elif kind == "sixteen":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)  # 16-bit grey ("I;16")
    elif kind == "alpha":
        Image.fromarray(np.dstack([rgb, np.full((96, 96), 255, np.uint8)])).save(path)
    return path


@pytest.mark.parametrize(
    "kind, message",
    [("text", "not an image"), ("empty", "empty file"), ("truncated", "truncated"),
     ("small", "96 x 40 pixels is too small for a painting"), ("huge", "exceeds the limit of 9000")],
)  # fmt: skip
def test_a_bad_painting_is_one_line_naming_it_and_nothing_is_written(files, decoder_file, tmp_path, capsys, kind, message):
    painting = _painting_file(tmp_path, kind)
    out = tmp_path / "out"
    code = main([
        "stylize", str(files / "photo.png"), "--style", str(painting), "--decoder", str(decoder_file), "-o", str(out),
        "--max-pixels", "9000",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and str(painting) in err and message in err, err


@pytest.mark.parametrize("kind", ["gray", "sixteen", "alpha"])
def test_grey_16_bit_and_alpha_paintings_are_converted(files, model, tmp_path, kind):
    """Each as load_image reads it (grey to RGB, 16 bits to [0, 1], alpha over white): the result
    is the one of the converted painting."""
    painting = _painting_file(tmp_path, kind)
    out = tmp_path / "out"
    assert main(["stylize", str(files / "photo.png"), "--style", str(painting), "--decoder", str(model.source),
                 "-o", str(out), "--dtype", "fp32", "--style-size", str(STYLE)]) == 0  # fmt: skip
    converted = model.stylize(files / "photo.png", style=load_image(painting), style_size=STYLE, dtype="fp32")
    written = np.asarray(Image.open(out / f"photo_{kind}.png")).astype(int)
    assert np.abs(written - np.asarray(converted).astype(int)).max() <= 1


def test_a_mask_with_more_regions_than_paintings_names_both_counts(files, decoder_file, tmp_path, capsys):
    mask = np.zeros((96, 80, 3), dtype=np.uint8)
    mask[:, 30:] = (255, 0, 0)
    mask[:, 60:] = (0, 0, 255)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    code = main([
        "stylize", str(files / "photo.png"), "--style", str(files / "monet.png"), "--style", str(files / "klimt.png"),
        "--mask", str(tmp_path / "mask.png"), "--decoder", str(decoder_file), "-o", str(out),
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "mask.png" in err and "3 regions" in err and "2 paintings" in err and len(err.strip().splitlines()) == 1


def test_no_decoder_bundled_is_one_line_saying_how_to_give_one(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(catalog, "ADAIN_DECODER", tmp_path / "not_bundled.safetensors")
    out = tmp_path / "out"
    assert main(["stylize", str(files / "photo.png"), "--style", str(files / "monet.png"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert not out.exists() and len(err.strip().splitlines()) == 1
    assert "not bundled in this build" in err and "--decoder" in err and "instyle train-adain" in err


@pytest.mark.parametrize(
    "args, message",
    [(["--style-weights", "1"], "--style-weights: 1 weight for 2 paintings"),
     (["--style-weights", "0", "0"], "--style-weights are all 0"),
     (["--tile", "12"], "--tile must be a positive multiple of 8"),
     (["--runtime", "onnxruntime"], "--runtime 'onnxruntime'"),
     (["--model", "starry_night"], "give --style or --model, not both")],
)  # fmt: skip
def test_bad_options_with_paintings_fail_before_any_work(files, decoder_file, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = main([
        "stylize", str(files / "photo.png"), "--style", str(files / "monet.png"), "--style", str(files / "klimt.png"),
        "--decoder", str(decoder_file), "-o", str(out), *args,
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and message in err, err
