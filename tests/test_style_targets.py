"""Style targets: a style usable by name through the Gram statistics stored in its model file.

In-process tests use the tiny stand-in encoder; the attach tool and the train equivalence on a
bundled model use the real VGG and the painting from ../shared (skipped without it).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import instyle.engine.catalog
from instyle.apps.cli import main
from instyle.apps.experiment import ExperimentConfig, ExperimentError, run_in_vs_bn
from instyle.engine.image import load_image, resize_long_side, save_image
from instyle.engine.losses import PerceptualLoss
from instyle.engine.modelfile import (
    TARGET_PREFIX,
    ModelFileError,
    load_generator,
    read_model_file,
    read_style_targets,
    save_model,
)
from instyle.engine.models import build_generator
from instyle.engine.optimize import optimize
from instyle.engine.targets import (
    StyleSource,
    StyleTargetsError,
    attach_style_targets,
    compute_style_targets,
    default_style,
    resolve_style,
)
from instyle.engine.texture import TextureConfig, train_texture
from instyle.engine.training import TrainConfig, TrainingError, train
from instyle.engine.weights import file_sha256

from .conftest import TinyEncoder

ROOT = Path(__file__).resolve().parents[1]
LAYERS = dict(content_layers=("relu2_1",), style_layers=TinyEncoder.names)


@pytest.fixture
def painting(tmp_path):
    path = tmp_path / "painting.png"
    save_image(torch.rand(3, 44, 36, generator=torch.Generator().manual_seed(5)) ** 2, path)
    return path


@pytest.fixture
def styles_dir(tmp_path, monkeypatch):
    """An installation whose bundled styles are the files in this folder."""
    folder = tmp_path / "styles"
    folder.mkdir()
    monkeypatch.setattr(instyle.engine.catalog, "STYLES_DIR", folder)
    return folder


def _tiny_targets(painting, style_size=32, name="mystyle"):
    return compute_style_targets(
        load_image(painting), style_size=style_size, layers=TinyEncoder.names, extractor=TinyEncoder(),
        style_name=name, style_sha256=file_sha256(painting),
    )  # fmt: skip


def _tiny_generator():
    torch.manual_seed(0)
    return build_generator("transformer", norm="instance", width=0.125, num_residual=1)


def _model_with_targets(path, painting, style_size=32):
    """A model file like a trained one: generator, metadata and the painting's targets."""
    metadata = {
        "training": {"style_size": style_size, "style_layers": list(TinyEncoder.names)},
        "style_name": "mystyle",
        "style_sha256": file_sha256(painting),
        "vgg_weights_sha256": None,
    }
    save_model(_tiny_generator(), path, metadata, dtype=torch.float16, style_targets=_tiny_targets(painting, style_size))
    return path


# ---------------------------------------------------------------------------- the file format


def test_targets_round_trip_through_the_model_file(tmp_path, painting):
    targets = _tiny_targets(painting)
    path = tmp_path / "m.safetensors"
    generator = _tiny_generator()
    save_model(generator, path, {"style_name": "mystyle"}, dtype=torch.float16, style_targets=targets)

    back = read_style_targets(path)
    assert back.layers == TinyEncoder.names and back.style_size == 32 and back.vgg_weights_sha256 is None
    assert back.style_sha256 == file_sha256(painting) and back.source == path
    for layer in TinyEncoder.names:
        assert torch.equal(back.grams[layer], targets.grams[layer]), layer  # fp32, bitwise
        assert torch.equal(back.grams[layer], back.grams[layer].T)
    config, metadata, tensors = read_model_file(path)
    c = targets.grams["relu3_1"].shape[0]
    packed = tensors[TARGET_PREFIX + "relu3_1"]
    assert packed.dtype == torch.float32 and packed.shape == (c * (c + 1) // 2,)  # the upper triangle only
    assert next(t for k, t in tensors.items() if not k.startswith(TARGET_PREFIX)).dtype == torch.float16
    info = metadata["style_targets"]
    assert info["layers"] == list(TinyEncoder.names) and info["style_size"] == 32 and info["packing"] == "triu"

    loaded, _ = load_generator(path)  # the targets are not generator weights
    for name, weight in generator.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weight.half().float()), name
    plain = tmp_path / "plain.safetensors"
    save_model(generator, plain, {"style_name": "mystyle"})
    assert read_style_targets(plain) is None
    with open(path, "rb") as f:  # a file with targets says so in its format version
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]
    assert header["format_version"] == "2"


def _rewrite(src, dst, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(src)
    with open(src, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]
    meta = json.loads(header["instyle"])
    change(tensors, meta)
    save_file(tensors, dst, metadata={**header, "instyle": json.dumps(meta)})
    return dst


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t, m: t[TARGET_PREFIX + "relu1_1"].fill_(float("nan")), "style target style_targets.relu1_1 has NaN"),
        (lambda t, m: t.__setitem__(TARGET_PREFIX + "relu1_1", t[TARGET_PREFIX + "relu1_1"][:-1].clone()), "has shape"),
        (lambda t, m: t.pop(TARGET_PREFIX + "relu2_1"), "style_targets.relu2_1 is missing"),
        (lambda t, m: t.__setitem__(TARGET_PREFIX + "relu9_9", torch.ones(3)), "not listed"),
        (lambda t, m: m.pop("style_targets"), "without a 'style_targets' metadata entry"),
        (lambda t, m: t[TARGET_PREFIX + "relu1_1"].__setitem__(0, -1.0), "negative diagonal"),
    ],
    ids=["nan", "short", "missing", "unlisted", "no-metadata", "not-a-gram"],
)
def test_bad_targets_make_the_file_unusable(tmp_path, painting, change, message):
    good = _model_with_targets(tmp_path / "good.safetensors", painting)
    bad = _rewrite(good, tmp_path / "bad.safetensors", change)
    with pytest.raises(ModelFileError, match=f"bad.safetensors.*{message}"):
        load_generator(bad)
    with pytest.raises(ModelFileError, match=message):
        resolve_style(str(bad))


# ---------------------------------------------------------------------------- the loss


def test_stored_targets_give_the_loss_of_the_image(painting):
    encoder = TinyEncoder()
    image = load_image(painting)
    from_image = PerceptualLoss(encoder, ("relu2_1",), TinyEncoder.names, style_weight=3.0)
    from_image.set_style(resize_long_side(image, 32)[None])  # the size the targets were computed at
    stored = PerceptualLoss(encoder, ("relu2_1",), TinyEncoder.names, style_weight=3.0)
    stored.set_style_targets(_tiny_targets(painting).grams, vgg_weights_sha256=None)
    x, content = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    a, b = from_image(x, content).total, stored(x, content).total
    assert torch.allclose(a, b, rtol=1e-4), (a, b)


def test_set_style_targets_names_what_does_not_fit(painting):
    grams = _tiny_targets(painting).grams
    loss = PerceptualLoss(TinyEncoder(), (), TinyEncoder.names)
    with pytest.raises(ValueError, match=r"no statistics for style layer\(s\) \['relu3_1'\]"):
        loss.set_style_targets({k: v for k, v in grams.items() if k != "relu3_1"}, vgg_weights_sha256=None)
    with pytest.raises(ValueError, match="VGG weights sha256 abc"):
        loss.set_style_targets(grams, vgg_weights_sha256="abc")
    with pytest.raises(ValueError, match="'mean_std' statistics"):
        loss.set_style_targets(grams, vgg_weights_sha256=None, stat="mean_std")
    with pytest.raises(ValueError, match="not symmetric"):
        loss.set_style_targets({**grams, "relu1_1": torch.rand(8, 8) + 1}, vgg_weights_sha256=None)
    with pytest.raises(ValueError, match=r"expected \(C, C\)"):
        loss.set_style_targets({**grams, "relu1_1": torch.rand(8, 7)}, vgg_weights_sha256=None)
    loss.set_style_targets({**grams, "relu1_1": torch.eye(5)}, vgg_weights_sha256=None)  # 5 channels, the encoder has 8
    with pytest.raises(ValueError, match="relu1_1 is for 5 channels but the extractor gives 8"):
        loss(torch.rand(1, 3, 16, 16))


# ---------------------------------------------------------------------------- resolving a style


def test_resolve_style_names_images_models_and_unknowns(tmp_path, painting, styles_dir):
    assert resolve_style(str(painting)).image.shape == (3, 44, 36)
    _model_with_targets(styles_dir / "mystyle.safetensors", painting)
    save_model(_tiny_generator(), styles_dir / "plain.safetensors", {"style_name": "plain"})
    source = resolve_style("mystyle")
    assert source.bundled and source.targets.style_size == 32 and source.image is None
    assert source.style_sha256 == file_sha256(painting) and "no painting needed" in source.describe()
    assert resolve_style(str(styles_dir / "mystyle.safetensors")).targets is not None
    assert instyle.engine.catalog.list_models(with_style_targets=True) == ["mystyle"]
    assert default_style() == "mystyle"
    with pytest.raises(StyleTargetsError, match="bundled style plain carries no style targets; attach them with"):
        resolve_style("plain")
    with pytest.raises(StyleTargetsError, match=r"'nosuch': not a file.*bundled styles: mystyle, plain \(with style targets: mystyle\)"):
        resolve_style("nosuch")
    with pytest.raises(StyleTargetsError, match="no such file"):
        resolve_style(str(tmp_path / "missing.jpg"))


# ---------------------------------------------------------------------------- train, optimize, texture, experiment


def _train_config(tmp_path, photos, style, name, **overrides):
    base = dict(
        style=str(style), content=str(photos), output=str(tmp_path / f"{name}.safetensors"), width=0.125,
        num_residual=1, iterations=4, batch_size=2, image_size=32, checkpoint_every=4, sample_every=0,
        style_weight=10.0, **LAYERS,
    )  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def test_train_with_a_bundled_name_equals_train_with_the_image(tmp_path, photos, painting, styles_dir):
    from_image = train(_train_config(tmp_path, photos, painting, "a", style_size=32), extractor=TinyEncoder())
    shutil.copy(from_image.output, styles_dir / "mystyle.safetensors")  # the file carries the targets
    from_name = train(_train_config(tmp_path, photos, "mystyle", "b"), extractor=TinyEncoder())

    totals_a = torch.tensor([h["total"] for h in from_image.history])
    totals_b = torch.tensor([h["total"] for h in from_name.history])
    assert torch.allclose(totals_a, totals_b, rtol=1e-6), (totals_a, totals_b)
    _, meta_a, _ = read_model_file(from_image.output)
    _, meta_b, _ = read_model_file(from_name.output)
    assert meta_b["training"]["style_size"] == 32 and meta_b["style_sha256"] == meta_a["style_sha256"]
    assert meta_b["style_source"]["kind"] == "style_targets" and meta_b["style_source"]["bundled"]
    a, b = read_style_targets(from_image.output), read_style_targets(from_name.output)
    assert all(torch.equal(a.grams[k], b.grams[k]) for k in a.layers)  # passed on to the new model

    with pytest.raises(TrainingError, match="style_size 48 conflicts with style mystyle.*computed at 32 px"):
        train(_train_config(tmp_path, photos, "mystyle", "c", style_size=48), extractor=TinyEncoder())
    limited = _train_config(tmp_path, photos, painting, "d", style_size=32, style_layers=("relu1_1", "relu2_1"))
    shutil.copy(train(limited, extractor=TinyEncoder()).output, styles_dir / "two.safetensors")
    with pytest.raises(StyleTargetsError, match="carry relu1_1, relu2_1 but the loss also needs relu3_1"):
        train(_train_config(tmp_path, photos, "two", "e"), extractor=TinyEncoder())


def test_optimize_with_stored_targets_equals_the_image(tmp_path, painting, styles_dir):
    _model_with_targets(styles_dir / "mystyle.safetensors", painting, style_size=32)
    content = torch.rand(3, 32, 28, generator=torch.Generator().manual_seed(2))
    common = dict(extractor=TinyEncoder(), size=32, iterations=4, dtype="fp32", **LAYERS)
    by_image = optimize(content, str(painting), **common)  # style at size * style_scale = 32 px
    by_name = optimize(content, "mystyle", **common)
    assert by_name.final_losses["style"] == pytest.approx(by_image.final_losses["style"], rel=1e-4)
    assert torch.allclose(by_name.image, by_image.image, atol=1e-4)
    assert by_name.summary()["styles"][0]["kind"] == "style_targets"


def test_texture_from_stored_targets_keeps_their_size(tmp_path, painting, styles_dir):
    _model_with_targets(styles_dir / "mystyle.safetensors", painting, style_size=40)
    tiny = dict(iterations=2, batch_size=1, train_size=32, style_layers=TinyEncoder.names, num_scales=3, channels=4,
                device="cpu", dtype="fp32")  # fmt: skip
    result = train_texture(TextureConfig(style="mystyle", **tiny), extractor=TinyEncoder())
    assert all(torch.isfinite(torch.tensor(h["total"])) for h in result.history)
    with pytest.raises(TrainingError, match="style_size 64 conflicts"):
        train_texture(TextureConfig(style="mystyle", style_size=64, **tiny), extractor=TinyEncoder())


TINY_EXPERIMENT = dict(
    train=TrainConfig(
        width=0.125, num_residual=1, iterations=2, batch_size=2, image_size=32, style_size=32, dtype="fp32",
        content_layers=("relu2_1",), style_layers=TinyEncoder.names,
    ),
    eval_crops_per_image=1, batch_sizes=(2,), set_sizes=(1,), set_size_iterations=1, set_size_norms=("instance",),
    speed_size=32, optimize_iterations=1, speed_repeats=1, figure_size=48, device="cpu",
)  # fmt: skip


def test_experiment_runs_without_a_style_once_a_bundled_model_carries_targets(tmp_path, painting, styles_dir):
    with pytest.raises(ExperimentError, match="no bundled style carries style targets"):
        run_in_vs_bn(ExperimentConfig(output=str(tmp_path / "none"), **TINY_EXPERIMENT), extractor=TinyEncoder())
    _model_with_targets(styles_dir / "mystyle.safetensors", painting, style_size=40)
    out = tmp_path / "report"
    report = run_in_vs_bn(ExperimentConfig(output=str(out), **TINY_EXPERIMENT), extractor=TinyEncoder())
    assert report["config"]["style"] == "mystyle" and report["config"]["train"]["style_size"] == 40  # the targets' size
    assert report["style"]["kind"] == "style_targets" and report["style"]["bundled"]
    assert any("40 px" in note for note in report["meta"]["notes"])
    assert report["speed"]["optimize_style"] == "stored style targets at 40 px"
    markdown = (out / "report.md").read_text()
    assert "stored with the bundled `mystyle` model, computed from the painting at 40 px" in markdown
    assert load_image(out / "figure.png").shape[1] > 100


# ---------------------------------------------------------------------------- the CLI


def test_cli_errors_name_the_style_and_what_to_do(tmp_path, painting, styles_dir, capsys):
    _model_with_targets(styles_dir / "mystyle.safetensors", painting)
    save_model(_tiny_generator(), styles_dir / "plain.safetensors", {"style_name": "plain"})
    out = str(tmp_path / "m.safetensors")
    cases = [
        (["train", "--style", "nosuch", "-o", out], 1, "bundled styles: mystyle, plain"),
        (["train", "--style", "plain", "-o", out], 1, "attach_style_targets.py"),
        (["train", "--style", "mystyle", "--style-size", "64", "-o", out], 1, "conflicts"),
        (["optimize", str(painting), "nosuch", "-o", str(tmp_path / "o.png")], 1, "not a bundled style name"),
        (["texture", "--style", "nosuch", "-o", str(tmp_path / "t.png")], 1, "bundled styles"),
        (["experiment", "in-vs-bn", "--style", "nosuch", "-o", str(tmp_path / "e")], 2, "bundled styles"),
        (["experiment", "in-vs-bn", "--style", str(tmp_path / "gone.jpg"), "-o", str(tmp_path / "e")], 2, "gone.jpg': no such file"),
    ]
    for argv, code, message in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    shutil.rmtree(styles_dir)
    styles_dir.mkdir()
    assert main(["experiment", "in-vs-bn", "-o", str(tmp_path / "e")]) == 2
    assert "no bundled style carries style targets" in capsys.readouterr().err


def test_cli_in_a_subprocess_exits_cleanly_on_an_unknown_style(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "instyle", "train", "--style", "no_such_style", "-o", str(tmp_path / "m.safetensors")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1 and "no_such_style" in run.stderr and "bundled" in run.stderr
    assert "Traceback" not in run.stderr


# ---------------------------------------------------------------------------- the real VGG and a bundled model


@pytest.fixture
def bundled_copy(tmp_path, hed_style_model):
    """A copy of a cezanne model trained on the HED VGG-16 (conftest's ``hed_style_model``)."""
    return Path(shutil.copy(hed_style_model, tmp_path / "cezanne.safetensors"))


def test_attach_refuses_a_wrong_painting_and_writes_the_real_targets(bundled_copy, shared_data):
    before = bundled_copy.read_bytes()
    with pytest.raises(StyleTargetsError, match=r"udnie.jpg \(sha256 .*\) is not the painting .* records style 'cezanne'"):
        attach_style_targets(bundled_copy, shared_data / "styles" / "udnie.jpg")
    assert bundled_copy.read_bytes() == before  # refused: untouched
    tool = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "attach_style_targets.py"), str(bundled_copy),
         "--style", str(shared_data / "styles" / "starry_night.jpg")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tool.returncode == 1 and "is not the painting" in tool.stderr and "Traceback" not in tool.stderr

    painting = shared_data / "styles" / "cezanne.jpg"
    targets = attach_style_targets(bundled_copy, painting, extra_layers=("relu5_1",))
    _, metadata, _ = read_model_file(bundled_copy)
    assert targets.layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert targets.style_size == metadata["training"]["style_size"]
    assert targets.vgg_weights_sha256 == metadata["vgg_weights_sha256"]
    assert bundled_copy.stat().st_size < 4e6
    # Independently: the loss's own statistics of the painting at that size.
    from instyle.engine.models.vgg import VGGFeatures

    loss = PerceptualLoss(VGGFeatures(targets.layers), (), targets.layers)
    loss.set_style(resize_long_side(load_image(painting), targets.style_size)[None])
    for layer in targets.layers:
        assert torch.allclose(read_style_targets(bundled_copy).grams[layer], loss.style_target(layer)[0], rtol=1e-4, atol=1e-6)
    generator, _ = load_generator(bundled_copy)  # still a working model
    assert generator(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_training_from_attached_targets_equals_training_from_the_painting(tmp_path, bundled_copy, shared_data, photos):
    painting = shared_data / "styles" / "cezanne.jpg"
    attach_style_targets(bundled_copy, painting)
    size = read_style_targets(bundled_copy).style_size
    common = dict(iterations=2, dtype="fp32", content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1"))
    # cezanne's targets are the HED VGG-16's: from the painting, that network must be asked for
    by_painting = train(_train_config(tmp_path, photos, painting, "p", style_size=size, vgg_weights="hed-vgg16", **common))
    by_targets = train(_train_config(tmp_path, photos, bundled_copy, "t", **common))
    for a, b in zip(by_painting.history, by_targets.history):
        assert a["style"] == pytest.approx(b["style"], rel=1e-5) and a["total"] == pytest.approx(b["total"], rel=1e-5)


def test_bundled_styles_name_the_weights_their_targets_need(hed_style_model):
    """The bundled styles were trained on the ImageNet VGG-19: `--style starry_night` selects those
    weights by itself; a model whose targets are the HED VGG-16's selects that one."""
    from instyle.engine.targets import weights_for_targets

    expected = {"starry_night": "imagenet-vgg19", "udnie": "imagenet-vgg19", "cezanne": "imagenet-vgg19",
                "composition_vii": "imagenet-vgg19", str(hed_style_model): "hed-vgg16"}  # fmt: skip
    for name, weights in expected.items():
        source = resolve_style(name)
        assert source.targets is not None, name
        assert weights_for_targets(source) == weights, name
    assert weights_for_targets(StyleSource("painting.png", "painting")) is None


def test_adopted_weights_scale_the_style_weight_as_the_loss_config_says(hed_style_model):
    """The loss network settles with the style weight: `train` and `texture` default to the ImageNet
    VGG-19 (style weights 5 and 1.25e4), the other commands to the HED VGG-16; with follow_style_targets
    --style NAME takes the weights its stored targets were computed with, and with rescale_style_weight
    the style weight is scaled from the network it is tuned for to the chosen one (40 on HED for train's
    5, 12.5 on VGG-19 for optimize's 100); the command line turns both off for the flags it is given."""
    from instyle.engine.optimize import OptimizeConfig
    from instyle.engine.targets import adopt_target_weights
    from instyle.engine.training import TrainConfig

    starry, cezanne = resolve_style("starry_night"), resolve_style(str(hed_style_model))  # VGG-19 and HED targets
    plain = StyleSource("painting.png", "painting")
    def settled(config):
        return config.loss.vgg_weights, config.loss.style_weight

    assert settled(TrainConfig()) == ("imagenet-vgg19", 5.0)
    config = TrainConfig(style="starry_night")
    assert adopt_target_weights(config, starry) is config, "VGG-19 targets under train: nothing to change"
    config = adopt_target_weights(TrainConfig(style=str(hed_style_model)), cezanne)
    assert settled(config) == ("hed-vgg16", 40.0)
    assert adopt_target_weights(config, cezanne) == config, "settling twice changes nothing"
    assert settled(adopt_target_weights(TrainConfig(vgg_weights="hed-vgg16"), plain)) == ("hed-vgg16", 40.0)
    given = TrainConfig(
        style="starry_night", vgg_weights="hed-vgg16", style_weight=7.0, follow_style_targets=False,
        rescale_style_weight=False,
    )  # fmt: skip
    assert adopt_target_weights(given, starry) == given
    weight_file = TrainConfig(vgg_weights="my_vgg.pth")
    assert adopt_target_weights(weight_file, plain) == weight_file, "a weight file's scale is unknown"
    assert settled(adopt_target_weights(OptimizeConfig(), starry)) == ("imagenet-vgg19", 12.5)
    given = OptimizeConfig(style_weight=30.0, rescale_style_weight=False)
    assert settled(adopt_target_weights(given, starry)) == ("imagenet-vgg19", 30.0)
    assert settled(adopt_target_weights(OptimizeConfig(style_weight=30.0), starry)) == ("imagenet-vgg19", 3.75)
    assert adopt_target_weights(OptimizeConfig(), cezanne) == OptimizeConfig()
    from instyle.engine.texture import TextureConfig, resolve_style_size

    # texture trains a generator like train: the VGG-19 by default, 8x the weight on HED
    assert TextureConfig().loss.vgg_weights == "imagenet-vgg19"
    assert settled(adopt_target_weights(TextureConfig(style=str(hed_style_model)), cezanne)) == ("hed-vgg16", 1e5)
    config, _ = resolve_style_size(TextureConfig(style="starry_night"))
    assert settled(config) == ("imagenet-vgg19", 1.25e4), "named, for the metadata"


def test_targets_of_other_weights_are_refused_with_the_weights_to_use():
    """Targets whose weights differ from the loss network's: an error that names the source to pass
    (a known digest) or asks for the weight file (an unknown one)."""
    from instyle.engine.modelfile import StyleTargets
    from instyle.engine.targets import check_targets
    from instyle.engine.weights import SOURCES

    extractor = TinyEncoder()
    extractor.weights_sha256 = "0" * 64
    grams = {name: torch.eye(4) for name in TinyEncoder.names}
    known = StyleTargets(grams=grams, style_size=64, vgg_weights_sha256=SOURCES["imagenet-vgg19"].sha256, style_name="s")
    with pytest.raises(StyleTargetsError, match="vgg_weights imagenet-vgg19"):
        check_targets(known, TinyEncoder.names, extractor, "--style s")
    unknown = StyleTargets(grams=grams, style_size=64, vgg_weights_sha256="f" * 64, style_name="s")
    with pytest.raises(StyleTargetsError, match="vgg_weights PATH of that weight file"):
        check_targets(unknown, TinyEncoder.names, extractor, "--style s")
