"""instyle train-adain (issue #18, part 1): the AdaIN decoder, the validation split, and the training
run's checkpoints, resume, signals, NaN guard and bad input. Every run uses the real VGG-19 on tiny
crops, in process or through the real command line."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from instyle.engine.image import save_image
from instyle.engine.modelfile import read_model_file
from instyle.engine.models.adain import AdaINDecoder, adain, feature_stats
from instyle.engine.training import TrainingError, TrainingInterrupted, load_checkpoint
from instyle.engine.training.adain import AdaINConfig, is_validation, split_folder, train_adain, validation_listing
from instyle.engine.training.adain import trainer as trainer_module

from .conftest import fill_disk
from .test_train import terminated_after_a_checkpoint

REPO = Path(__file__).resolve().parents[1]
FRACTION = 0.1


def _names(prefix: str, train: int, held: int) -> list[str]:
    """``train`` file names the split trains on and ``held`` it holds out, in the order found."""
    names, counts, i = [], [0, 0], 0
    while counts != [train, held]:
        name, i = f"{prefix}{i}.png", i + 1
        held_out = is_validation(name, FRACTION)
        if counts[held_out] < (held if held_out else train):
            names.append(name)
            counts[held_out] += 1
    return names


@pytest.fixture
def folders(tmp_path):
    """Photos (3 trained on, 1 held out) and paintings (3 and 2) of random pixels, small."""
    g = torch.Generator().manual_seed(0)
    made = []
    for folder, held in (("photos", 1), ("paintings", 2)):
        (tmp_path / folder).mkdir()
        for i, name in enumerate(_names(folder[:2], 3, held)):
            save_image(torch.rand(3, 40 + 4 * i, 48, generator=g) ** (1 + i), tmp_path / folder / name)
        made.append(tmp_path / folder)
    return made


def _config(tmp_path, folders, name="d", **overrides):
    base = dict(
        content=str(folders[0]), styles=str(folders[1]), output=str(tmp_path / f"{name}.safetensors"),
        iterations=4, batch_size=2, image_size=32, max_side=48, checkpoint_every=2, eval_every=2, sample_every=0,
        dtype="fp32", lr=1e-3,
    )  # fmt: skip
    return AdaINConfig(**{**base, **overrides})


def _cli_args(folders, output, *extra):
    return [
        "train-adain", "--content", str(folders[0]), "--styles", str(folders[1]), "-o", str(output),
        "--batch-size", "2", "--image-size", "32", "--max-side", "48", "--checkpoint-every", "1", "--eval-every", "2",
        "--sample-every", "2", "--dtype", "fp32", *extra,
    ]  # fmt: skip


# ---------------------------------------------------------------------------- the model


def test_decoder_mirrors_vgg19_to_relu4_1_and_fits_8_mb_in_fp16():
    decoder = AdaINDecoder()
    convs = [m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (512, 256), (256, 256), (256, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64), (64, 3),
    ]  # fmt: skip
    assert sum(isinstance(m, torch.nn.Upsample) and m.mode == "nearest" for m in decoder.modules()) == 3
    assert not any(isinstance(m, (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm)) for m in decoder.modules())
    params = sum(p.numel() for p in decoder.parameters())
    assert 3.4e6 < params <= 4.2e6 and params * 2 <= 8 * 2**20
    out = decoder(torch.rand(2, 512, 5, 7))
    assert out.shape == (2, 3, 40, 56)
    again = AdaINDecoder.from_config(decoder.config)
    again.load_state_dict(decoder.state_dict())
    features = torch.rand(1, 512, 3, 3)
    assert torch.equal(again(features), decoder(features))
    # reflection padding: a constant map decodes to a constant image, borders included
    flat = decoder(torch.ones(1, 512, 4, 4))
    assert torch.allclose(flat, flat[..., :1, :1].expand_as(flat), atol=1e-5)


def test_adain_takes_the_paintings_statistics_and_optionally_the_whole_photos():
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(2, 8, 6, 5, generator=g) * 3, torch.rand(2, 8, 7, 4, generator=g) + 2
    mean, std = feature_stats(style)
    out = adain(content, mean, std)
    assert torch.allclose(torch.stack(feature_stats(out)), torch.stack((mean, std)), atol=1e-4)
    # the statistics passed in (as tiling will pass the whole photo's) give the same result
    assert torch.allclose(adain(content, mean, std, content_stats=feature_stats(content)), out, atol=1e-5)
    # one tile normalized with the whole map's statistics equals that tile of the whole result
    tile = adain(content[..., :3, :], mean, std, content_stats=feature_stats(content))
    assert torch.allclose(tile, out[..., :3, :], atol=1e-5)
    assert torch.equal(adain(content, mean, std, alpha=0.0), content)


# ---------------------------------------------------------------------------- the split


def test_the_split_is_by_file_name_disjoint_and_stable(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(60):
        save_image(torch.zeros(3, 8, 8), folder / f"f{i}.png")
    split = split_folder(str(folder), FRACTION, "styles")
    assert not set(split.train) & set(split.validation) and len(split.train) + len(split.validation) == 60
    assert 0 < len(split.validation) < 15 and split == split_folder(str(folder), FRACTION, "styles")
    for i in range(60, 80):  # new files never move an old one across
        save_image(torch.zeros(3, 8, 8), folder / f"f{i}.png")
    grown = split_folder(str(folder), FRACTION, "styles")
    assert set(split.validation) <= set(grown.validation) and set(split.train) <= set(grown.train)
    assert validation_listing((str(folder), split)).splitlines() == [f"images/{p.name}" for p in split.validation]


def test_the_committed_split_is_the_rule_applied_to_shared_data(shared_data):
    root = shared_data / "train"
    photos, paintings = (split_folder(str(root / f), FRACTION, f) for f in ("photos", "paintings"))
    committed = (REPO / "data" / "splits" / "adain_validation.txt").read_text().splitlines()
    listed = [line for line in committed if not line.startswith("#")]
    assert listed == validation_listing((str(root / "photos"), photos), (str(root / "paintings"), paintings)).splitlines()
    assert len(paintings.validation) >= 40 and len(photos.validation) >= 15
    assert AdaINConfig().validation_fraction == FRACTION


def test_training_never_reads_a_validation_file(tmp_path, folders, monkeypatch):
    reads = []
    load = trainer_module.load_images
    monkeypatch.setattr(trainer_module, "load_images", lambda paths, *a: reads.append(list(paths)) or load(paths, *a))
    result = train_adain(_config(tmp_path, folders, iterations=2), handle_signals=False)
    train_photos, train_paintings, held_photos, held_paintings = reads
    assert sorted(p.name for p in train_photos + train_paintings) == sorted(_names("ph", 3, 0) + _names("pa", 3, 0))
    assert not any(is_validation(p.name, FRACTION) for p in train_photos + train_paintings)
    assert all(is_validation(p.name, FRACTION) for p in held_photos + held_paintings)
    assert len(held_photos) == 1 and len(held_paintings) == 2
    listed = (result.log_dir / "validation.txt").read_text().split()
    assert listed == [f"photos/{p.name}" for p in held_photos] + [f"paintings/{p.name}" for p in held_paintings]


# ---------------------------------------------------------------------------- the run


def test_resume_after_a_signal_equals_training_straight(tmp_path, folders):
    straight = train_adain(_config(tmp_path, folders, "straight"))

    def interrupt_at_2(step, losses):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    config = _config(tmp_path, folders, "resumed")
    with pytest.raises(TrainingInterrupted) as stop:
        train_adain(config, on_step=interrupt_at_2)
    assert stop.value.step == 2 and load_checkpoint(stop.value.checkpoint)["step"] == 2
    with pytest.raises(TrainingError, match=r"unfinished run \(step 2 of 4\); continue it with resume"):
        train_adain(config)  # forgetting --resume loses nothing
    with pytest.raises(TrainingError, match=r"made with style_weight 10.0 \(now 5.0\)"):
        train_adain(AdaINConfig(**{**config.__dict__, "resume": True, "style_weight": 5.0}))
    resumed = train_adain(AdaINConfig(**{**config.__dict__, "resume": True}))
    assert resumed.step == 4
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # bitwise on the CPU
    assert [h["total"] for h in resumed.history] == [h["total"] for h in straight.history]
    heldout = list(csv.DictReader(open(resumed.log_dir / "heldout.csv")))
    assert [int(row["step"]) for row in heldout] == [2, 4]  # the evaluation before the signal is kept


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, folders, monkeypatch):
    built = []
    monkeypatch.setattr(trainer_module, "AdaINDecoder", lambda: built.append(AdaINDecoder()) or built[-1])

    def poison_after_2(step, losses):
        if step == 2:  # the weights go bad before step 2's checkpoint is written
            with torch.no_grad():
                next(iter(built[0].parameters())).fill_(float("nan"))

    config = _config(tmp_path, folders, iterations=6, checkpoint_every=1, eval_every=100)
    with pytest.raises(TrainingError, match=r"weight \S+ became NaN or inf by step 2; stopped without saving \(last good checkpoint: .*checkpoint.pt\)"):
        train_adain(config, on_step=poison_after_2)
    state = load_checkpoint(tmp_path / "d.train" / "checkpoint.pt")
    assert state["step"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert not Path(config.output).exists()
    # a loss gone NaN stops before the optimizer step, naming the last good checkpoint
    built.clear()
    resumed = AdaINConfig(**{**config.__dict__, "resume": True, "checkpoint_every": 5})
    with pytest.raises(TrainingError, match=r"loss became nan at step 3; .*last good checkpoint: .*checkpoint.pt"):
        train_adain(resumed, on_step=poison_after_2)
    assert load_checkpoint(tmp_path / "d.train" / "checkpoint.pt")["step"] == 1


def test_three_steps_through_the_cli_write_the_decoder_checkpoint_and_logs(tmp_path, folders):
    output = tmp_path / "d.safetensors"
    run = subprocess.run(
        [sys.executable, "-m", "instyle", *_cli_args(folders, output, "--iterations", "3")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"wrote {output} after 3 steps" in run.stdout and "Traceback" not in run.stderr
    log_dir = tmp_path / "d.train"
    assert load_checkpoint(log_dir / "checkpoint.pt")["step"] == 3
    log = list(csv.DictReader(open(log_dir / "log.csv")))
    assert [int(r["step"]) for r in log] == [1, 2, 3] and {"total", "content", "style", "images_per_s"} <= set(log[0])
    assert [int(r["step"]) for r in csv.DictReader(open(log_dir / "heldout.csv"))] == [2, 3]
    assert (log_dir / "loss_curve.png").stat().st_size > 1000 and (log_dir / "samples_000002.png").exists()
    config, metadata, tensors = read_model_file(output)
    decoder = AdaINDecoder.from_config(config)
    decoder.load_state_dict(tensors)
    assert metadata["data"] == {
        "photos": 3, "paintings": 3, "validation_photos": 1, "validation_paintings": 2,
        "validation_rule": "sha256('instyle-adain-validation:' + file name) < fraction",
    }  # fmt: skip
    assert metadata["encoder"]["weights"] == "imagenet-vgg19" and metadata["encoder"]["layer"] == "relu4_1"
    assert metadata["iterations"] == 3 and metadata["validation_losses"]["step"] == 3
    assert metadata["training"]["style_weight"] == 10.0 and metadata["precision"] == "fp32"


def test_sigterm_in_a_real_subprocess_checkpoints_and_the_run_resumes(tmp_path, folders):
    output = tmp_path / "d.safetensors"
    checkpoint = tmp_path / "d.train" / "checkpoint.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    step = terminated_after_a_checkpoint(_cli_args(folders, output, "--iterations", "100000"), checkpoint, env)
    assert not output.exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "instyle", *_cli_args(folders, output, "--iterations", str(step + 1), "--resume")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(checkpoint)["step"] == step + 1 and output.exists()


# ---------------------------------------------------------------------------- bad input


def _refused(tmp_path, folders, capsys, *extra) -> str:
    from instyle.apps.cli import main

    output = tmp_path / "d.safetensors"
    assert main(_cli_args(folders, output, "--iterations", "2", *extra)) == 1
    err = capsys.readouterr().err
    assert err.startswith("instyle train-adain: error: ") and "Traceback" not in err
    assert not output.exists() and not (tmp_path / "d.train").exists()  # nothing written
    return err


def test_a_folder_without_images_is_refused_by_its_flag(tmp_path, folders, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no paintings here")
    assert f"--styles {empty}: no images found" in _refused(tmp_path, [folders[0], empty], capsys)
    nowhere = tmp_path / "nowhere"
    assert f"--content {nowhere}: no such folder" in _refused(tmp_path, [nowhere, folders[1]], capsys)


def test_a_corrupt_painting_is_refused_by_name(tmp_path, folders, capsys):
    bad = folders[1] / _names("pa", 4, 0)[-1]
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    err = _refused(tmp_path, folders, capsys)
    assert f"cannot train on {bad}: " in err


@pytest.mark.parametrize(
    "flag, value, message",
    [("--image-size", "36", "--image-size must be a multiple of 8"),
     ("--max-side", "16", "--max-side must be at least --image-size (32)"),
     ("--validation-fraction", "0.9", "--validation-fraction must be a number at least 0 and at most 0.5"),
     ("--style-weight", "-1", "--style-weight must be a non-negative number")],
)  # fmt: skip
def test_values_no_run_can_use_are_refused_before_any_work(tmp_path, folders, capsys, flag, value, message):
    assert message in _refused(tmp_path, folders, capsys, flag, value)


def test_a_bad_checkpoint_is_refused_in_one_line_before_anything_loads(tmp_path, folders, capsys):
    """Resume checks the checkpoint as instyle train does: entries, weights, settings."""
    from instyle.apps.cli import main

    assert main(_cli_args(folders, tmp_path / "d.safetensors", "--iterations", "1")) == 0
    capsys.readouterr()
    checkpoint = tmp_path / "d.train" / "checkpoint.pt"
    good = load_checkpoint(checkpoint)
    nan_weights = {k: torch.full_like(v, float("nan")) for k, v in good["model"].items()}
    for case, saved, message in [
        ("no model", {k: v for k, v in good.items() if k != "model"}, "is not a whole checkpoint: no entry 'model'"),
        ("nan", {**good, "model": nan_weights}, "entry 'model': weight layers.0.conv.weight has NaN or inf values"),
        ("not a checkpoint", [1, 2], "holds a list, not a checkpoint"),
    ]:  # fmt: skip
        torch.save(saved, checkpoint)
        assert main(_cli_args(folders, tmp_path / "d.safetensors", "--iterations", "2", "--resume")) == 1, case
        err = capsys.readouterr().err
        assert err.startswith(f"instyle train-adain: error: resume: {checkpoint}") and err.count("\n") == 1, err
        assert message in err, (case, err)


def test_an_output_that_fails_at_the_end_says_how_to_save_the_run(tmp_path, folders, small_disk, capsys):
    """A full disk at the final save: the checkpoint holds the run, and --resume -o OTHER saves it."""
    from instyle.apps.cli import main

    log_dir, other = tmp_path / "logs", tmp_path / "other.safetensors"
    fill_disk(small_disk)  # the location is fine; the disk fills only later
    args = _cli_args(folders, small_disk / "d.safetensors", "--iterations", "1", "--log-dir", str(log_dir))
    assert main(args) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert error.startswith(f"instyle train-adain: error: cannot write {small_disk / 'd.safetensors'}: No space left")
    assert str(log_dir / "checkpoint.pt") in error and f"--resume --log-dir {log_dir} -o OTHER.safetensors" in error
    args[args.index("-o") + 1] = str(other)
    assert main([*args, "--resume"]) == 0
    assert read_model_file(other)[1]["iterations"] == 1


def test_every_output_is_checked_before_any_work(tmp_path, folders, capsys):
    (tmp_path / "notes.txt").write_text("notes")
    output = tmp_path / "notes.txt" / "d.safetensors"
    before = sorted(tmp_path.rglob("*"))
    err = _refused(tmp_path, folders, capsys, "-o", str(output))
    assert f"--output {output}: {tmp_path / 'notes.txt'} is a file, not a folder" in err
    assert sorted(tmp_path.rglob("*")) == before


def test_every_flag_says_what_it_does():
    import argparse

    from instyle.apps.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices["train-adain"]
    flags = [a for a in parser._actions if a.option_strings]
    assert not [a.option_strings[-1] for a in flags if not (a.help or "").split("(default:")[0].strip()]
    assert {"--content", "--styles", "--output", "--resume", "--style-weight"} <= set(parser._option_string_actions)
