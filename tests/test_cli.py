"""The command line, run in-process through main(argv) and once as a real subprocess."""

import argparse
import os
import subprocess
import sys

import pytest

import instyle
from instyle.apps.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"instyle {instyle.__version__}"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "demo" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: instyle" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "optimize", "texture", "stylize", "serve", "experiment in-vs-bn"])
def test_every_flag_says_what_it_does(command):
    """No flag is listed with a default alone: each has a help text of its own."""
    from instyle.apps.cli import build_parser

    parser = build_parser()
    for name in command.split():  # down through the sub-commands
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    bare = [a.option_strings[-1] for a in parser._actions if a.option_strings and not (a.help or "").split("(default:")[0].strip()]
    assert not bare, f"instyle {command}: flags without a help text: {bare}"


def test_models_lists_the_bundled_styles_with_their_loss_network(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert {"cezanne", "composition_vii", "starry_night", "udnie"} <= set(rows)
    assert lines[-1].startswith("any painting (AdaIN): ")  # the decoder, bundled or how to give one
    assert all("imagenet-vgg19" in rows[name] for name in ("cezanne", "composition_vii", "starry_night", "udnie"))
    # a fine-tuned file (train --init-from) counts the steps of the runs it went on from apart
    from instyle.apps.cli.models import _steps

    assert _steps({"iterations": 600, "init_from": {"iterations": 1200, "init_from": {"iterations": 1000}}}) == "600+2200"
    assert _steps({"iterations": 2000}) == "2000" and _steps({}) == "?"
    assert rows["udnie"][3] == "600+2000" and any(line.startswith("N+M iterations") for line in lines)


def run_cli(*args, cwd=None, env=None, timeout=120) -> subprocess.CompletedProcess:
    """``python -m instyle ARGS`` as a user runs it (this interpreter, the inherited PYTHONPATH),
    with ``env`` added to the environment; a hang is a failure after ``timeout`` seconds."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "instyle", *map(str, args)], cwd=cwd, env=environment,
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout,
    )  # fmt: skip


def test_python_dash_m_runs_the_cli():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("instyle ")


@pytest.mark.parametrize(
    "flag, value, message",
    [("--size", "0", "argument --size: must be in [16, 4096], got 0"),
     ("--size", "-5", "argument --size: must be in [16, 4096], got -5"),
     ("--device", "tpu", "instyle demo: error: --device tpu: expected auto")],
)  # fmt: skip
def test_demo_refuses_bad_options_before_making_its_folder(tmp_path, flag, value, message):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, flag, value, "--no-bench")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_demo_help_shows_the_size_bounds(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "16..4096" in " ".join(capsys.readouterr().out.split())


def test_demo_prints_the_comparison_table_and_writes_csv(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1e19 * randn fp32" in out and "speed-up" in out
    assert (tmp_path / "norm_comparison.csv").read_text().startswith("kind,case")


def test_flags_given_are_the_users_and_errors_name_flags(hed_style_model):
    """A style weight given on the command line is never rescaled and a loss network given is used;
    left out, the command's defaults settle as the library says. Library errors name fields; the
    command line shows them as flags."""
    from instyle.apps.cli import build_parser
    from instyle.apps.cli.common import config_from_args, error_text
    from instyle.engine.config import ConfigError
    from instyle.engine.optimize import OptimizeConfig
    from instyle.engine.targets import adopt_target_weights, resolve_style
    from instyle.engine.training import TrainConfig

    parser = build_parser()
    common = ["optimize", "c.png", "s.png", "-o", "o.png"]
    assert config_from_args(OptimizeConfig, parser.parse_args(common)) == OptimizeConfig()
    cezanne, starry = resolve_style(str(hed_style_model)), resolve_style("starry_night")  # HED and VGG-19 targets

    def settled(argv, source):
        loss = adopt_target_weights(config_from_args(OptimizeConfig, parser.parse_args(common + argv)), source).loss
        return loss.vgg_weights, loss.style_weight

    assert settled([], starry) == ("imagenet-vgg19", 12.5)
    assert settled(["--vgg-weights", "imagenet-vgg19"], cezanne) == ("imagenet-vgg19", 12.5)
    assert settled(["--vgg-weights", "imagenet-vgg19", "--style-weight", "100"], cezanne) == ("imagenet-vgg19", 100.0)
    assert settled(["--style-weight", "100"], starry) == ("imagenet-vgg19", 100.0)
    assert settled(["--vgg-weights", "hed-vgg16"], starry) == ("hed-vgg16", 100.0)

    assert error_text(ConfigError("loss.style_weight", "must be at least 0, got -1")) == "--style-weight must be at least 0, got -1"
    assert error_text(ConfigError("patience", "needs eval_content"), config=TrainConfig) == "--patience needs --eval-content"
    assert error_text(ValueError("device 'tpu': expected auto")) == "--device tpu: expected auto"
    assert error_text(ValueError("size must be positive"), names={"size"}) == "--size must be positive"
    # advice that names fields reads as flags; file names with underscores stay as they are
    advice = ValueError("out/style_layers_a.png: pass style_layers relu1_1, or vgg_weights hed-vgg16")
    assert error_text(ValueError("eval_dir x: not a folder"), names={"eval_dir": "--eval"}) == "--eval x: not a folder"
    assert error_text(ValueError("style: no such file"), names={"style": "--style"}) == "--style: no such file"
    assert error_text(advice, config=TrainConfig) == "out/style_layers_a.png: pass --style-layers relu1_1, or --vgg-weights hed-vgg16"
    assert error_text(ValueError("style 'x': no such file")) == "style 'x': no such file"


def test_config_errors_exit_1_naming_the_flag(tmp_path, capsys):
    main_args = ["optimize", "c.png", "s.png", "-o", str(tmp_path / "o.png"), "--size", "8"]
    assert main(main_args) == 1
    assert "instyle optimize: error: --size must be at least 16, got 8" in capsys.readouterr().err
    assert main(["texture", "--style", "s.png", "-o", str(tmp_path / "t.png"), "--style-weight", "nan"]) == 1
    assert "--style-weight must be a non-negative number, got nan" in capsys.readouterr().err


def test_errors_name_the_flags_of_the_config_in_use_every_time():
    """error_text knows the fields of the command's config (AdaIN's too), only those, and turns
    every field a message names into its flag (a flag not named after its field included)."""
    from instyle.apps.cli.common import error_text
    from instyle.engine.config import ConfigError
    from instyle.engine.training import TrainConfig
    from instyle.engine.training.adain import AdaINConfig

    bounds = ConfigError("max_side", "must be at least image_size (32), got 16")
    assert error_text(bounds, config=AdaINConfig) == "--max-side must be at least --image-size (32), got 16"
    # a field another command has is no flag of this one
    assert error_text(ValueError("pass num_content 3"), config=AdaINConfig) == "pass num_content 3"
    assert error_text(ValueError("pass num_content 3"), config=TrainConfig) == "pass --num-content 3"
    served = {"max_upload_bytes": "--max-upload-mb", "total_upload_bytes": "--total-uploads-mb"}
    both = ValueError("max_upload_bytes 9 is over total_upload_bytes 5: raise total_upload_bytes")
    assert error_text(both, names=served) == "--max-upload-mb 9 is over --total-uploads-mb 5: raise --total-uploads-mb"
    assert error_text(ConfigError("total_upload_bytes", "must be positive"), names=served) == "--total-uploads-mb must be positive"


def test_a_style_weight_given_to_a_config_without_a_loss_section_is_taken_as_given():
    from instyle.apps.cli import build_parser
    from instyle.apps.cli.common import config_from_args
    from instyle.engine.training.adain import AdaINConfig

    argv = ["train-adain", "--content", "c", "--styles", "s", "-o", "d.safetensors", "--style-weight", "3"]
    config = config_from_args(AdaINConfig, build_parser().parse_args(argv), check=lambda config: None)
    assert config.style_weight == 3.0


def test_a_model_files_stored_settings_are_not_called_flags(tmp_path):
    """A bad style_size stored in a model file given as --style is the file's, not --style-size."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    source = os.path.join(os.path.dirname(instyle.__file__), "styles", "starry_night.safetensors")
    with safe_open(source, framework="pt") as f:
        header, tensors = f.metadata(), {name: f.get_tensor(name) for name in f.keys()}
    metadata = json.loads(header["instyle"])
    metadata["style_targets"]["style_size"] = 0
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad, metadata={**header, "instyle": json.dumps(metadata)})
    result = run_cli("train", "--style", bad, "-o", tmp_path / "m.safetensors", "--iterations", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "no valid style_size (0)" in result.stderr and "--style-size" not in result.stderr
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "m.train").exists()
