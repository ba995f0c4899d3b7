"""Issue #19, part 4: the bundled multi-style model (src/instyle/styles/multi.safetensors) beside the
four single-style files: its ten styles by name, its size, its stored targets, its thumbnails, and
that a wheel would carry it (pyproject's package data)."""

import fnmatch
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from instyle.engine import catalog
from instyle.engine.inference.stylize import load_model
from instyle.engine.modelfile import read_model_file, styles_from_file

ROOT = Path(__file__).resolve().parents[1]
MULTI = catalog.STYLES_DIR / "multi.safetensors"
FOUR = ("starry_night", "composition_vii", "udnie", "cezanne")
NEW = ("takiyasha", "water_lilies", "grande_jatte", "flower_box", "tableau_no2", "night_watch")


def test_the_multi_style_model_holds_the_four_and_six_more_under_6_mb():
    assert MULTI.is_file()
    assert MULTI.stat().st_size <= 6_000_000
    config, metadata, tensors = read_model_file(MULTI)
    assert config["norm"] == "conditional_instance" and config["num_styles"] == 10
    assert tuple(s["name"] for s in metadata["styles"]) == FOUR + NEW
    for style in styles_from_file(MULTI, metadata, tensors):  # targets of the training's layers, bf16 on disk
        assert style.layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1") and style.dtype == torch.bfloat16
    assert next(t for k, t in tensors.items() if k.endswith("norm.weight")).dtype == torch.float16


def test_every_bundled_style_is_listed_has_a_thumbnail_and_the_new_ones_load_by_bare_name():
    names = catalog.list_models()
    assert set(FOUR) <= set(names)  # the single-style files stay (the multi model does not beat them)
    assert [n for n in names if n.startswith("multi:")] == [f"multi:{s}" for s in FOUR + NEW]
    for style in catalog.bundled_styles():
        assert catalog.style_thumbnail(style.path, style.style) is not None, style.name
    x = torch.rand(3, 32, 40)
    for name in NEW:  # unique in the catalog: the bare name is the multi model's style
        model = load_model(name)
        assert model.name == name and model.source == MULTI
        out = model.stylize(x, dtype="fp32")
        assert out.shape == x.shape and (out - x).abs().mean() > 0.02
    assert load_model("starry_night").source == catalog.STYLES_DIR / "starry_night.safetensors"  # the file wins


def test_the_package_data_carries_every_bundled_file():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["instyle"]
    package = catalog.STYLES_DIR.parent
    shipped = [p for p in catalog.STYLES_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for path in shipped:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


@pytest.mark.parametrize("argv", [("models",)])
def test_instyle_models_lists_the_new_styles(argv):
    done = subprocess.run([sys.executable, "-m", "instyle", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = catalog.list_models()
    lines = done.stdout.splitlines()[1 : 1 + len(names)]
    assert [line.split()[0] for line in lines] == names  # each name its own column, however long
    assert len({line.index("transformer") for line in lines}) == 1  # the columns line up
