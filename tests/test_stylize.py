"""instyle stylize and load_model(...).stylize: files, folders, failures, options, tiling."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from instyle.apps.cli import main
from instyle.engine.color import preserve_color
from instyle.engine.image import load_image, save_image, to_pil
from instyle.engine.modelfile import ModelFileError, save_model
from instyle.engine.models import TransformerNet
from instyle.engine.inference.stylize import load_model, output_paths
from instyle.engine.catalog import list_models

from .conftest import fill_disk
from .test_cli import run_cli


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1)
    with torch.no_grad():  # make the affine parameters non-trivial
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    path = tmp_path / "tiny.safetensors"
    save_model(net, path, {"style_name": "tiny"})
    return path


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    g = torch.Generator().manual_seed(1)
    save_image(torch.rand(3, 33, 47, generator=g), folder / "a.png")
    save_image(torch.rand(3, 20, 20, generator=g), folder / "b.jpg")
    save_image(torch.rand(3, 24, 18, generator=g), folder / "sub" / "c.png")
    return folder


def test_python_api_returns_what_it_was_given(model_file):
    model = load_model(model_file)
    pil = Image.new("RGB", (31, 17), (200, 30, 60))
    out = model.stylize(pil)
    assert isinstance(out, Image.Image) and out.size == (31, 17)
    tensor = torch.rand(3, 17, 31)
    out = model.stylize(tensor)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 17, 31)
    batch = model.stylize(torch.rand(2, 3, 16, 16))
    assert batch.shape == (2, 3, 16, 16)


def test_strength_zero_is_the_content_and_max_size_resizes(model_file):
    model = load_model(model_file)
    image = torch.rand(3, 40, 60)
    torch.testing.assert_close(model.stylize(image, strength=0.0), image, atol=1e-6, rtol=0)
    assert model.stylize(image, max_size=30).shape == (3, 20, 30)
    assert model.stylize(image, max_size=120).shape == (3, 40, 60)  # at most: never enlarged
    with pytest.raises(ValueError, match="strength must be in"):
        model.stylize(image, strength=1.5)


@pytest.mark.parametrize("options, message", [
    ({"strength": float("nan")}, "strength must be in"),
    ({"preserve": "lab"}, "preserve must be one of none, luminance, covariance, histogram"),
    ({"tile": 6}, r"tile must be a positive multiple of the model's tile_stride \(4\)"),
    ({"tile": 0}, "tile must be"),
    ({"device": "tpu"}, "device 'tpu'"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"runtime": "tensorrt"}, "runtime must be one of"),
])  # fmt: skip
def test_bad_arguments_name_the_argument(model_file, options, message):
    with pytest.raises(ValueError, match=message):
        load_model(model_file).stylize(torch.rand(3, 20, 20), **options)


@pytest.mark.parametrize("preserve", ["covariance", "histogram"])
def test_whole_image_colour_methods_tile_as_untiled_files(model_file, tmp_path, preserve):
    """Covariance and histogram read the whole stylized image's colours first: the tiled
    stylization's colours come out as the untiled one's (up to the tiles' round-off)."""
    model = load_model(model_file)
    path = tmp_path / "photo.png"
    save_image(torch.rand(3, 130, 150, generator=torch.Generator().manual_seed(5)), path)
    whole = np.asarray(model.stylize(path, tile=10_000, dtype="fp32", preserve=preserve)).astype(int)
    tiled = np.asarray(model.stylize(path, tile=48, dtype="fp32", preserve=preserve)).astype(int)
    assert np.abs(whole - tiled).max() <= 1
    content = np.asarray(Image.open(path).convert("RGB")).astype(float)
    # the photo's colours (the tiny model's output has few distinct levels: matched coarsely)
    assert np.abs(whole.mean(axis=(0, 1)) - content.mean(axis=(0, 1))).max() < 2


def test_tiled_equals_untiled_within_one_level(model_file):
    model = load_model(model_file)
    image = torch.rand(3, 150, 170, generator=torch.Generator().manual_seed(2))
    whole = model.stylize(image, tile=10_000, dtype="fp32")
    tiled = model.stylize(image, tile=64, dtype="fp32")
    assert (whole - tiled).abs().max() <= 1 / 255


def test_cli_folder_recursive_and_a_failing_file(model_file, photos, tmp_path, capsys):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    code = main(["stylize", str(photos), "--recursive", "--model", str(model_file), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # one file failed
    assert "broken.png" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a_tiny.png", "b_tiny.png", "c_tiny.png"]
    assert load_image(out / "a_tiny.png").shape == (3, 33, 47)


def test_cli_glob_options_and_inputs_never_overwritten(model_file, photos, capsys):
    victim = photos / "a_tiny.png"  # an input named like the output of a.png
    save_image(torch.zeros(3, 8, 8), victim)
    before = victim.read_bytes()
    code = main([
        "stylize", str(photos / "*.png"), "--model", str(model_file), "-o", str(photos),
        "--strength", "0.5", "--preserve-color", "luminance", "--max-size", "32",
    ])  # fmt: skip
    assert code == 1 and "refusing to overwrite an input" in capsys.readouterr().err
    assert victim.read_bytes() == before


def test_cli_bad_model_and_no_inputs(model_file, photos, tmp_path, capsys):
    assert main(["stylize", str(photos), "--model", "no_such_style"]) == 2
    assert "no_such_style" in capsys.readouterr().err
    assert main(["stylize", str(tmp_path / "missing.png"), "--model", str(model_file)]) != 0
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model")
    assert main(["stylize", str(photos), "--model", str(garbage)]) == 2
    assert "garbage.safetensors" in capsys.readouterr().err
    with pytest.raises(ModelFileError):
        load_model(garbage)


@pytest.mark.parametrize(
    "flag, value, message",
    [("--strength", "2", "argument --strength: must be in [0, 1], got 2"),
     ("--strength", "nan", "argument --strength: must be in [0, 1], got nan"),
     ("--max-size", "0", "argument --max-size: must be >= 1, got 0"),
     ("--max-size", "big", "argument --max-size: expected an integer, got 'big'"),
     ("--tile", "6", "--tile 6: must be a multiple of 4, the model's stride"),
     ("--device", "tpu", "--device tpu: expected auto (CUDA, else MPS, else the CPU), cpu, cuda, cuda:N or mps")],
)  # fmt: skip
def test_cli_bad_options_are_usage_errors_before_any_file(model_file, photos, tmp_path, capsys, flag, value, message):
    out = tmp_path / "out"
    assert exit_code(["stylize", str(photos), "--model", str(model_file), "-o", str(out), flag, value]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def exit_code(argv):
    """main's exit code, whether argparse raised it (usage errors) or main returned it."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def test_cli_output_that_is_a_file_is_refused_and_kept(model_file, photos, capsys):
    victim = photos / "a.png"
    before = victim.read_bytes()
    assert main(["stylize", str(photos / "b.jpg"), "--model", str(model_file), "-o", str(victim)]) == 2
    assert "is a file; -o names the output folder" in capsys.readouterr().err
    assert victim.read_bytes() == before


def test_cli_disk_full_reports_each_file_and_leaves_no_partial_image(model_file, photos, small_disk, capsys):
    out = small_disk / "out"
    out.mkdir()
    kept = out / "a_tiny.png"
    kept.write_bytes(b"an earlier result")
    fill_disk(small_disk)
    assert main(["stylize", str(photos / "a.png"), str(photos / "b.jpg"), "--model", str(model_file), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("No space left on device") == 2 and "the previous file is kept" in err
    assert kept.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in out.iterdir()) == ["a_tiny.png"]


def test_cli_files_that_share_a_name_get_outputs_of_their_own(model_file, photos, tmp_path, capsys):
    g = torch.Generator().manual_seed(2)
    save_image(torch.rand(3, 16, 16, generator=g), photos / "sub" / "a.png")  # a.png beside in/a.png
    save_image(torch.rand(3, 16, 16, generator=g), photos / "b.png")  # b.png beside in/b.jpg
    out = tmp_path / "out"
    assert main(["stylize", str(photos), "--recursive", "--model", str(model_file), "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_tiny.png", "b_jpg_tiny.png", "b_png_tiny.png", "c_tiny.png", "sub_a_tiny.png"]
    # each output is its own photo's: same size as its source
    assert Image.open(out / "sub_a_tiny.png").size == (16, 16) and Image.open(out / "a_tiny.png").size == (47, 33)


def test_bundled_styles_are_listed_and_load_by_name():
    assert {"starry_night", "composition_vii", "udnie", "cezanne"} <= set(list_models())
    model = load_model("starry_night")
    assert model.name == "starry_night" and model.metadata["training"]["save_dtype"] == "fp16"
    out = model.stylize(torch.rand(3, 24, 32))
    assert out.shape == (3, 24, 32) and torch.isfinite(out).all()


def _reference_finish(stylized, content, strength, preserve):
    """The whole-image post-processing stylize did before it worked in bands."""
    out = preserve_color(stylized, content, preserve)
    return (strength * out + (1 - strength) * content).clamp(0, 1)


@pytest.mark.parametrize(
    "preserve, strength", [("none", 1.0), ("luminance", 0.6), ("covariance", 0.8), ("histogram", 0.8)]
)
def test_tiled_bands_finish_as_the_whole_image_did(model_file, preserve, strength):
    model = load_model(model_file)
    image = torch.rand(3, 150, 170, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        raw = model.generator.eval()(image[None])
    expected = _reference_finish(raw, image[None], strength, preserve)[0]
    for tile in (10_000, 64):  # untiled (one band) and tiled
        got = model.stylize(image, tile=tile, dtype="fp32", strength=strength, preserve=preserve)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_pil_output_is_quantized_as_to_pil(model_file, tmp_path):
    """A file or PIL image stays uint8 inside stylize; the result equals quantizing the
    float result of the same pixels, and tiling moves no pixel by more than one level."""
    model = load_model(model_file)
    g = torch.Generator().manual_seed(4)
    path = tmp_path / "photo.png"
    save_image(torch.rand(3, 130, 150, generator=g), path)
    content = load_image(path)
    for tile in (10_000, 48):
        pil = model.stylize(path, tile=tile, dtype="fp32", strength=0.7, preserve="luminance")
        assert isinstance(pil, Image.Image) and pil.size == (150, 130)
        as_float = model.stylize(content, tile=tile, dtype="fp32", strength=0.7, preserve="luminance")
        assert np.array_equal(np.asarray(pil), np.asarray(to_pil(as_float)))
    whole = np.asarray(model.stylize(path, tile=10_000, dtype="fp32")).astype(int)
    tiled = np.asarray(model.stylize(path, tile=48, dtype="fp32")).astype(int)
    assert np.abs(whole - tiled).max() <= 1


def test_nan_output_is_an_error_in_bands_too(model_file):
    model = load_model(model_file)
    with torch.no_grad():
        model.generator.head.conv.bias.fill_(float("nan"))
    for tile in (10_000, 32):
        with pytest.raises(RuntimeError, match="NaN or inf"):
            model.stylize(Image.new("RGB", (70, 50)), tile=tile)


def test_bf16_runs_a_bf16_copy_close_to_fp32_and_leaves_the_model_fp32():
    model = load_model("starry_night")
    image = torch.rand(3, 96, 80, generator=torch.Generator().manual_seed(0))
    exact = model.stylize(image, dtype="fp32")
    fast = model.stylize(image, dtype="bf16")
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    difference = (fast - exact).abs()
    # bf16 keeps 8 bits of mantissa: about a level of 255 on average, a few levels at most
    assert difference.mean() < 2 / 255 and difference.max() < 12 / 255
    assert all(p.dtype == torch.float32 for p in model.generator.parameters())
    assert torch.equal(model.stylize(image, dtype="fp32"), exact)  # the fp32 path is untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replay_gives_the_eager_result():
    """From the second image of a shape on, the CUDA forward is a graph replay: same pixels."""
    model = load_model("starry_night")
    x = torch.rand(1, 3, 256, 320, device="cuda")
    model.cuda_graphs = False
    eager = model.stylize(x, device="cuda")
    model.cuda_graphs = True
    replays = [model.stylize(x, device="cuda") for _ in range(3)]
    assert model._graphs.graphs, "no graph was captured"
    for out in replays:
        torch.testing.assert_close(out, eager, rtol=0, atol=1e-5)
    other = torch.rand_like(x)  # the captured input is a copy: a new image gives its own result
    model.cuda_graphs = False
    expected = model.stylize(other, device="cuda")
    model.cuda_graphs = True
    torch.testing.assert_close(model.stylize(other, device="cuda"), expected, rtol=0, atol=1e-5)


# --- the command line in a subprocess, as a user runs it ---------------------------------------


def test_cli_symlink_loops_end_with_each_photo_once(model_file, tmp_path):
    """A glob with "**" and a --recursive folder walk over links that loop (to the folder itself
    and to its parent's view of it) enter each real folder once, and finish quickly."""
    loop = tmp_path / "loopdir"
    (loop / "sub").mkdir(parents=True)
    save_image(torch.rand(3, 12, 12), loop / "a.png")
    save_image(torch.rand(3, 12, 12), loop / "sub" / "b.png")
    (loop / "self").symlink_to(".")
    (loop / "up").symlink_to("../loopdir")
    for inputs in (["loopdir/**/*.png"], ["loopdir"]):
        out = tmp_path / "out"
        result = run_cli("stylize", *inputs, "--recursive", "--model", model_file, "-o", out, cwd=tmp_path, timeout=60)
        assert result.returncode == 0, result.stderr
        assert sorted(line.split(" -> ")[0] for line in result.stdout.splitlines()) == ["loopdir/a.png", "loopdir/sub/b.png"]
        assert sorted(p.name for p in out.iterdir()) == ["a_tiny.png", "b_tiny.png"]
        shutil.rmtree(out)


def test_cli_one_file_spelled_three_ways_is_stylized_once(model_file, tmp_path):
    (tmp_path / "in").mkdir()
    save_image(torch.rand(3, 12, 12), tmp_path / "in" / "ok.png")
    (tmp_path / "link.png").symlink_to("in/ok.png")
    result = run_cli(
        "stylize", "in/ok.png", "./in/ok.png", "in/../in/ok.png", "link.png", "--model", model_file, "-o", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line.split(" -> ")[0] for line in result.stdout.splitlines()] == ["in/ok.png"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ok_tiny.png"]


def test_cli_bad_max_pixels_variable_is_one_error_up_front(model_file, photos, tmp_path):
    out = tmp_path / "out"
    result = run_cli("stylize", photos, "--model", model_file, "-o", out, env={"INSTYLE_MAX_PIXELS": "lots"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["instyle stylize: error: INSTYLE_MAX_PIXELS='lots' is not a whole number of pixels"]
    assert not out.exists()


def test_cli_failure_lines_name_the_file_once(model_file, photos, tmp_path):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (photos / "notes.png").write_text("not a picture")
    result = run_cli("stylize", photos / "broken.png", photos / "notes.png", photos / "a.png", "--model", model_file,
                     "-o", tmp_path / "out")  # fmt: skip
    assert result.returncode == 1
    failed = result.stderr.splitlines()
    assert len(failed) == 2 and "Traceback" not in result.stderr
    for line, name in zip(failed, ["broken.png", "notes.png"]):
        assert line.startswith(f"FAILED {photos / name}: ") and line.count(name) == 1, line
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_tiny.png"]


def test_cli_survives_an_ascii_terminal_with_non_ascii_names(model_file, tmp_path):
    """PYTHONIOENCODING=ascii: a non-ASCII name is printed escaped, never a crash after the output
    is written."""
    (tmp_path / "photos").mkdir()
    save_image(torch.rand(3, 12, 12), tmp_path / "photos" / "café.png")
    (tmp_path / "photos" / "ñu.png").write_bytes(b"broken")
    result = run_cli("stylize", "photos", "--model", model_file, "-o", "out", cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.startswith("photos/caf\\xe9.png -> out/caf\\xe9_tiny.png (")
    assert result.stderr.startswith("FAILED photos/\\xf1u.png: ")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["café_tiny.png"]


def test_output_names_never_differ_by_case_alone(tmp_path):
    """``A.png`` and ``a.png`` would share one file on a case-insensitive disk (macOS, Windows)."""
    targets = output_paths([tmp_path / "A.png", tmp_path / "a.png"], tmp_path / "out", "m", ".png")
    assert len({t.name.casefold() for t in targets}) == 2
