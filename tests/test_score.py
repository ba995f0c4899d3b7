"""``instyle score`` and :mod:`instyle.engine.score`: the style and content distances (issue #18, part 5)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instyle.apps.cli import main
from instyle.engine.image import ImageError
from instyle.engine.score import Scorer, content_distance, read_image, score_image, style_distances

from .test_cli import run_cli

SIZE = 96  # the library tests measure small images: the definitions do not depend on the size


def _picture(path, seed: int, shape=(120, 160), stripes: bool = True):
    """A painting-like image: coloured stripes (or blotches) with noise, deterministic by seed."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    if stripes:
        base = np.stack([np.sin((x + y) * 20 + k) for k in range(3)], -1)
    else:
        base = np.stack([np.cos(x * 7 * (k + 1)) * np.sin(y * 5) for k in range(3)], -1)
    image = (base * 0.4 + 0.5 + rng.normal(0, 0.05, (h, w, 3))).clip(0, 1)
    Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("score")
    return {
        "a": _picture(folder / "a.png", 0), "b": _picture(folder / "b.png", 1, stripes=False),
        "c": _picture(folder / "c.png", 2, shape=(150, 100)), "folder": folder,
    }  # fmt: skip


def test_an_image_against_itself_is_zero(images):
    result = score_image(images["a"], images["a"], content=images["a"], size=SIZE)
    assert result.style_distance == 0 and result.style_distance_gram == 0 and result.content_distance == 0
    assert set(result.layers) == {"relu1_1", "relu2_1", "relu3_1", "relu4_1"}
    assert all(v == {"mean_std": 0.0, "gram": 0.0} for v in result.layers.values())


def test_distances_are_symmetric_in_their_two_images(images):
    a_to_b = Scorer(images["b"], size=SIZE).score(images["a"])
    b_to_a = Scorer(images["a"], size=SIZE).score(images["b"])
    assert a_to_b.style_distance > 0.05 and a_to_b.style_distance_gram > 0.05
    assert a_to_b.style_distance == pytest.approx(b_to_a.style_distance, rel=1e-5)
    assert a_to_b.style_distance_gram == pytest.approx(b_to_a.style_distance_gram, rel=1e-5)
    scorer = Scorer(images["c"], size=SIZE)  # a and b have one shape: no resizing on either side
    forth, back = scorer.score(images["a"], content=images["b"]), scorer.score(images["b"], content=images["a"])
    assert forth.content_distance > 0.05
    assert forth.content_distance == pytest.approx(back.content_distance, rel=1e-5)


def test_a_photo_of_another_shape_is_resized_to_the_image(images):
    result = Scorer(images["a"], size=SIZE).score(images["a"], content=images["c"])  # 4:3 against 2:3
    assert result.content_distance > 0 and math.isfinite(result.content_distance)


def test_a_different_painting_is_farther_than_a_rescaled_copy(shared_data, tmp_path):
    split = Path(__file__).resolve().parents[1] / "data" / "splits" / "adain_validation.txt"
    names = [line for line in split.read_text().splitlines() if line.startswith("paintings/")][:2]
    painting, other = (shared_data / "train" / name for name in names)
    copy = tmp_path / "copy.jpg"
    with Image.open(painting) as image:  # 60 %, JPEG again: what a tool's resizing does to a painting
        image.convert("RGB").resize((image.width * 3 // 5, image.height * 3 // 5), Image.LANCZOS).save(copy, quality=85)
    scorer = Scorer(painting, size=256)
    near, far = scorer.score(copy), scorer.score(other)
    assert near.style_distance * 10 < far.style_distance, (near, far)
    assert near.style_distance_gram * 10 < far.style_distance_gram, (near, far)


def test_the_definitions_on_known_statistics():
    """Pinned: the mean/std term is RMS over channels of each difference, added; the Gram term the
    Frobenius norm of the difference; the content term RMS of features over the layer's scale (440)."""
    from instyle.engine.losses.adain import FEATURE_SCALE

    # the score's unit: a change here changes every score published (docs/adain.md, benchmarks/results)
    assert FEATURE_SCALE == {"relu1_1": 20.0, "relu2_1": 110.0, "relu3_1": 110.0, "relu4_1": 440.0}
    c = 4
    a = {"relu1_1": (torch.zeros(c), torch.ones(c), torch.zeros(c, c))}
    b = {"relu1_1": (torch.full((c,), 0.5), torch.full((c,), 1.3), torch.full((c, c), 0.25))}
    style, gram, layers = style_distances(a, b)
    assert style == pytest.approx(0.5 + 0.3) and gram == pytest.approx(0.25 * c)
    assert layers == {"relu1_1": {"mean_std": pytest.approx(0.8), "gram": pytest.approx(1.0)}}
    features = torch.zeros(1, 512, 4, 4)
    assert content_distance(features, features + 440.0) == pytest.approx(1.0)


def test_tensors_are_scored_as_the_files_and_small_or_bad_ones_refused(images):
    from instyle.engine.image import load_image

    scorer = Scorer(images["b"], size=SIZE)
    assert scorer.score(load_image(images["a"])).style_distance == scorer.score(images["a"]).style_distance
    with pytest.raises(ImageError, match="<tensor>: expected a float"):
        read_image(torch.zeros(1, 64, 64))
    small = _picture(images["folder"] / "small.png", 3, shape=(40, 200))
    with pytest.raises(ImageError, match=r"small.png: is 200x40; the score needs at least 64 px"):
        read_image(small)


def test_cli_json_lines_have_the_keys_and_types(images):
    result = run_cli("score", images["a"], images["b"], "--style", images["c"], "--content", images["a"], "--json", "--size", "128")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["image"] for row in rows] == [str(images["a"]), str(images["b"])]
    for row in rows:
        assert isinstance(row["style_distance"], float) and isinstance(row["style_distance_gram"], float)
        assert isinstance(row["content_distance"], float) and row["size"] == 128
        assert set(row["layers"]) == {"relu1_1", "relu2_1", "relu3_1", "relu4_1"}
    assert rows[0]["content_distance"] == 0.0 and rows[1]["content_distance"] > 0


def test_cli_table_without_content_and_a_bad_image_among_good_ones(images, capsys):
    bad = images["folder"] / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    code = main(["score", str(images["a"]), str(bad), str(images["folder"] / "nowhere.png"), "--style", str(images["a"]), "--size", "64"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["style", "style_gram", "content"] and len(lines) == 2
    assert lines[1].split() == ["0.0000", "0.0000", "-", str(images["a"])]
    assert f"FAILED {bad}: " in err and f"FAILED {images['folder'] / 'nowhere.png'}: no such file" in err
    assert main(["score", str(images["a"]), "--style", str(images["a"]), "--json", "--size", "64"]) == 0
    assert json.loads(capsys.readouterr().out)["content_distance"] is None


@pytest.mark.parametrize("flag", ["--style", "--content"])
def test_cli_a_bad_painting_or_photo_is_one_line_naming_it(images, flag):
    bad = images["folder"] / "truncated.png"
    bad.write_bytes(images["a"].read_bytes()[:200])
    args = ["--style", images["a"], "--content", images["a"]]
    args[args.index(flag) + 1] = bad
    result = run_cli("score", images["b"], *args)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"instyle score: error: {flag} {bad}: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "argv, code, message",
    [(["nowhere/*.png", "--style", "{a}"], 2, "instyle score: error: no images found in nowhere/*.png"),
     (["{a}", "--style", "{a}", "--device", "tpu"], 2, "instyle score: error: --device tpu: expected auto"),
     (["{a}", "--style", "{a}", "--size", "32"], 2, "argument --size: must be in [64, 4096], got 32"),
     (["{a}"], 2, "the following arguments are required: --style")],
)  # fmt: skip
def test_cli_usage_errors_exit_2_before_any_work(images, capsys, argv, code, message):
    argv = ["score"] + [a.format(a=images["a"]) for a in argv]
    try:
        assert main(argv) == code
    except SystemExit as exit_info:  # argparse's own usage errors
        assert exit_info.code == code
    out, err = capsys.readouterr()
    assert message in err and out == ""


def test_every_flag_says_what_it_does():
    import argparse

    from instyle.apps.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = [a for a in sub.choices["score"]._actions if a.option_strings]
    assert not [a.option_strings[-1] for a in flags if not (a.help or "").split("(default:")[0].strip()]
