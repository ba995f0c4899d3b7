"""instyle texture: training a noise-only TextureNet on the style loss, the generator cache,
sampling by seed, and the CLI (real VGG at a tiny size)."""

import hashlib

import pytest
import torch

from instyle.apps.cli import main
from instyle.engine.image import load_image, save_image
from instyle.engine.modelfile import load_generator
from instyle.engine.models import TextureNet
from instyle.engine.config import ConfigError
from instyle.engine.training import TrainingError
from instyle.engine.texture import TextureConfig, load_or_train_texture, sample_texture, synthesize_texture, train_texture

from .conftest import TinyEncoder

TINY = dict(
    iterations=8, batch_size=2, train_size=32, style_size=32, style_layers=TinyEncoder.names,
    num_scales=3, channels=4, lr=0.05, device="cpu", dtype="fp32",
)  # fmt: skip


@pytest.fixture
def style(tmp_path):
    """A striped, coloured style image: a texture with a clear Gram signature."""
    y = torch.arange(40.0).view(40, 1).expand(40, 48)
    stripes = (torch.sin(y / 2) + 1) / 2
    image = torch.stack([stripes, 1 - stripes, 0.3 * torch.ones_like(stripes)])
    path = tmp_path / "stripes.png"
    save_image(image, path)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTYLE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_training_lowers_the_style_loss_and_is_deterministic(style):
    config = TextureConfig(style=str(style), **TINY)
    first = train_texture(config, extractor=TinyEncoder())
    again = train_texture(config, extractor=TinyEncoder())
    assert first.model.config["content_channels"] == 0
    assert len(first.history) == config.iterations
    assert first.history[-1]["style"] < 0.5 * first.history[0]["style"]
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_seeds_give_different_samples_of_the_requested_size(style):
    model = train_texture(TextureConfig(style=str(style), **TINY), extractor=TinyEncoder()).model
    a = sample_texture(model, (40, 56), seed=1, device="cpu")
    b = sample_texture(model, (40, 56), seed=2, device="cpu")
    assert a.shape == b.shape == (3, 40, 56)
    assert torch.equal(a, sample_texture(model, (40, 56), seed=1, device="cpu"))
    assert (a - b).abs().mean() > 1e-3
    assert 0 <= a.min() and a.max() <= 1


def test_cache_trains_once_per_style_and_config(style, home):
    config = TextureConfig(style=str(style), **TINY)
    model, path, result = load_or_train_texture(config, extractor=TinyEncoder())
    assert result is not None
    assert path.parent == home / "textures"
    assert path.name.startswith(hashlib.sha256(style.read_bytes()).hexdigest() + "-")
    stamp = path.stat().st_mtime_ns
    cached, same_path, none = load_or_train_texture(config, extractor=TinyEncoder())
    assert none is None and same_path == path and path.stat().st_mtime_ns == stamp
    for a, b in zip(model.state_dict().values(), cached.state_dict().values()):
        assert torch.equal(a, b)
    # A training option changes the key.
    longer = TextureConfig(style=str(style), **{**TINY, "iterations": 9})
    _, other, trained = load_or_train_texture(longer, extractor=TinyEncoder())
    assert other != path and trained is not None
    _, _, retrained = load_or_train_texture(config, retrain=True, extractor=TinyEncoder())
    assert retrained is not None
    loaded, metadata = load_generator(path)
    assert isinstance(loaded, TextureNet) and metadata["style_name"] == "stripes"


def test_a_corrupt_cache_entry_is_rebuilt(style, home):
    config = TextureConfig(style=str(style), **TINY)
    _, path, _ = load_or_train_texture(config, extractor=TinyEncoder())
    path.write_bytes(b"not a model")
    _, again, result = load_or_train_texture(config, extractor=TinyEncoder())
    assert again == path and result is not None
    load_generator(path)


def test_bad_inputs(style, home, tmp_path):
    with pytest.raises(ConfigError, match="style is required: a style image"):
        train_texture(TextureConfig(**TINY), extractor=TinyEncoder())
    with pytest.raises(ConfigError, match="train_size must be at least 1, got 0") as error:
        train_texture(TextureConfig(style=str(style), **{**TINY, "train_size": 0}), extractor=TinyEncoder())
    assert error.value.field == "train_size"
    with pytest.raises(ValueError, match="size must be a positive integer"):
        synthesize_texture(TextureConfig(style=str(style), **TINY), 0, seed=1, extractor=TinyEncoder())
    with pytest.raises(Exception, match="missing.png"):
        load_or_train_texture(TextureConfig(style=str(tmp_path / "missing.png"), **TINY), extractor=TinyEncoder())


def test_cli_seeds_and_cache_with_the_real_vgg(tmp_path, shared_data, default_vgg_weights, monkeypatch, capsys):
    monkeypatch.setenv("INSTYLE_HOME", str(tmp_path / "home"))
    style = shared_data / "styles" / "starry_night.jpg"
    common = [
        "texture", "--style", str(style), "--size", "48", "--iterations", "3", "--train-size", "32",
        "--style-size", "64", "--batch-size", "1", "--device", "cpu", "--dtype", "fp32",
        "--vgg-weights", str(default_vgg_weights),
    ]  # fmt: skip
    assert main(common + ["--seed", "1", "-o", str(tmp_path / "a.png")]) == 0
    assert "trained in" in capsys.readouterr().out
    (model_file,) = (tmp_path / "home" / "textures").glob("*.safetensors")
    stamp = model_file.stat().st_mtime_ns
    assert main(common + ["--seed", "2", "-o", str(tmp_path / "b.png")]) == 0
    assert "cached" in capsys.readouterr().out
    assert main(common + ["--seed", "1", "-o", str(tmp_path / "a2.png")]) == 0
    assert model_file.stat().st_mtime_ns == stamp
    a, b, a2 = (load_image(tmp_path / name) for name in ("a.png", "b.png", "a2.png"))
    assert a.shape == b.shape == (3, 48, 48)
    assert torch.equal(a, a2)
    assert (a - b).abs().mean() > 1 / 255


def test_cli_refuses_bad_output_names(tmp_path, capsys):
    assert main(["texture", "--style", "x.png", "-o", str(tmp_path / "out.txt")]) == 2
    assert "use a .png" in capsys.readouterr().err


@pytest.mark.parametrize("where, message", [
    ("nodir/x.png", "folder {tmp}/nodir does not exist"),
    ("notes.txt/x.png", "{tmp}/notes.txt is a file, not a folder"),
    ("folder.png", "{tmp}/folder.png is a folder"),
])  # fmt: skip
def test_cli_checks_the_output_location_before_any_work(style, home, tmp_path, capsys, monkeypatch, where, message):
    from instyle.engine import texture as engine

    monkeypatch.setattr(engine, "synthesize_texture", lambda *a, **k: pytest.fail("trained before the output was checked"))
    (tmp_path / "notes.txt").write_text("notes")
    (tmp_path / "folder.png").mkdir()
    before = sorted(tmp_path.rglob("*"))
    assert main(["texture", "--style", str(style), "-o", str(tmp_path / where)]) != 0
    err = capsys.readouterr().err
    assert err.startswith(f"instyle texture: error: -o {tmp_path / where}") and message.format(tmp=tmp_path) in err
    assert err.count("\n") == 1 and sorted(tmp_path.rglob("*")) == before


def test_an_unwritable_cache_is_refused_before_training(style, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("notes")
    monkeypatch.setenv("INSTYLE_HOME", str(tmp_path / "notes.txt" / "home"))
    steps = []
    with pytest.raises(TrainingError, match=r"cannot cache the texture generator in .*notes.txt is a file.*INSTYLE_HOME"):
        load_or_train_texture(TextureConfig(style=str(style), **TINY), extractor=TinyEncoder(), on_step=lambda *a: steps.append(a))
    assert not steps
