"""Issue #19, part 2: the contact sheet of every bundled style (``instyle models --sheet``), the ONNX
export of a multi-style model with its mixing weights as an input, and the web page's style picker."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from instyle.apps.cli import main
from instyle.apps.demo import SHEET_LABEL
from instyle.engine import catalog
from instyle.engine.image import save_image
from instyle.engine.modelfile import save_model
from instyle.engine.models import TransformerNet

from .test_multi_style import multi_file


def _instyle(*argv, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "instyle", *map(str, argv)], env=env, capture_output=True, text=True, timeout=timeout)


def _pixels(image: Image.Image) -> torch.Tensor:
    """An RGB image's pixels as a float (H * W, 3) tensor, row by row."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3))


def _cells(sheet: Image.Image, size: int, count: int, columns: int = 4) -> list[Image.Image]:
    """The tiles and their label strips of a sheet drawn by ``labelled_grid`` (4 px padding)."""
    pad = 4
    cells = []
    for index in range(count):
        x, y = pad + (index % columns) * (size + pad), pad + (index // columns) * (size + SHEET_LABEL + pad)
        cells.append(sheet.crop((x, y, x + size, y + size + SHEET_LABEL)))
    return cells


# ---------------------------------------------------------------------------- the contact sheet


def test_models_sheet_shows_the_photo_in_every_bundled_style_with_its_name(tmp_path):
    out = tmp_path / "sheet.png"
    done = _instyle("models", "--sheet", out, "--size", 32)
    assert done.returncode == 0, done.stderr
    styles = catalog.list_models()
    assert styles and f"in {len(styles)} styles" in done.stdout
    sheet = Image.open(out).convert("RGB")
    count = len(styles) + 1  # the photo first
    rows = -(-count // 4)
    assert sheet.size == (4 + 4 * 36, 4 + rows * (32 + SHEET_LABEL + 4))
    cells = [_pixels(c) for c in _cells(sheet, 32, count)]
    for cell in cells:  # a label under each tile: dark pixels in the strip
        strip = cell[32 * 32 :]
        assert (strip.mean(dim=1) < 128).any()
    photo = cells[0][: 32 * 32]
    assert all((cell[: 32 * 32] - photo).abs().mean() > 5 for cell in cells[1:])  # each tile is stylized
    assert not [p for p in tmp_path.iterdir() if p.name != "sheet.png"]  # no temporary file left


def test_models_sheet_lists_each_style_of_a_multi_style_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(catalog, "STYLES_DIR", tmp_path / "styles")
    (tmp_path / "styles").mkdir()
    multi_file(tmp_path / "styles" / "multi.safetensors", ("wave", "udnie"))
    save_model(TransformerNet(width=0.25, num_residual=1), tmp_path / "styles" / "solo.safetensors", {"style_name": "solo"})
    photo = tmp_path / "photo.png"
    save_image(torch.rand(3, 40, 30), photo)
    out = tmp_path / "sheet.jpg"
    assert main(["models", "--sheet", str(out), "--photo", str(photo), "--size", "24"]) == 0
    assert "photo.png in 3 styles" in capsys.readouterr().out
    sheet = Image.open(out)
    assert sheet.size == (4 + 4 * 28, 4 + 24 + SHEET_LABEL + 4)  # the photo and 3 styles: one row
    wave, udnie = (_pixels(c.crop((0, 0, 24, 24))) for c in _cells(sheet, 24, 3)[1:])
    assert (wave - udnie).abs().mean() > 1  # two styles of one file, two tiles


@pytest.mark.parametrize("case", ["no folder", "extension", "a folder", "not an image", "missing photo"])
def test_models_sheet_refuses_bad_paths_before_any_work(tmp_path, case):
    out, photo = tmp_path / "sheet.png", None
    if case == "no folder":
        out = tmp_path / "nowhere" / "sheet.png"
    elif case == "extension":
        out = tmp_path / "sheet.txt"
    elif case == "a folder":
        out = tmp_path / "taken.png"
        out.mkdir()
    elif case == "not an image":
        photo = tmp_path / "notes.jpg"
        photo.write_text("not a picture")
    else:
        photo = tmp_path / "gone.jpg"
    done = _instyle("models", "--sheet", out, "--size", 32, *(["--photo", photo] if photo else []))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    named = photo if photo is not None else out
    assert done.stderr.startswith("instyle models: error: ") and str(named) in done.stderr, done.stderr
    assert ("--photo" if photo is not None else "--sheet") in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(["taken.png"] if case == "a folder" else []), *([photo.name] if case == "not an image" else [])]
    )


# ---------------------------------------------------------------------------- the web page

gr = pytest.importorskip("gradio", reason="instyle serve needs gradio (pip install 'instyle[web]')")

from instyle.apps.serve import NO_MIX, RequestError, ServeLimits, StyleService, _style_tiles, load_styles  # noqa: E402
from instyle.engine.image import load_image  # noqa: E402
from instyle.engine.inference.stylize import load_model  # noqa: E402

from .test_serve import _chromium, _free_port, _photo, _serve, page  # noqa: E402,F401


@pytest.fixture
def multi_service(tmp_path, monkeypatch):
    import instyle.apps.serve

    monkeypatch.setattr(instyle.apps.serve, "bundled_styles", lambda: [s for s in catalog.bundled_styles() if s.name == "udnie"])  # one beside
    multi_file(tmp_path / "multi.safetensors", ("wave", "cezanne"))
    return StyleService(load_styles([tmp_path / "multi.safetensors"]), ServeLimits(max_size=64))


def test_the_page_lists_each_style_of_a_multi_style_file_and_mixes_two_of_them(multi_service, tmp_path):
    assert list(multi_service.styles) == ["wave", "cezanne", "udnie"]
    assert multi_service.mix_choices() == [NO_MIX, "wave", "cezanne"]  # udnie is a file of its own
    photo = _photo(tmp_path / "photo.png", 40, 30)
    got = np.asarray(multi_service(photo, "wave", 1.0, "none", None, "cezanne", 0.25), dtype=np.float32)
    expected = load_model(tmp_path / "multi.safetensors").stylize(load_image(photo), style={"wave": 0.75, "cezanne": 0.25}, dtype="fp32")
    assert np.abs(got / 255 - expected.permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    alone = np.asarray(multi_service(photo, "wave", 1.0, "none"), dtype=np.float32)
    assert np.array_equal(alone, np.asarray(multi_service(photo, "wave", 1.0, "none", None, NO_MIX, 0.7), dtype=np.float32))
    assert np.array_equal(alone, np.asarray(multi_service(photo, "wave", 1.0, "none", None, "cezanne", 0.0), dtype=np.float32))
    assert np.abs(alone - got).mean() > 1


@pytest.mark.parametrize("mix_with, mix", [("udnie", 0.5), ("wave", 0.5), ("nope", 0.5), ("cezanne", 1.5), ("cezanne", "x")])
def test_a_mix_the_page_cannot_make_gets_a_short_message(multi_service, tmp_path, mix_with, mix):
    with pytest.raises(RequestError, match="^(Only two styles of one multi-style model mix|The mix must be a number)"):
        multi_service(_photo(tmp_path / "photo.png", 20, 20), "wave", 1.0, "none", None, mix_with, mix)


def test_style_tiles_are_the_bundled_paintings_else_a_small_stylized_photo(multi_service):
    tiles = _style_tiles(multi_service)
    assert [name for _, name in tiles] == ["wave", "cezanne", "udnie"]
    bundled = tiles[2][0]
    assert bundled == str(catalog.STYLES_DIR / "thumbs" / "udnie.jpg") and os.path.getsize(bundled) < 10_000
    rendered = [Image.open(path) for path, _ in tiles[:2]]
    assert all(image.size == (96, 96) for image in rendered)
    assert np.abs(np.asarray(rendered[0], dtype=np.float32) - np.asarray(rendered[1], dtype=np.float32)).mean() > 1


def test_every_bundled_style_has_a_small_thumbnail_of_its_painting():
    for style in catalog.bundled_styles():
        thumb = catalog.style_thumbnail(style.path, style.style)
        assert thumb is not None, style.name
        assert Image.open(thumb).size == (96, 96) and thumb.stat().st_size < 10_000


@pytest.fixture(scope="module")
def multi_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-multi")
    multi_file(folder / "multi.safetensors", ("wave", "cezanne"))
    yield from _serve(folder, "--port", str(_free_port()), "--max-size", "200", "--model", str(folder / "multi.safetensors"))


@pytest.mark.browser
def test_page_picks_a_style_from_its_thumbnail_and_mixes_two(multi_server, page, tmp_path):  # noqa: F811
    page.goto(multi_server.url)
    page.wait_for_selector("#stylize")
    tiles = page.locator("#style-gallery img")
    names = list(catalog.list_models())
    count = 3 + len(names)  # tiny, wave, cezanne, then the bundled styles
    page.wait_for_function(f"() => document.querySelectorAll('#style-gallery img').length === {count}")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#style-gallery img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    tiles.nth(2).click()  # cezanne, a style of the multi-style file
    page.wait_for_function("() => document.querySelector('#style input').value === 'cezanne'")
    page.click("#mix-with input")
    page.locator("#mix-with [role=option]").filter(has_text="wave").first.click()
    page.locator("#mix-with input").blur()
    assert page.locator("#mix-with input").input_value() == "wave"
    page.locator("#photo input[type=file]").set_input_files(_photo(tmp_path / "photo.png", 120, 80))
    page.click("#stylize")
    page.wait_for_function("() => { const i = document.querySelector('#result img'); return i && i.complete && i.naturalWidth === 120 }")
    page.screenshot(path=tmp_path / "mixed.png")
    if names:  # a bundled style's tile picks it too
        name = tiles.nth(3).get_attribute("alt")  # the caption: the style list's name
        assert name.startswith(names[0])
        tiles.nth(3).click()
        page.wait_for_function(f"() => document.querySelector('#style input').value === {name!r}")


# ---------------------------------------------------------------------------- the demo


def test_demo_shows_each_style_of_a_multi_style_file_and_a_mix_of_two(tmp_path, monkeypatch):
    """`instyle demo` (make demo): every style of a bundled multi-style file has its row, and one more
    row mixes its first two styles half and half, between the two."""
    from instyle.apps.demo import run_demo

    monkeypatch.setattr(catalog, "STYLES_DIR", tmp_path / "styles")
    for name in ("ADAIN_DECODER", "ADAIN_FAST"):  # no AdaIN rows here: test_adain_fast has them
        monkeypatch.setattr(catalog, name, tmp_path / "styles" / "adain" / "none.safetensors")
    (tmp_path / "styles").mkdir()
    multi_file(tmp_path / "styles" / "multi.safetensors", ("wave", "udnie"))
    rows, grid = run_demo(tmp_path / "out", size=24, device="cpu")
    assert list(dict.fromkeys(r.style for r in rows)) == ["multi:wave", "multi:udnie", "multi:wave50+udnie50"]
    assert grid is not None and grid.is_file()
    images = {s: _pixels(Image.open(tmp_path / "out" / f"astronaut_{s}.png")) for s in ("multi-wave", "multi-udnie", "multi-wave50+udnie50")}
    wave, udnie, mix = images["multi-wave"], images["multi-udnie"], images["multi-wave50+udnie50"]
    assert (mix - wave).abs().mean() > 1 and (mix - udnie).abs().mean() > 1


def test_the_page_lists_bundled_styles_by_catalog_name_and_mixes_a_bundled_multi_models_styles(tmp_path, monkeypatch):
    """A bundled multi-style file beside a single-style file of one of its style names (the bundle:
    multi:udnie and udnie): the page lists each by its catalog name, as `instyle models` does, and two
    styles of the bundled multi-style file share its network, so that the page mixes them."""
    from instyle.apps.serve import mixable

    monkeypatch.setattr(catalog, "STYLES_DIR", tmp_path / "styles")
    (tmp_path / "styles").mkdir()
    multi_file(tmp_path / "styles" / "multi.safetensors", ("wave", "udnie"))
    save_model(TransformerNet(width=0.25, num_residual=1), tmp_path / "styles" / "udnie.safetensors", {"style_name": "udnie"})
    styles = load_styles()
    assert list(styles) == catalog.list_models() == ["multi:wave", "multi:udnie", "udnie"]
    assert mixable(styles["multi:wave"], styles["multi:udnie"]) and not mixable(styles["multi:udnie"], styles["udnie"])
    assert styles["multi:udnie"].style == "udnie" and styles["udnie"].style is None
