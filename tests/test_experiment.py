"""instyle experiment in-vs-bn: a tiny configuration writes a complete report with finite numbers.

The conclusions are not asserted (they depend on training length); only the report's structure,
that every number is finite, and the measurements that hold by construction (instance norm's
output does not depend on the batch; batch norm's does in training mode).
"""

import json
import math

import pytest
import torch

from instyle.apps.cli import main
from instyle.apps.experiment import ExperimentConfig, ExperimentError, run_in_vs_bn
from instyle.engine.image import load_image, save_image
from instyle.engine.training import TrainConfig

from .conftest import TinyEncoder

TINY_TRAIN = TrainConfig(
    width=0.125, num_residual=1, iterations=3, batch_size=2, image_size=32, style_size=32,
    content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1", "relu3_1"), content_weight=1.0,
    style_weight=20.0, tv_weight=10.0, dtype="fp32",
)  # fmt: skip
TINY = dict(
    train=TINY_TRAIN, eval_crops_per_image=2, batch_sizes=(2, 3), set_sizes=(1, 2), set_size_iterations=2,
    set_size_norms=("instance", "batch"), speed_size=32, optimize_iterations=2, speed_repeats=1,
    figure_size=48, device="cpu",
)  # fmt: skip


@pytest.fixture
def style(tmp_path):
    path = tmp_path / "style.png"
    save_image(torch.rand(3, 40, 36, generator=torch.Generator().manual_seed(0)) ** 2, path)
    return path


def _numbers(tree, path=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _numbers(value, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_tiny_run_writes_a_complete_report(tmp_path, style):
    out = tmp_path / "report"
    messages = []
    config = ExperimentConfig(style=str(style), output=str(out), command="test", **TINY)
    report = run_in_vs_bn(config, extractor=TinyEncoder(), on_progress=messages.append)

    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "figure.png"}
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert load_image(out / "figure.png").shape[1] > 100
    assert any("batch-norm generator" in m for m in messages)

    numbers = dict(_numbers(report))
    assert len(numbers) > 100
    bad = {path: value for path, value in numbers.items() if not math.isfinite(value)}
    assert not bad

    assert report["data"]["eval_images"] == ["chelsea", "motorcycle"] and report["data"]["eval_crops"] == 4
    assert "chelsea" not in report["data"]["train_photos"]
    for norm in ("instance", "batch"):
        assert report["training"][norm]["steps"] == 3
        assert set(report["eval_loss"][norm]) == {"content", "style", "tv", "total"}
        assert set(report["contrast"][norm]) == {"0.25", "0.5", "1.0", "2.0"}
        assert report["contrast"][norm]["1.0"] == 0
        assert set(report["batch_dependence"][norm]["train"]) == {"2", "3"}
        assert set(report["set_size"][norm]) == {"1", "2"}
    # By construction: IN ignores the batch; BN in training mode does not.
    assert report["batch_dependence"]["instance"]["train"]["3"]["max"] < 1e-5
    assert report["batch_dependence"]["batch"]["train"]["3"]["mean"] > 1e-5
    speed = report["speed"]
    assert speed["optimize"]["extrapolated"] and speed["optimize"]["function_evaluations"] >= 2
    assert len(speed["generator_seconds_per_image"]) == 3
    assert [c["claim"][0] for c in report["claims"]] == list("12345")
    assert all(c["holds"] in (True, False) and c["evidence"] for c in report["claims"][:3] + report["claims"][4:])
    assert report["claims"][3]["holds"] is None  # 16 is not among the tiny sizes

    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# ") and "Command: `test`" in markdown and "extrapolated" in markdown
    for heading in ("## Verdicts", "## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "figure.png"):
        assert heading in markdown


def test_eval_dir_replaces_the_held_back_photos(tmp_path, style):
    folder = tmp_path / "eval"
    folder.mkdir()
    g = torch.Generator().manual_seed(1)
    for name in ("a", "b"):
        save_image(torch.rand(3, 50, 60, generator=g), folder / f"{name}.png")
    tiny = {**TINY, "set_sizes": (1,), "set_size_norms": ("instance",)}
    config = ExperimentConfig(style=str(style), eval_dir=str(folder), output=str(tmp_path / "out"), **tiny)
    report = run_in_vs_bn(config, extractor=TinyEncoder())
    assert report["data"]["eval_images"] == ["a", "b"] and report["data"]["eval_crops"] == 4
    assert "chelsea" in report["data"]["train_photos"] and len(report["data"]["train_photos"]) == 8
    assert set(report["set_size"]) == {"iterations", "sizes", "instance"}


def test_bad_inputs_name_the_option(tmp_path, style):
    with pytest.raises(ExperimentError, match="^style"):
        run_in_vs_bn(ExperimentConfig(style=str(tmp_path / "missing.jpg"), output=str(tmp_path / "o"), **TINY))
    with pytest.raises(ExperimentError, match="^eval_dir"):
        run_in_vs_bn(ExperimentConfig(style=str(style), eval_dir=str(tmp_path / "nothing"), output=str(tmp_path / "o"), **TINY))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExperimentError, match="^output"):
        run_in_vs_bn(ExperimentConfig(style=str(style), output=str(blocker), **TINY))


def test_cli_reports_a_missing_style(tmp_path, capsys):
    assert main(["experiment", "in-vs-bn", "--quick", "--style", str(tmp_path / "none.jpg"), "-o", str(tmp_path)]) == 2
    assert "none.jpg" in capsys.readouterr().err


def test_quick_preset_keeps_the_requested_loss_weights():
    config = ExperimentConfig.quick_preset(style="s.jpg", seed=3, device="cpu", command="c")
    train = config.train
    assert config.quick and train.image_size <= 96 and train.width == 0.25 and train.iterations == 200
    assert (train.loss.content_weight, train.loss.style_weight, train.loss.tv_weight) == (1.0, 20.0, 10.0)
    assert train.loss.content_layers == ("relu4_2",) and train.loss.vgg_weights == "default" and config.set_size_norms == ("instance",)
    assert (config.style, config.seed, config.device, config.command) == ("s.jpg", 3, "cpu", "c")
    full = ExperimentConfig()
    assert full.train.image_size == 256 and full.train.iterations == 2000 and full.train.loss.style_weight == 20.0


def test_recorded_paths_are_relative_to_the_working_directory(tmp_path):
    from instyle.apps.experiment.report import portable_command, portable_path

    repo = tmp_path / "repo"
    inside, beside, far = repo / "docs" / "out", tmp_path / "shared" / "a b.jpg", "/elsewhere/deep/x.jpg"
    assert portable_path(str(inside), str(repo)) == "docs/out"
    assert portable_path(str(beside), str(repo)) == "../shared/a b.jpg"
    assert portable_path("relative/x.jpg", str(repo)) == "relative/x.jpg"
    assert portable_path(far, str(repo)) == far
    command = f"instyle experiment in-vs-bn --style '{beside}' -o {inside}"
    assert portable_command(command, str(repo)) == "instyle experiment in-vs-bn --style '../shared/a b.jpg' -o docs/out"
