"""instyle train: exact resume, signals, NaN handling, model files, and DDP on CPU.

In-process tests use the tiny stand-in encoder; the subprocess tests (real signals,
torchrun) use the real VGG at a tiny size.
"""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from instyle.engine.image import save_image
from instyle.engine.modelfile import ModelFileError, load_generator, read_model_file
from instyle.engine.inference.stylize import load_model
from instyle.engine.config import ConfigError
from instyle.engine.training import TrainConfig, TrainingError, TrainingInterrupted, load_checkpoint, train

from .conftest import TinyEncoder, fill_disk

LAYERS = dict(content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1", "relu3_1"))


@pytest.fixture
def photos(photos, tmp_path):
    """conftest's photos, plus the style image the configs below name."""
    save_image(torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(1)) ** 2, tmp_path / "style.png")
    return photos


def _config(tmp_path, photos, name="model", **overrides):
    base = dict(
        style=str(tmp_path / "style.png"), content=str(photos), output=str(tmp_path / f"{name}.safetensors"),
        width=0.125, num_residual=1, iterations=6, batch_size=2, image_size=32, style_size=32,
        content_weight=1.0, style_weight=10.0, tv_weight=1.0, checkpoint_every=2, sample_every=0, **LAYERS,
    )  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def _interrupt_at(at_step):
    """An on_step that sends this process SIGINT after step ``at_step``, as Ctrl-C would."""

    def on_step(step, losses):
        if step == at_step:
            os.kill(os.getpid(), signal.SIGINT)

    return on_step


def _heldout_folder(tmp_path):
    folder = tmp_path / "heldout"
    folder.mkdir()
    save_image(torch.rand(3, 50, 60, generator=torch.Generator().manual_seed(5)), folder / "h.png")
    return folder


def test_resume_after_a_signal_equals_training_straight(tmp_path, photos):
    straight = train(_config(tmp_path, photos, "straight"), extractor=TinyEncoder(), handle_signals=True)

    config = _config(tmp_path, photos, "resumed")
    with pytest.raises(TrainingInterrupted) as stop:
        train(config, on_step=_interrupt_at(3), extractor=TinyEncoder())
    assert stop.value.step == 3 and stop.value.signum == signal.SIGINT
    assert load_checkpoint(stop.value.checkpoint)["step"] == 3
    log_dir = stop.value.checkpoint.parent  # the log so far, beside the checkpoint
    assert len(list(csv.DictReader(open(log_dir / "log.csv")))) == 3 and (log_dir / "loss_curve.png").exists()
    with pytest.raises(TrainingError, match=r"unfinished run \(step 3 of 6\); continue it with resume"):
        train(config, extractor=TinyEncoder())  # forgetting resume loses nothing
    assert load_checkpoint(stop.value.checkpoint)["step"] == 3
    other = TrainConfig(**{**config.__dict__, "resume": True, "width": 0.25, "lr": 0.5})
    with pytest.raises(TrainingError, match=r"made with width 0.125 \(now 0.25\), lr 0.001 \(now 0.5\)"):
        train(other, extractor=TinyEncoder())
    resumed = train(TrainConfig(**{**config.__dict__, "resume": True}), extractor=TinyEncoder())
    assert resumed.step == 6
    train(config, extractor=TinyEncoder())  # a finished run's checkpoint may be replaced by a new run
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # bitwise on CPU
    assert [h["total"] for h in resumed.history] == [h["total"] for h in straight.history]


def test_losses_fall_and_model_file_carries_its_metadata(tmp_path, photos):
    config = _config(tmp_path, photos, iterations=30, lr=1e-2)
    result = train(config, extractor=TinyEncoder())
    first, last = result.history[0]["total"], result.history[-1]["total"]
    assert last < first
    model_config, metadata, tensors = read_model_file(config.output)
    assert model_config["arch"] == "transformer" and model_config["norm"] == "instance"
    assert model_config["width"] == 0.125 and model_config["num_residual"] == 1
    assert metadata["style_name"] == "style" and len(metadata["style_sha256"]) == 64
    assert metadata["training"]["iterations"] == 30 and metadata["final_losses"]["total"] > 0
    assert metadata["instyle_version"]
    from instyle.engine.device import DeviceConfig

    assert metadata["precision"] == DeviceConfig.resolve("auto", "auto", "train").precision  # the resolved one
    log = list(csv.DictReader(open(result.log_dir / "log.csv")))
    assert len(log) == 30 and {"total", "content", "style", "tv", "images_per_s"} <= set(log[0])
    assert (result.log_dir / "loss_curve.png").stat().st_size > 1000
    model = load_model(config.output)
    image = torch.rand(3, 37, 41)
    out = model.stylize(image)
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1


def test_a_mean_std_style_term_trains_from_the_image_and_is_refused_for_stored_targets(tmp_path, photos):
    """``mean_std_weight`` (issue #19, part 5: the score compares means and stds): a run with it
    trains and records it; a style given by stored Gram targets alone cannot give the painting's
    means and stds, and the run says so by name before any step."""
    from instyle.engine.targets import StyleTargetsError

    result = train(_config(tmp_path, photos, "moments", iterations=2, mean_std_weight=20.0))
    assert read_model_file(tmp_path / "moments.safetensors")[1]["training"]["loss"]["mean_std_weight"] == 20.0
    plain = train(_config(tmp_path, photos, "plain", iterations=2))
    assert result.losses["style"] != plain.losses["style"]
    with pytest.raises(StyleTargetsError, match="mean_std_weight 20"):
        train(_config(tmp_path, photos, "stored", style=str(tmp_path / "moments.safetensors"), mean_std_weight=20.0))
    assert not (tmp_path / "stored.safetensors").exists()


def test_a_run_fine_tunes_from_a_model_file_with_other_settings(tmp_path, photos):
    """``init_from`` (issue #19, part 5: the bundled styles retrained at twice the scale start from
    one such run): a new run with its own settings starts from another run's generator, records
    what it started from, keeps that record across a resume, and refuses another network by name
    before anything is written."""
    import shutil

    first = train(_config(tmp_path, photos, "first", iterations=4), extractor=TinyEncoder())
    start = tmp_path / "start.safetensors"
    shutil.copyfile(tmp_path / "first.safetensors", start)
    config = _config(tmp_path, photos, "tuned", iterations=2, lr=1e-12, style_weight=40.0, init_from=str(start))
    tuned = train(config, extractor=TinyEncoder())
    for (name, a), b in zip(first.model.state_dict().items(), tuned.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name  # two steps of lr 1e-12 change nothing to see
    fresh = train(_config(tmp_path, photos, "fresh", iterations=2, lr=1e-12), extractor=TinyEncoder())
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(fresh.model.parameters(), tuned.model.parameters()))
    record = read_model_file(tmp_path / "tuned.safetensors")[1]["init_from"]
    assert record["file"] == "start.safetensors" and record["iterations"] == 4 and len(record["sha256"]) == 64
    assert record["training"]["loss"]["style_weight"] == 10.0  # the start's own settings, beside the run's 40
    shutil.copyfile(tmp_path / "fresh.safetensors", start)  # replaced before the resumed run ends
    train(TrainConfig(**{**config.__dict__, "resume": True, "iterations": 3}), extractor=TinyEncoder())
    assert read_model_file(tmp_path / "tuned.safetensors")[1]["init_from"] == record
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ModelFileError, match=r"init_from .*start.safetensors: its network is not this run's"):
        train(_config(tmp_path, photos, "wide", width=0.25, init_from=str(start)), extractor=TinyEncoder())
    with pytest.raises(ConfigError, match="init_from .*single-style run"):
        train(_config(tmp_path, photos, "two", style=(str(tmp_path / "style.png"), "udnie"), init_from=str(start)))
    with pytest.raises(ConfigError, match="init_from .*missing.safetensors: no such model file"):
        train(_config(tmp_path, photos, "none", init_from=str(tmp_path / "missing.safetensors")))
    assert sorted(tmp_path.rglob("*")) == before


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, photos, monkeypatch):
    from instyle.engine import models

    built = []
    build = models.build_generator
    monkeypatch.setattr(models, "build_generator", lambda *a, **k: built.append(build(*a, **k)) or built[-1])

    def poison_after_2(step, losses):
        if step == 2:  # the weights go bad before step 2's checkpoint is written
            with torch.no_grad():
                next(iter(built[0].parameters())).fill_(float("nan"))

    config = _config(tmp_path, photos, iterations=8, checkpoint_every=1)
    with pytest.raises(TrainingError, match=r"(loss became nan|NaN or inf).*checkpoint"):
        train(config, on_step=poison_after_2, extractor=TinyEncoder())
    state = load_checkpoint(tmp_path / "model.train" / "checkpoint.pt")
    assert state["step"] == 1  # the step-2 save was refused, step 1's kept
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (tmp_path / "model.safetensors").exists()


def test_bad_model_files_give_one_clear_error(tmp_path, photos):
    config = _config(tmp_path, photos, iterations=2)
    train(config, extractor=TinyEncoder())
    good = tmp_path / "model.safetensors"
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="truncated.safetensors"):
        load_generator(truncated)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty.safetensors is empty \(0 bytes\)"):
        load_generator(empty)
    pickled = tmp_path / "model.pt"
    torch.save({"weight": torch.ones(1)}, pickled)
    with pytest.raises(ModelFileError, match="model.pt is a PyTorch pickle"):
        load_generator(pickled)
    from safetensors.torch import load_file, save_file

    tensors = load_file(good)
    with open(good, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        import json

        header = json.loads(f.read(header_len))["__metadata__"]
    name = next(iter(tensors))
    bad = dict(tensors)
    bad[name] = torch.full_like(bad[name], float("nan"))
    save_file(bad, tmp_path / "nan.safetensors", metadata=header)
    with pytest.raises(ModelFileError, match=f"weight {name} has NaN"):
        load_generator(tmp_path / "nan.safetensors")
    missing = dict(tensors)
    missing.pop(name)
    save_file(missing, tmp_path / "missing.safetensors", metadata=header)
    with pytest.raises(ModelFileError, match="missing keys"):
        load_generator(tmp_path / "missing.safetensors")
    save_file(tensors, tmp_path / "future.safetensors", metadata={**header, "format_version": "99"})
    with pytest.raises(ModelFileError, match="unknown format version 99"):
        load_generator(tmp_path / "future.safetensors")


@pytest.mark.parametrize(
    "flag, value, message",
    [("--iterations", "0", "--iterations must be at least 1, got 0"),
     ("--batch-size", "-1", "--batch-size must be at least 1, got -1"),
     ("--checkpoint-every", "0", "--checkpoint-every must be at least 1"),
     ("--lr", "nan", "--lr must be a positive number, got nan"),
     ("--style-weight", "-5", "--style-weight must be a non-negative number"),
     ("--width", "0", "--width must be a number at least 0.03125"), ("--num-residual", "65", "--num-residual must be in [0, 64], got 65")],
)  # fmt: skip
def test_cli_refuses_values_no_training_can_use(tmp_path, photos, capsys, flag, value, message):
    from instyle.apps.cli import main

    output = tmp_path / "model.safetensors"
    assert main(_cli_train_args(tmp_path, photos, output, flag, value)) == 1
    assert message in capsys.readouterr().err
    assert not output.exists() and not (tmp_path / "model.train").exists()  # refused before any work


def test_the_model_never_replaces_the_style_image_or_lands_under_an_image_name(tmp_path, photos, capsys):
    from instyle.apps.cli import main

    style = tmp_path / "style.png"
    before = style.read_bytes()
    assert main(_cli_train_args(tmp_path, photos, style)) == 1
    assert "the model is a safetensors file, not an image" in capsys.readouterr().err
    renamed = tmp_path / "painting.model"  # a style image without an image suffix, named outright
    renamed.write_bytes(before)
    args = _cli_train_args(tmp_path, photos, renamed)
    args[args.index("--style") + 1] = str(renamed)
    assert main(args) == 1
    assert "is the style image" in capsys.readouterr().err
    assert style.read_bytes() == before and renamed.read_bytes() == before


def test_disk_full_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, photos, small_disk):
    config = _config(tmp_path, photos, output=str(small_disk / "model.safetensors"))
    checkpoint = small_disk / "model.train" / "checkpoint.pt"

    def fill_after_first_checkpoint(step, losses):
        if step == 3:
            fill_disk(small_disk)

    with pytest.raises(OSError, match=r"cannot write .*checkpoint.pt: No space left on device; the previous file is kept"):
        train(config, on_step=fill_after_first_checkpoint, extractor=TinyEncoder())
    assert load_checkpoint(checkpoint)["step"] == 2
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["checkpoint.pt", "log.csv"]  # no temporary file
    assert not (small_disk / "model.safetensors").exists()


SAVE_FOREVER = """
import sys, torch
from pathlib import Path
from instyle.engine.training import atomic_torch_save
step = 0
while True:
    atomic_torch_save({"step": step, "weight": torch.full((1 << 20,), float(step))}, Path(sys.argv[1]))
    if step == 0:
        print("saved", flush=True)
    step += 1
"""


def test_sigkill_during_saves_leaves_a_whole_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    for delay in (0.0, 0.05, 0.13, 0.31):
        child = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(checkpoint)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "saved\n"
        time.sleep(delay)
        child.kill()  # SIGKILL: no handler, no cleanup, wherever the save was
        child.wait()
        child.stdout.close()
        state = load_checkpoint(checkpoint)
        assert torch.equal(state["weight"], torch.full((1 << 20,), float(state["step"])))


def _cli_train_args(tmp_path, photos, output, *extra):
    return [
        "train", "--style", str(tmp_path / "style.png"), "--content", str(photos), "-o", str(output),
        "--width", "0.125", "--num-residual", "1", "--batch-size", "2", "--image-size", "32",
        "--style-size", "32", "--checkpoint-every", "1", "--sample-every", "0", "--dtype", "fp32", *extra,
    ]  # fmt: skip


def terminated_after_a_checkpoint(argv: list[str], checkpoint, env: dict) -> int:
    """``instyle ARGV`` in a real subprocess, sent SIGTERM once ``checkpoint`` exists: it must exit
    143 saying how to resume, without a traceback; the step its checkpoint holds (at least 1)."""
    proc = subprocess.Popen([sys.executable, "-m", "instyle", *argv], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in time"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "resume with --resume" in err and "Traceback" not in err
    step = load_checkpoint(checkpoint)["step"]
    assert step >= 1
    return step


@pytest.mark.network
def test_sigterm_in_a_real_subprocess_checkpoints_and_exits_143(tmp_path, photos, imagenet_vgg19_weights):
    output = tmp_path / "m.safetensors"
    checkpoint = tmp_path / "m.train" / "checkpoint.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    step = terminated_after_a_checkpoint(_cli_train_args(tmp_path, photos, output, "--iterations", "100000"), checkpoint, env)
    resumed = subprocess.run(
        [sys.executable, "-m", "instyle", *_cli_train_args(tmp_path, photos, output, "--iterations", str(step + 2), "--resume")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(checkpoint)["step"] == step + 2 and output.exists()
    from instyle.engine.weights import SOURCES

    _, metadata, _ = read_model_file(output)  # the default loss network, recorded by name and digest
    loss = metadata["training"]["loss"]
    assert loss["vgg_weights"] == "imagenet-vgg19" and loss["style_weight"] == 5.0
    assert metadata["vgg_weights_sha256"] == SOURCES["imagenet-vgg19"].sha256


@pytest.mark.network
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, photos, imagenet_vgg19_weights):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--iterations", "4", "--batch-size", "4"]
    single = tmp_path / "single.safetensors"
    run = subprocess.run(
        [sys.executable, "-m", "instyle", *_cli_train_args(tmp_path, photos, single, *common)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    double = tmp_path / "ddp.safetensors"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "instyle",
         *_cli_train_args(tmp_path, photos, double, *common)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    one = list(csv.DictReader(open(tmp_path / "single.train" / "log.csv")))
    two = list(csv.DictReader(open(tmp_path / "ddp.train" / "log.csv")))
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert float(b["total"]) == pytest.approx(float(a["total"]), rel=1e-4)


def test_unreadable_photos_are_skipped_by_name_and_none_readable_is_an_error(tmp_path, caplog):
    from instyle.engine.training import load_content_set

    save_image(torch.rand(3, 40, 40), tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"<html>not found</html>")
    with caplog.at_level("WARNING", logger="instyle"):
        assert len(load_content_set(str(tmp_path), 32)) == 1
    assert "skipping" in caplog.text and "broken.jpg" in caplog.text
    (tmp_path / "good.png").unlink()
    with pytest.raises(TrainingError, match="none of its 1 images could be read"):
        load_content_set(str(tmp_path), 32)


def test_content_photos_may_be_a_list_of_files_read_as_the_folder_would_be(tmp_path, caplog):
    """The files given, in their order; an unreadable one skipped by name (a folder of photos) or,
    for a training set chosen file by file (the AdaIN decoder's), an error naming it."""
    from instyle.engine.training.data import load_content_set, read_images

    for name, size in (("a.png", 40), ("b.png", 60), ("c.png", 80)):
        save_image(torch.rand(3, size, size), tmp_path / name)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"<html>not found</html>")
    files = [tmp_path / "c.png", broken, tmp_path / "a.png"]
    with caplog.at_level("WARNING", logger="instyle"):
        given = load_content_set(files, 32, content_size=1000)
    assert [tuple(t.shape) for t in given] == [(3, 80, 80), (3, 40, 40)] and "broken.jpg" in caplog.text
    whole = load_content_set(str(tmp_path), 32, content_size=1000)
    assert torch.equal(given[0], next(t for t in whole if t.shape[-1] == 80))
    assert [p.dtype for p in read_images(files[::2])] == [torch.uint8, torch.uint8]
    with pytest.raises(TrainingError, match=f"cannot train on {broken}"):
        list(read_images(files, skip_unreadable=False))


def test_content_size_sets_the_scale_photos_are_cropped_from(tmp_path):
    from instyle.engine.training import load_content_set

    save_image(torch.rand(3, 400, 600), tmp_path / "wide.png")
    save_image(torch.rand(3, 100, 150), tmp_path / "small.png")
    default = [tuple(t.shape[-2:]) for t in load_content_set(str(tmp_path), 64)]
    assert default == [(96, 144), (96, 144)], "default: short side 1.5 x the crop"
    native = {tuple(t.shape[-2:]) for t in load_content_set(str(tmp_path), 64, content_size=1000)}
    assert native == {(400, 600), (100, 150)}, "content_size above a photo's size keeps the photo's own"
    assert {tuple(t.shape[-2:]) for t in load_content_set(str(tmp_path), 128, content_size=300)} == {(300, 450), (128, 192)}


def test_heldout_loss_is_logged_and_survives_a_resume(tmp_path, photos):
    heldout_dir = _heldout_folder(tmp_path)
    common = dict(eval_content=str(heldout_dir), eval_every=2, iterations=6)
    straight = train(_config(tmp_path, photos, "straight", **common), extractor=TinyEncoder())
    rows = list(csv.DictReader(open(straight.log_dir / "heldout.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert all(float(r["total"]) > 0 and float(r["content"]) >= 0 for r in rows)
    seconds = [float(r["train_seconds"]) for r in rows]
    assert 0 < seconds[0] < seconds[1] < seconds[2]
    _, metadata, _ = read_model_file(straight.output)
    assert metadata["heldout_losses"]["step"] == 6

    config = _config(tmp_path, photos, "resumed", **common)
    with pytest.raises(TrainingInterrupted):
        train(config, on_step=_interrupt_at(3), extractor=TinyEncoder())
    resumed = train(TrainConfig(**{**config.__dict__, "resume": True}), extractor=TinyEncoder())
    again = list(csv.DictReader(open(resumed.log_dir / "heldout.csv")))
    assert [int(r["step"]) for r in again] == [2, 4, 6]
    for a, b in zip(rows, again):  # the same weights at the same steps: the same held-out loss
        assert float(a["total"]) == pytest.approx(float(b["total"]), rel=1e-6)
    with pytest.raises(ConfigError, match="eval_every must be at least 1"):
        train(_config(tmp_path, photos, "bad", eval_content=str(heldout_dir), eval_every=0), extractor=TinyEncoder())


def test_patience_stops_early_saves_the_best_evaluation_and_resumes_exactly(tmp_path, photos):
    heldout_dir = _heldout_folder(tmp_path)
    # a learning rate this high makes the held-out loss stop improving well before step 40
    common = dict(eval_content=str(heldout_dir), eval_every=2, patience=3, iterations=40, lr=0.2, checkpoint_every=4)
    straight = train(_config(tmp_path, photos, "straight", **common), extractor=TinyEncoder())
    totals = {int(r["step"]): float(r["total"]) for r in csv.DictReader(open(straight.log_dir / "heldout.csv"))}
    best_step = min(totals, key=lambda k: (totals[k], k))
    assert straight.stopped_early and straight.best_step == best_step < straight.step < 40
    assert straight.step == best_step + 3 * 2, "three evaluations without improvement, then stop"
    _, metadata, tensors = read_model_file(straight.output)
    assert metadata["best_step"] == best_step and metadata["stopped_early"] and metadata["iterations"] == straight.step
    assert metadata["heldout_losses"]["step"] == best_step
    best = load_checkpoint(straight.log_dir / "checkpoint.pt")["best"]
    assert best["step"] == best_step
    for name, weight in best["model"].items():  # the file holds the best evaluation's weights
        assert torch.equal(tensors[name], weight), name

    config = _config(tmp_path, photos, "resumed", **common)
    with pytest.raises(TrainingInterrupted):
        train(config, on_step=_interrupt_at(5), extractor=TinyEncoder())
    resumed = train(TrainConfig(**{**config.__dict__, "resume": True}), extractor=TinyEncoder())
    assert (resumed.step, resumed.best_step, resumed.stopped_early) == (straight.step, best_step, True)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    again = train(TrainConfig(**{**config.__dict__, "resume": True}), extractor=TinyEncoder())
    assert again.step == straight.step, "a resume after an early stop trains no further"


def test_patience_needs_heldout_photos(tmp_path, photos):
    with pytest.raises(ConfigError, match="patience needs eval_content"):
        train(_config(tmp_path, photos, patience=2), extractor=TinyEncoder())


def test_compiled_training_follows_eager_and_saves_a_plain_model(tmp_path, photos):
    """--compile: the same first loss, losses that stay close, and a model file without compile wrappers."""
    eager = train(_config(tmp_path, photos, "eager", iterations=3, checkpoint_every=100), extractor=TinyEncoder())
    config = _config(tmp_path, photos, "compiled", iterations=3, checkpoint_every=100, compile=True)
    compiled = train(config, extractor=TinyEncoder())
    first_eager, first_compiled = eager.history[0]["total"], compiled.history[0]["total"]
    assert abs(first_compiled - first_eager) <= 1e-4 * abs(first_eager)
    for a, b in zip(eager.history, compiled.history):
        assert abs(a["total"] - b["total"]) <= 0.05 * abs(a["total"])
    _, metadata, tensors = read_model_file(config.output)
    assert metadata["training"]["compile"] is True
    assert not any("_orig_mod" in key for key in tensors)
    assert load_model(config.output).stylize(torch.rand(3, 20, 24)).shape == (3, 20, 24)


def test_cuda_graph_flag_on_by_default_and_off_from_the_cli():
    from instyle.apps.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--style", "x.jpg", "-o", "m.safetensors"]).cuda_graph is True
    assert parser.parse_args(["train", "--style", "x.jpg", "-o", "m.safetensors", "--no-cuda-graph"]).cuda_graph is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_training_follows_eager_steps(tmp_path, photos):
    """The same steps eagerly and replayed from a CUDA graph (from step 3 on) give the same loss curve."""
    curves = []
    torch.backends.cudnn.benchmark = False
    for graph in (False, True):
        config = _config(tmp_path, photos, f"graph{graph}", iterations=10, device="cuda", dtype="fp32", cuda_graph=graph)
        curves.append([h["total"] for h in train(config, extractor=TinyEncoder(), handle_signals=False).history])
        assert torch.backends.cudnn.benchmark is False, "train() turns cuDNN autotuning on for its loop only"
    torch.testing.assert_close(curves[1], curves[0], rtol=1e-3, atol=0)


def test_crop_pool_and_training_scale_crops_are_fixed_for_a_seed():
    from instyle.engine.training import crop_pool, training_scale_crops

    photos = [torch.rand(3, 60, 90, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    pool = crop_pool(photos, 3, 20, seed=4)
    assert [tuple(c.shape) for c in pool] == [(3, 30, 30)] * 3, "square crops of 1.5 x the crop size"
    assert all(torch.equal(a, b) for a, b in zip(pool, crop_pool(photos, 3, 20, seed=4)))
    assert not torch.equal(pool[0], crop_pool(photos, 3, 20, seed=5)[0])
    crops = training_scale_crops(photos, 20, 5)
    assert crops.shape == (10, 3, 20, 20)  # centre and four corners of each photo, at a short side of 30


def test_forward_graphs_leave_cpu_forwards_alone():
    from instyle.engine.cuda_graphs import ForwardGraphs

    graphs, calls = ForwardGraphs(), []
    module = torch.nn.Conv2d(3, 3, 1)
    x = torch.rand(1, 3, 8, 8)
    for _ in range(3):  # a CUDA input would be captured on its second forward; a CPU one never is
        assert torch.equal(graphs(module, lambda t: calls.append(t) or module(t), x), module(x))
    assert len(calls) == 3 and not graphs.graphs


# ---------------------------------------------------------------------------- issue #17: checkpoints resumed


def _instyle(*argv, timeout=120):
    """``python -m instyle ARGV`` in a real subprocess (PYTHONPATH is inherited)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "instyle", *map(str, argv)], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished_checkpoint(tmp_path_factory):
    """The checkpoint of a finished two-step run (style and photos may move: a resume may change them)."""
    tmp_path = tmp_path_factory.mktemp("finished")
    photos = tmp_path / "photos"
    photos.mkdir()
    save_image(torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0)), photos / "p.png")
    save_image(torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(1)), tmp_path / "style.png")
    train(_config(tmp_path, photos, iterations=2, checkpoint_every=1), extractor=TinyEncoder())
    return load_checkpoint(tmp_path / "model.train" / "checkpoint.pt")


def _first_weight(saved):
    return next(k for k, v in saved["model"].items() if v.is_floating_point())


def _with(saved, **entries):
    return {**saved, **entries}


def _poisoned_optimizer(saved, value):
    optimizer = {"state": {k: dict(v) for k, v in saved["optimizer"]["state"].items()}, "param_groups": saved["optimizer"]["param_groups"]}
    optimizer["state"][0]["exp_avg"] = value(optimizer["state"][0]["exp_avg"])
    return _with(saved, optimizer=optimizer)


BAD_CHECKPOINTS = {
    "no model": (lambda s: {"config": "{}"}, "not a whole checkpoint: no entries 'model', 'optimizer', 'scheduler', 'step', 'rng'"),
    "a list": (lambda s: [1, 2], "holds a list, not a checkpoint"),
    "a wrong-shaped weight": (
        lambda s: _with(s, model={**s["model"], _first_weight(s): torch.zeros(3)}), r"entry 'model': .* has shape \(3,\), the model's is"
    ),
    "a missing weight": (lambda s: _with(s, model=dict(list(s["model"].items())[1:])), r"entry 'model': the model's weight \S+ is missing"),
    "NaN weights": (
        lambda s: _with(s, model={**s["model"], _first_weight(s): s["model"][_first_weight(s)] * float("nan")}),
        r"entry 'model': weight .* has NaN or inf values",
    ),
    "no rng": (lambda s: {k: v for k, v in s.items() if k != "rng"}, "no entry 'rng'"),
    "an rng of floats": (lambda s: _with(s, rng={"torch": torch.zeros(5)}), "entry 'rng': "),
    "a step of text": (lambda s: _with(s, step="abc"), "entry 'step': 'abc' is not a step number"),
    "a negative step": (lambda s: _with(s, step=-3), "entry 'step': -3 is not a step number"),
    "a config list": (lambda s: _with(s, config="[1]"), "entry 'config': .*not a JSON object"),
    "a config of bad JSON": (lambda s: _with(s, config="{"), "entry 'config': .*not JSON"),
    "a wrong-shaped optimizer state": (lambda s: _poisoned_optimizer(s, lambda t: torch.zeros(2)), r"entry 'optimizer': .*shape \(2,\)"),
    "an inf optimizer state": (lambda s: _poisoned_optimizer(s, lambda t: t + float("inf")), "entry 'optimizer': .*NaN or inf"),
    "a scheduler list": (lambda s: _with(s, scheduler=[]), "entry 'scheduler': "),
    "a history of text": (lambda s: _with(s, history="steps"), "entry 'history': "),
    "NaN best weights": (
        lambda s: _with(s, best={"step": 1, "total": 1.0, "model": {k: v * float("nan") for k, v in s["model"].items()}}),
        "entry 'best': .*NaN or inf",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_a_checkpoint_of_the_wrong_structure_is_refused_naming_the_file_and_entry(tmp_path, photos, finished_checkpoint, case):
    corrupt, message = BAD_CHECKPOINTS[case]
    checkpoint = tmp_path / "model.train" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    torch.save(corrupt(finished_checkpoint), checkpoint)
    before = checkpoint.read_bytes()
    config = _config(tmp_path, photos, iterations=4, resume=True)
    with pytest.raises(TrainingError, match=message) as refused:
        train(config, extractor=TinyEncoder())
    assert str(refused.value).startswith(f"resume: {checkpoint}") and "\n" not in str(refused.value)
    assert checkpoint.read_bytes() == before and sorted(checkpoint.parent.iterdir()) == [checkpoint]
    assert not (tmp_path / "model.safetensors").exists()


def test_the_checkpoint_of_a_finished_run_resumes(tmp_path, photos, finished_checkpoint):
    checkpoint = tmp_path / "model.train" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    torch.save(finished_checkpoint, checkpoint)
    result = train(_config(tmp_path, photos, iterations=3, resume=True), extractor=TinyEncoder())
    assert result.step == 3 and load_checkpoint(checkpoint)["step"] == 3


class _RunsCode:
    """Unpickling this would create the marker file: proof that code ran."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("case", ["no model", "a list", "empty", "a pickle that runs code"])
def test_cli_resume_refuses_a_bad_checkpoint_in_one_line(tmp_path, photos, case):
    checkpoint = tmp_path / "model.train" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    marker = tmp_path / "code_ran"
    content = {"no model": {"config": "{}"}, "a list": [1, 2], "a pickle that runs code": {"step": _RunsCode(marker)}}
    if case == "empty":
        checkpoint.write_bytes(b"")
    else:
        torch.save(content[case], checkpoint)
    run = _instyle(*_cli_train_args(tmp_path, photos, tmp_path / "model.safetensors", "--iterations", "4", "--resume"))
    assert run.returncode == 1 and "Traceback" not in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"instyle train: error: resume: {checkpoint}")
    expected = {
        "no model": "no entries 'model'", "a list": "holds a list", "empty": "is empty (0 bytes)",
        "a pickle that runs code": "refused: a pickle that would build objects or run code",
    }  # fmt: skip
    assert expected[case] in run.stderr
    assert "weights_only" not in run.stderr and "set to `False`" not in run.stderr
    assert not marker.exists() and not (tmp_path / "model.safetensors").exists()


def test_the_nan_guard_never_calls_another_runs_checkpoint_the_last_good_one(tmp_path, photos, monkeypatch, finished_checkpoint):
    """A new run may replace a finished run's checkpoint; until it writes its own, it has no last good one."""
    from instyle.engine import models

    checkpoint = tmp_path / "model.train" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    nan_weights = {k: v * float("nan") if v.is_floating_point() else v for k, v in finished_checkpoint["model"].items()}
    torch.save(_with(finished_checkpoint, model=nan_weights), checkpoint)  # finished: a new run may start here
    build = models.build_generator

    def poisoned(*args, **kwargs):
        generator = build(*args, **kwargs)
        with torch.no_grad():
            next(iter(generator.parameters())).fill_(float("nan"))
        return generator

    monkeypatch.setattr(models, "build_generator", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at step 1") as stopped:
        train(_config(tmp_path, photos), extractor=TinyEncoder())
    assert str(checkpoint) not in str(stopped.value) and "no checkpoint of this run yet" in str(stopped.value)


# ---------------------------------------------------------------------------- issue #17: outputs checked first


@pytest.mark.parametrize("output, log_dir, message", [
    ("notes.txt/m.safetensors", "logs", "--output {tmp}/notes.txt/m.safetensors: {tmp}/notes.txt is a file, not a folder"),
    ("folder.safetensors", None, "--output {tmp}/folder.safetensors is a folder"),
    ("m.safetensors", "notes.txt/logs", "--log-dir {tmp}/notes.txt/logs: {tmp}/notes.txt is a file, not a folder"),
    ("m.safetensors", "notes.txt", "--log-dir {tmp}/notes.txt is a file, not a folder"),
    ("notes.safetensors", None, "--output {tmp}/notes.safetensors: the log folder beside it, {tmp}/notes.train is a file"),
])  # fmt: skip
def test_cli_checks_every_output_before_any_work(tmp_path, photos, output, log_dir, message):
    """100000 steps would run for hours: the refusal comes first, and creates nothing."""
    (tmp_path / "notes.txt").write_text("notes")
    (tmp_path / "notes.train").write_text("notes")
    (tmp_path / "folder.safetensors").mkdir()
    before = sorted(tmp_path.rglob("*"))
    extra = ["--iterations", "100000", *(["--log-dir", tmp_path / log_dir] if log_dir else [])]
    run = _instyle(*_cli_train_args(tmp_path, photos, tmp_path / output, *extra), timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("instyle train: error: " + message.format(tmp=tmp_path))
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("case", ["missing content", "missing held-out photos", "no checkpoint to resume", "bad style"])
def test_a_run_refused_by_validation_creates_nothing(tmp_path, photos, case):
    overrides = {
        "missing content": dict(content=str(tmp_path / "missing")),
        "missing held-out photos": dict(eval_content=str(tmp_path / "missing")),
        "no checkpoint to resume": dict(resume=True),
        "bad style": dict(style=str(tmp_path / "missing.png")),
    }[case]  # fmt: skip
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(Exception, match="missing|no checkpoint"):
        train(_config(tmp_path, photos, **overrides), extractor=TinyEncoder())
    assert sorted(tmp_path.rglob("*")) == before  # no empty log folder


def test_a_model_file_given_as_style_and_output_is_not_called_an_image(tmp_path, photos, capsys):
    from instyle.apps.cli import main

    train(_config(tmp_path, photos, iterations=1), extractor=TinyEncoder())
    model = tmp_path / "model.safetensors"
    before = model.read_bytes()
    args = _cli_train_args(tmp_path, photos, model)
    args[args.index("--style") + 1] = str(model)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"--output {model} is the style (a model file with style targets)" in err and "image" not in err
    assert model.read_bytes() == before


def test_an_output_that_fails_at_the_end_says_how_to_save_the_run(tmp_path, photos, small_disk):
    """A full disk at the final save: the checkpoint holds the run, and --resume -o OTHER saves it."""
    log_dir, other = tmp_path / "logs", tmp_path / "other.safetensors"
    fill_disk(small_disk)  # the location is fine; the disk fills only later
    args = _cli_train_args(tmp_path, photos, small_disk / "m.safetensors", "--iterations", "2", "--log-dir", log_dir)
    run = _instyle(*args)
    error = run.stderr.strip().splitlines()[-1]  # after the progress bar
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert error.startswith(f"instyle train: error: cannot write {small_disk / 'm.safetensors'}: No space left on device")
    assert str(log_dir / "checkpoint.pt") in error and f"--resume --log-dir {log_dir} -o OTHER.safetensors" in error
    args[args.index("-o") + 1] = str(other)
    rescue = _instyle(*args, "--resume")
    assert rescue.returncode == 0, rescue.stderr
    assert "()" not in rescue.stdout and "total " in rescue.stdout  # the losses of the finished run
    _, metadata, _ = read_model_file(other)
    assert metadata["final_losses"]["total"] > 0 and metadata["iterations"] == 2
