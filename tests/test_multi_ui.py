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
