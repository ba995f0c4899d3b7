"""Issue #19: many styles in one generator (conditional instance norm), mixing them, and adding one.

Training runs in-process on the tiny stand-in encoder; the command-line refusals run in real
subprocesses (no traceback, exit status, nothing written)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from instyle.apps.cli import main
from instyle.engine import catalog
from instyle.engine.config import ConfigError
from instyle.engine.image import save_image
from instyle.engine.inference.stylize import load_model
from instyle.engine.modelfile import (
    ModelFileError, StyleTargets, load_generator, read_model_file, save_model, styles_from_file,
)  # fmt: skip
from instyle.engine.models import TransformerNet
from instyle.engine.targets import compute_style_targets, resolve_style
from instyle.engine.training import TrainConfig, TrainingError, TrainingInterrupted, train
from instyle.engine.weights import file_sha256

from .conftest import TinyEncoder

LAYERS = dict(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1", "relu3_1"))


@pytest.fixture
def paintings(tmp_path):
    """Three small paintings a, b, c (PNG files) in tmp_path / "paintings"."""
    folder = tmp_path / "paintings"
    folder.mkdir()
    for i, name in enumerate("abc"):
        save_image(torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(10 + i)) ** (i + 1), folder / f"{name}.png")
    return folder


def _config(tmp_path, photos, paintings, styles="ab", name="multi", **overrides):
    base = dict(
        style=tuple(str(paintings / f"{s}.png") for s in styles), content=str(photos),
        output=str(tmp_path / f"{name}.safetensors"), width=0.125, num_residual=1, iterations=6, batch_size=2,
        image_size=32, style_size=32, content_weight=1.0, style_weight=10.0, tv_weight=1.0, checkpoint_every=2,
        sample_every=0, **LAYERS,
    )  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def _rows(path) -> dict[str, torch.Tensor]:
    """The style rows (conditional norms' weight and bias) of a model file."""
    return {k: v for k, v in load_file(str(path)).items() if k.endswith(("norm.weight", "norm.bias"))}


def multi_file(path, names=("a", "b"), seed=0, vgg_sha=None) -> None:
    """A multi-style model file with random rows and stand-in targets (no training)."""
    torch.manual_seed(seed)
    net = TransformerNet(norm="conditional_instance", num_styles=len(names), width=0.25, num_residual=1)
    with torch.no_grad():
        for p in net.style_parameters():
            p.uniform_(0.5, 1.5)
    targets = [
        StyleTargets({"relu1_1": torch.eye(8) * (i + 1)}, 32, vgg_sha, name, f"{i:064x}") for i, name in enumerate(names)
    ]
    save_model(net, path, {"vgg_weights_sha256": vgg_sha}, style_targets=targets)


# ---------------------------------------------------------------------------- training


def test_training_several_styles_writes_one_model_with_each_styles_name_painting_and_targets(tmp_path, photos, paintings):
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    save_image(torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(5)), heldout / "h.png")
    config = _config(tmp_path, photos, paintings, "abc", eval_content=str(heldout), eval_every=3, sample_every=3)
    result = train(config, extractor=TinyEncoder())
    model_config, metadata, tensors = read_model_file(config.output)
    assert model_config == {"arch": "transformer", "norm": "conditional_instance", "width": 0.125, "num_residual": 1, "num_styles": 3}
    with safe_open(config.output, "pt") as f:
        assert f.metadata()["format_version"] == "3"
    assert [e["name"] for e in metadata["styles"]] == ["a", "b", "c"] and "style_targets" not in metadata
    assert [e["style_sha256"] for e in metadata["styles"]] == [file_sha256(paintings / f"{n}.png") for n in "abc"]
    for name, stored in zip("abc", styles_from_file(config.output, metadata, tensors)):  # each style's own targets
        from instyle.engine.image import load_image

        computed = compute_style_targets(load_image(paintings / f"{name}.png"), style_size=32, layers=LAYERS["style_layers"],
                                         extractor=TinyEncoder(), style_name=name, style_sha256=None)  # fmt: skip
        # (the run's encoder may compute in another memory layout: equal to round-off)
        assert all(torch.allclose(stored.grams[layer], computed.grams[layer], rtol=1e-5, atol=1e-7) for layer in LAYERS["style_layers"])
    rows = list(csv.DictReader(open(result.log_dir / "heldout.csv")))  # evaluated per style, their mean the total
    assert [r["step"] for r in rows] == ["3", "6"]
    assert float(rows[0]["total"]) == pytest.approx(sum(float(rows[0][f"total/{n}"]) for n in "abc") / 3)
    assert {f"samples_00000{s}_{n}.png" for s in (3, 6) for n in "abc"} <= {p.name for p in result.log_dir.iterdir()}
    model = load_model(config.output)
    assert model.styles == ("a", "b", "c")
    assert model.stylize(torch.rand(3, 21, 30), style="b").shape == (3, 21, 30)


def test_each_step_trains_the_styles_in_turn_and_only_that_styles_rows(tmp_path, photos, paintings, monkeypatch):
    from instyle.engine.training.multi import MultiStyleTrainer

    seen = []
    step = MultiStyleTrainer.step

    def record(self):
        before = [p.detach().clone() for p in self.model.style_parameters()]
        losses = step(self)
        moved = {row for b, p in zip(before, self.model.style_parameters()) for row in range(3) if not torch.equal(b[row], p[row])}
        seen.append(moved)
        return losses

    monkeypatch.setattr(MultiStyleTrainer, "step", record)
    train(_config(tmp_path, photos, paintings, "abc", iterations=4, lr=1e-2), extractor=TinyEncoder())
    # the first step moves only its style's rows; later steps move earlier styles too (Adam's momentum)
    assert seen[0] == {0} and seen[1] == {0, 1} and seen[2] == {0, 1, 2}


def test_a_resumed_multi_style_run_equals_one_straight_and_keeps_its_styles(tmp_path, photos, paintings):
    straight = train(_config(tmp_path, photos, paintings, "abc", name="straight"), extractor=TinyEncoder())
    config = _config(tmp_path, photos, paintings, "abc", name="resumed")

    def interrupt(step, losses):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(config, on_step=interrupt, extractor=TinyEncoder())
    other_order = _config(tmp_path, photos, paintings, "bac", name="resumed", resume=True)
    with pytest.raises(TrainingError, match=r"trained another styles \(a, b, c; now b, a, c\)"):
        train(other_order, extractor=TinyEncoder())
    resumed = train(TrainConfig(**{**config.__dict__, "resume": True}), extractor=TinyEncoder())
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # bitwise on CPU
    assert [h["total"] for h in resumed.history] == [h["total"] for h in straight.history]


def test_the_base_keeps_its_convolutions_and_rows_bit_for_bit_and_gains_a_style(tmp_path, photos, paintings):
    base = _config(tmp_path, photos, paintings, "ab", name="base")
    train(base, extractor=TinyEncoder())
    more = _config(tmp_path, photos, paintings, "c", name="more", base=base.output)  # at --base's own default lr
    result = train(more, extractor=TinyEncoder())
    assert load_model(more.output).styles == ("a", "b", "c")
    before, after = load_file(base.output), load_file(more.output)
    for name, tensor in before.items():
        if name.endswith(("norm.weight", "norm.bias")):
            assert torch.equal(after[name][:2], tensor), name  # the base's rows, bit for bit
            assert not torch.equal(after[name][2], tensor.mean(0)), name  # the new row trained from the mean
        else:
            assert torch.equal(after[name], tensor), name  # convolutions and the base's style targets
    _, metadata, _ = read_model_file(more.output)
    assert metadata["base"]["styles"] == ["a", "b"] and metadata["base"]["sha256"] == file_sha256(base.output)
    assert metadata["training"]["lr"] == 3e-2 and read_model_file(base.output)[1]["training"]["lr"] == 1e-3
    assert result.model.down[0].conv.weight.requires_grad is False
    # resumed exactly too
    resumed = _config(tmp_path, photos, paintings, "c", name="more", base=base.output, resume=True, iterations=6)
    assert torch.equal(train(resumed, extractor=TinyEncoder()).model.up[0].norm_act.norm.weight, result.model.up[0].norm_act.norm.weight)


def test_base_refusals_name_the_argument(tmp_path, photos, paintings):
    single = TrainConfig(**{**_config(tmp_path, photos, paintings, "a", name="single").__dict__, "style": str(paintings / "a.png")})
    train(single, extractor=TinyEncoder())
    with pytest.raises(ConfigError, match=r"^base .*single\.safetensors is a single-style model"):
        train(_config(tmp_path, photos, paintings, "c", name="x", base=single.output), extractor=TinyEncoder())
    base = _config(tmp_path, photos, paintings, "ab", name="base")
    train(base, extractor=TinyEncoder())
    with pytest.raises(ConfigError, match=r"^style .*a\.png: the style name 'a' is already a style of the base"):
        train(_config(tmp_path, photos, paintings, "a", name="x", base=base.output), extractor=TinyEncoder())
    shutil.copy(paintings / "b.png", paintings / "d.png")
    with pytest.raises(ConfigError, match=r"^style .*d\.png is the same painting .* as a style of the base .*\(b\)"):
        train(_config(tmp_path, photos, paintings, "d", name="x", base=base.output), extractor=TinyEncoder())
    other = TinyEncoder(seed=3)
    other.weights_sha256 = "f" * 64  # another loss network than the base's (whose targets have none)
    with pytest.raises(ConfigError, match=r"^base .*was trained with another loss network"):
        train(_config(tmp_path, photos, paintings, "c", name="x", base=base.output), extractor=other)
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.train").exists()


def test_duplicate_names_and_identical_paintings_are_refused_naming_the_style(tmp_path, photos, paintings):
    (paintings / "sub").mkdir()
    save_image(torch.rand(3, 20, 20), paintings / "sub" / "a.jpg")
    config = _config(tmp_path, photos, paintings, "ab")
    with pytest.raises(ConfigError, match=r"^style .*sub/a\.jpg: the style name 'a' is already the style of .*a\.png"):
        train(TrainConfig(**{**config.__dict__, "style": (*config.style, str(paintings / "sub" / "a.jpg"))}), extractor=TinyEncoder())
    shutil.copy(paintings / "a.png", paintings / "twin.png")
    with pytest.raises(ConfigError, match=r"^style .*twin\.png is the same painting .* as the style of .*a\.png \(a\)"):
        train(TrainConfig(**{**config.__dict__, "style": (*config.style, str(paintings / "twin.png"))}), extractor=TinyEncoder())
    shutil.copy(paintings / "c.png", paintings / "x=1.png")
    with pytest.raises(ConfigError, match=r"^style .*x=1\.png: style name 'x=1' has a character"):
        train(TrainConfig(**{**config.__dict__, "style": (*config.style, str(paintings / "x=1.png"))}), extractor=TinyEncoder())


# ---------------------------------------------------------------------------- the model file


def test_the_file_round_trips_and_an_older_or_newer_reader_refuses_by_version(tmp_path, monkeypatch):
    from instyle.engine import modelfile

    path = tmp_path / "m.safetensors"
    multi_file(path, ("wave", "udnie"))
    generator, metadata = load_generator(path)
    assert generator.num_styles == 2 and [e["name"] for e in metadata["styles"]] == ["wave", "udnie"]
    assert [t.style_sha256 for t in styles_from_file(path, *read_model_file(path)[1:])] == [f"{0:064x}", f"{1:064x}"]
    monkeypatch.setattr(modelfile, "READABLE_VERSIONS", ("1", "2"))  # the reader before this one
    with pytest.raises(ModelFileError, match=r"unknown format version 3 \(this instyle reads 1, 2\)"):
        load_generator(path)
    monkeypatch.undo()
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    for version, message in [
        ("4", r"unknown format version 4 \(this instyle reads 1, 2, 3\): written by a newer instyle\? upgrade"),
        ("2", "a multi-style generator in a format version 2 file"),
    ]:
        save_file(tensors, str(path), {**header, "format_version": version})
        with pytest.raises(ModelFileError, match=message):
            load_generator(path)
    styles = json.loads(header["instyle"])["styles"]
    for bad, message in [
        ({"styles": styles[:1]}, "a generator of 2 styles whose metadata lists 1 styles"),
        ({"styles": [styles[0], {**styles[1], "name": "wave"}]}, "style 1: style name 'wave' is given twice"),
        ({"styles": [styles[0], {**styles[1], "name": "a,b"}]}, "style 1: style name 'a,b' has a character"),
        ({"styles": [styles[0], {k: v for k, v in styles[1].items() if k != "style_targets"}]}, "style 1 carries no style targets"),
    ]:
        save_file(tensors, str(path), {**header, "instyle": json.dumps({**json.loads(header["instyle"]), **bad})})
        with pytest.raises(ModelFileError, match=message):
            read_model_file(path)


def test_single_style_files_are_written_and_read_as_before(tmp_path):
    net = TransformerNet(width=0.25, num_residual=1)
    path = tmp_path / "single.safetensors"
    save_model(net, path, {"style_name": "s"})
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["format_version"] == "1"
        assert json.loads(f.metadata()["config"]) == {"arch": "transformer", "norm": "instance", "width": 0.25, "num_residual": 1}
    bundled = catalog.STYLES_DIR / "starry_night.safetensors"  # a file written before this change
    stored = load_file(str(bundled))
    model = load_model("starry_night")
    assert model.styles == () and model.generator.num_styles is None
    for name, tensor in model.generator.state_dict().items():
        assert torch.equal(tensor, stored[name].to(tensor.dtype)), name  # loaded bit for bit
    with pytest.raises(ValueError, match="starry_night is a single-style model"):
        model.stylize(torch.rand(3, 8, 8), style="starry_night")


# ---------------------------------------------------------------------------- mixing, tiling, names


def test_a_mix_is_the_network_with_interpolated_gamma_and_beta(tmp_path):
    path = tmp_path / "m.safetensors"
    multi_file(path, ("a", "b", "c"))
    model = load_model(path)
    x = torch.rand(1, 3, 37, 41)
    generator = model.generator
    plain = TransformerNet(width=0.25, num_residual=1).eval()
    mixed = {k: 0.6 * v[0] + 0.4 * v[1] if k.endswith(("norm.weight", "norm.bias")) else v for k, v in generator.state_dict().items()}
    plain.load_state_dict(mixed)
    expected = plain(x)
    got = model.stylize(x, style={"a": 3, "b": 2}, dtype="fp32")  # normalized: 0.6 and 0.4
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(model.stylize(x, style={"a": 0.6, "b": 0.4, "c": 0}, dtype="fp32"), got)
    one = model.stylize(x, style="c", dtype="fp32")
    assert torch.equal(one, model.stylize(x, style={"c": 1}, dtype="fp32"))
    assert torch.equal(one, generator.eval()(x, 2).clamp(0, 1))  # a pick is its row, bit for bit
    for style, message in [
        (None, r"style is needed: m holds 3 styles \(a, b, c\)"), ({"z": 1}, r"m has no style 'z'; its styles: a, b, c"),
        ({"a": -1}, "weight of a must be a finite number >= 0"), ({"a": 0, "b": 0}, "the weights sum to 0"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            model.stylize(x, style=style)


def test_tiles_of_a_multi_style_model_equal_the_whole_image(tmp_path):
    path = tmp_path / "m.safetensors"
    multi_file(path)
    model = load_model(path)
    image = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(3))
    whole = model.stylize(image, style={"a": 0.3, "b": 0.7}, dtype="fp32")
    tiled = model.stylize(image, style={"a": 0.3, "b": 0.7}, dtype="fp32", tile=32)
    assert (tiled - whole).abs().max() <= 1 / 255


def test_styles_inside_a_bundled_multi_model_are_listed_and_load_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(catalog, "STYLES_DIR", tmp_path)
    multi_file(tmp_path / "multi.safetensors", ("wave", "udnie"))
    save_model(TransformerNet(width=0.25, num_residual=1), tmp_path / "solo.safetensors", {"style_name": "solo"})
    assert catalog.list_models() == ["multi:wave", "multi:udnie", "solo"]
    assert catalog.list_models(with_style_targets=True) == ["multi:wave", "multi:udnie"]
    x = torch.rand(3, 20, 24)
    by_name = load_model("multi:udnie")
    assert by_name.name == "udnie" and torch.equal(by_name.stylize(x), load_model(tmp_path / "multi.safetensors").stylize(x, style="udnie"))
    assert torch.equal(load_model("udnie").stylize(x), by_name.stylize(x))  # the bare name, unique in the catalog
    source = resolve_style("multi:wave")  # a bundled style's targets, for train --style multi:wave
    assert source.name == "wave" and source.targets.style_sha256 == f"{0:064x}"
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "multi:wave" in out and "multi:udnie" in out and "solo" in out and "--style-mix" in out
    photo = tmp_path / "photo.png"
    save_image(torch.rand(3, 16, 16), photo)
    assert main(["stylize", str(photo), "--model", "multi:wave", "-o", str(tmp_path / "out")]) == 0
    assert main(["stylize", str(photo), "--model", "multi", "--style-mix", "wave=0.6,udnie=0.4", "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo_wave.png", "photo_wave60+udnie40.png"]


# ---------------------------------------------------------------------------- the command line


def _instyle(*argv, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "instyle", *map(str, argv)], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("mix, message", [
    (None, r"--style-mix is needed: m is a multi-style model; choose one of its styles \(a, b\)"),
    ("a=x", r"--style-mix 'a=x': the weight of a, 'x', is not a number"),
    ("a=-1", r"--style-mix a=-1: the weight of a must be a finite number >= 0, got -1.0"),
    ("z=1", r"--style-mix z=1: m has no style 'z'; its styles: a, b"),
    ("a=0,b=0", r"--style-mix a=0,b=0: the weights sum to 0"),
    ("a=1,a=2", r"--style-mix 'a=1,a=2': style a is given twice"),
])  # fmt: skip
def test_cli_bad_mixes_are_one_line_errors_and_write_nothing(tmp_path, mix, message):
    multi_file(tmp_path / "m.safetensors")
    save_image(torch.rand(3, 16, 16), tmp_path / "photo.png")
    run = _instyle("stylize", tmp_path / "photo.png", "--model", tmp_path / "m.safetensors", "-o", tmp_path / "out",
                   *(["--style-mix", mix] if mix is not None else []))  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and __import__("re").search(message, run.stderr), run.stderr
    assert not (tmp_path / "out").exists()


def test_cli_style_mix_needs_a_multi_style_model(tmp_path):
    save_model(TransformerNet(width=0.25, num_residual=1), tmp_path / "solo.safetensors", {"style_name": "solo"})
    save_image(torch.rand(3, 16, 16), tmp_path / "photo.png")
    run = _instyle("stylize", tmp_path / "photo.png", "--model", tmp_path / "solo.safetensors", "--style-mix", "a",
                   "-o", tmp_path / "out")  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--style-mix a: solo is a single-style model" in run.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["duplicate name", "same painting", "single base", "style in base"])
def test_cli_train_refusals_name_the_argument_and_write_nothing(tmp_path, paintings, case):
    (paintings / "sub").mkdir()
    save_image(torch.rand(3, 20, 20), paintings / "sub" / "a.jpg")
    shutil.copy(paintings / "b.png", paintings / "twin.png")
    save_model(TransformerNet(width=0.25, num_residual=1), tmp_path / "solo.safetensors", {"style_name": "solo"})
    multi_file(tmp_path / "base.safetensors", ("a", "b"))
    a, b, c = (paintings / f"{n}.png" for n in "abc")
    argv, message = {
        "duplicate name": ([a, b, paintings / "sub" / "a.jpg"], r"--style .*sub/a\.jpg: the style name 'a' is already the style of"),
        "same painting": ([a, b, paintings / "twin.png"], r"--style .*twin\.png is the same painting .* as the style of .*b\.png \(b\)"),
        "single base": ([c, "--base", tmp_path / "solo.safetensors"], r"--base .*solo\.safetensors is a single-style model"),
        "style in base": ([a, "--base", tmp_path / "base.safetensors"], r"--style .*a\.png: the style name 'a' is already a style of the base"),
    }[case]  # fmt: skip
    run = _instyle("train", "--style", *argv, "-o", tmp_path / "new.safetensors", "--image-size", "32", "--iterations", "2")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert __import__("re").search(message, run.stderr), run.stderr
    assert not (tmp_path / "new.safetensors").exists() and not (tmp_path / "new.train").exists()


@pytest.mark.network
def test_cli_base_with_another_loss_network_is_refused(tmp_path, paintings, imagenet_vgg19_weights):
    multi_file(tmp_path / "base.safetensors", ("a", "b"), vgg_sha="0" * 64)  # a network no source has
    run = _instyle("train", "--style", paintings / "c.png", "--base", tmp_path / "base.safetensors", "-o", tmp_path / "new.safetensors",
                   "--image-size", "32", "--iterations", "2", "--dtype", "fp32")  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "--base" in run.stderr and "was trained with another loss network" in run.stderr, run.stderr
    assert not (tmp_path / "new.safetensors").exists() and not (tmp_path / "new.train").exists()


@pytest.mark.network
def test_two_gloo_processes_train_a_multi_style_model_as_one_process_does(tmp_path, photos, paintings, imagenet_vgg19_weights):
    common = ["--style", paintings / "a.png", paintings / "b.png", "--content", photos, "--width", "0.125", "--num-residual", "1",
              "--batch-size", "4", "--image-size", "32", "--style-size", "32", "--iterations", "4", "--sample-every", "0",
              "--dtype", "fp32"]  # fmt: skip
    one = _instyle("train", *common, "-o", tmp_path / "one.safetensors", timeout=300)
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541", "-m", "instyle",
         "train", *map(str, common), "-o", str(tmp_path / "two.safetensors")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    logs = [list(csv.DictReader(open(tmp_path / f"{name}.train" / "log.csv"))) for name in ("one", "two")]
    assert len(logs[0]) == len(logs[1]) == 4
    for a, b in zip(*logs):
        assert float(b["total"]) == pytest.approx(float(a["total"]), rel=1e-4)
    assert load_model(tmp_path / "two.safetensors").styles == ("a", "b")


@pytest.mark.slow  # torch.compile takes about a minute on the CPU
def test_compiled_multi_style_training_follows_eager(tmp_path, photos, paintings):
    eager = train(_config(tmp_path, photos, paintings, "ab", name="eager", iterations=3, checkpoint_every=100), extractor=TinyEncoder())
    config = _config(tmp_path, photos, paintings, "ab", name="compiled", iterations=3, checkpoint_every=100, compile=True)
    compiled = train(config, extractor=TinyEncoder())
    for a, b in zip(eager.history, compiled.history):  # the styles alternate in the compiled run too
        assert abs(a["total"] - b["total"]) <= 1e-3 * abs(a["total"])
    assert load_model(config.output).styles == ("a", "b")


# ---------------------------------------------------------------------------- bf16 targets (the bundle)


def test_pack_style_targets_stores_every_styles_targets_in_bf16_and_they_read_back(tmp_path):
    """tools/pack_style_targets.py (how the bundled multi-style model fits 6 MB): the targets are
    rewritten in bf16 (half the bytes), the weights and names stay bit for bit, and the targets read
    back are the fp32 ones within bf16's rounding; a file without targets is refused naming it."""
    path = tmp_path / "m.safetensors"
    multi_file(path, ("wave", "udnie"))
    before_size, (_, _, before) = path.stat().st_size, read_model_file(path)
    done = subprocess.run([sys.executable, "tools/pack_style_targets.py", str(path), "--dtype", "bfloat16"],
                          capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    _, metadata, after = read_model_file(path)
    assert [s["name"] for s in metadata["styles"]] == ["wave", "udnie"]
    assert all(s["style_targets"]["dtype"] == "bfloat16" for s in metadata["styles"])
    for name, t in before.items():
        if name.startswith("style_targets."):
            assert after[name].dtype == torch.bfloat16 and torch.allclose(after[name].float(), t, rtol=4e-3), name
        else:
            assert torch.equal(after[name], t), name
    assert path.stat().st_size < before_size
    styles = styles_from_file(path, metadata, after)
    assert styles[1].dtype == torch.bfloat16 and torch.allclose(styles[1].grams["relu1_1"], torch.eye(8) * 2)

    plain = tmp_path / "plain.safetensors"
    save_model(TransformerNet(width=0.25, num_residual=1), plain, {"style_name": "solo"})
    done = subprocess.run([sys.executable, "tools/pack_style_targets.py", str(plain)],
                          capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))  # fmt: skip
    assert done.returncode == 1 and f"{plain} carries no style targets" in done.stderr and "Traceback" not in done.stderr
