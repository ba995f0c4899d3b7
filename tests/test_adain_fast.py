"""The distilled AdaIN model (issue #18, part 7): `instyle train-adain --distill-from DECODER` trains a
light encoder-decoder pair against a trained decoder, and `instyle stylize --style P --fast` (or
`--decoder PAIR`) stylizes with it, tiled or not. Real VGG-19, tiny crops, the real command line."""

import csv
import os
import subprocess
import sys

import pytest
import torch

from instyle.engine.image import save_image
from instyle.engine.inference.adain import load_adain
from instyle.engine.modelfile import read_model_file, save_model
from instyle.engine.models.adain import FAST_BLOCKS, AdaINDecoder, FastAdaIN, adain, build_encoder, feature_stats
from instyle.engine.training import TrainingError, TrainingInterrupted
from instyle.engine.training.adain import AdaINConfig, train_adain
from instyle.engine.training.adain.distill import _take, prune_into

from .test_adain import _cli_args, _config, folders  # noqa: F401  (the fixture)


@pytest.fixture
def teacher(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "teacher.safetensors"
    save_model(AdaINDecoder(), path, {"made_by": "test"})
    return path


def test_the_pair_is_half_as_wide_and_starts_from_the_teachers_strongest_filters_refitted(teacher):
    student, vgg = FastAdaIN(), build_encoder()
    decoder = AdaINDecoder()
    decoder.load_state_dict(read_model_file(teacher)[2])
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(8, 3, 48, 48, generator=g), torch.rand(8, 3, 48, 48, generator=g) ** 2
    prune_into(student, vgg, decoder, content, style)
    widths = [c.out_channels for c in student.encoder.convs]
    assert widths == [w for block in FAST_BLOCKS for w in block] == [32, 32, 64, 64, 128, 128, 128, 128, 256]
    teacher_params = sum(p.numel() for p in decoder.parameters()) + sum(p.numel() for p in vgg.parameters())
    assert sum(p.numel() for p in student.parameters()) * 3.5 < teacher_params
    # conv1_1 reads all three colours, as the teacher's does: the refit gives back the 32 filters of
    # largest L1 norm, in order
    first = vgg.conv1_1.weight
    kept = first.abs().sum(dim=(1, 2, 3)).topk(32).indices.sort().values
    assert torch.allclose(student.encoder.convs[0].weight, first[kept], atol=0.05 * first.abs().max())
    # the student reads pixels as VGG-19 does
    image = torch.rand(1, 3, 24, 24, generator=g)
    reference = vgg.conv1_1(vgg.normalize(image))[:, kept]
    own = student.encoder.convs[0](((image.flip(1) - student.encoder.input_mean) * 255))
    assert (own - reference).abs().max() < 0.05 * reference.abs().max()
    # deeper layers read half the channels: refitted, the pair imitates the teacher far better than
    # the same pruned filters merely copied, on images it was not fitted on
    content, style = torch.rand(4, 3, 48, 48, generator=g), torch.rand(4, 3, 48, 48, generator=g) ** 2
    with torch.no_grad():
        features = vgg(torch.cat([content, style]))["relu4_1"]
        wanted = decoder(adain(features[:4], *feature_stats(features[4:])))
        copied, keep = FastAdaIN(), torch.arange(3)  # the same filters, taken as they are
        teacher_convs = [getattr(vgg, n) for n in vgg._sequence if n.startswith("conv")]
        decoder_convs = [m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
        copied_convs = [*copied.encoder.convs, *(m for m in copied.decoder.modules() if isinstance(m, torch.nn.Conv2d))]
        for source, target in zip([*teacher_convs, *decoder_convs], copied_convs):
            keep = _take(source, target, keep)
        assert (student(content, style) - wanted).abs().mean() < 0.5 * (copied(content, style) - wanted).abs().mean()


def test_distilling_through_the_cli_writes_a_pair_that_stylizes_tiled_as_untiled(tmp_path, folders, teacher):  # noqa: F811
    output = tmp_path / "fast.safetensors"
    run = subprocess.run(
        [sys.executable, "-m", "instyle", *_cli_args(folders, output, "--iterations", "3", "--distill-from", str(teacher))],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"wrote {output} after 3 steps" in run.stdout and "distill" in run.stdout
    log = list(csv.DictReader(open(tmp_path / "fast.train" / "log.csv")))
    assert [int(r["step"]) for r in log] == [1, 2, 3] and {"total", "distill", "style"} <= set(log[0])
    from PIL import Image

    with Image.open(tmp_path / "fast.train" / "samples_000002.png") as sheet:  # photo, painting, teacher, student
        assert sheet.width == 4 * 32
    config, metadata, _ = read_model_file(output)
    assert config == {"arch": "adain-fast", "blocks": [list(b) for b in FAST_BLOCKS]}
    assert metadata["teacher"]["file"] == "teacher.safetensors" and len(metadata["teacher"]["sha256"]) == 64
    assert metadata["training"]["distill_from"] == str(teacher)

    model = load_adain(output)
    assert model.fast and "fast=" in repr(model)
    g = torch.Generator().manual_seed(3)
    photo, painting = torch.rand(3, 90, 70, generator=g), torch.rand(3, 80, 96, generator=g)
    whole = model.stylize(photo, style=painting, dtype="fp32")
    tiled = model.stylize(photo, style=painting, dtype="fp32", tile=32)
    assert whole.shape == photo.shape and (whole - tiled).abs().max() < 1 / 255
    assert model.stylize(photo, style=painting, dtype="bf16").shape == photo.shape

    # the command line takes the pair as --decoder
    save_image(photo, tmp_path / "photo.png"), save_image(painting, tmp_path / "painting.png")
    from instyle.apps.cli import main

    out = tmp_path / "out"
    assert main(["stylize", str(tmp_path / "photo.png"), "--style", str(tmp_path / "painting.png"), "--decoder", str(output), "-o", str(out)]) == 0
    assert (out / "photo_painting.png").exists()


def test_a_distilled_run_resumes_exactly(tmp_path, folders, teacher):  # noqa: F811
    straight = train_adain(_config(tmp_path, folders, "straight", distill_from=str(teacher)))

    def interrupt_at_2(step, losses):
        if step == 2:
            os.kill(os.getpid(), __import__("signal").SIGINT)

    config = _config(tmp_path, folders, "resumed", distill_from=str(teacher))
    with pytest.raises(TrainingInterrupted):
        train_adain(config, on_step=interrupt_at_2)
    resumed = train_adain(AdaINConfig(**{**config.__dict__, "resume": True}))
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(TrainingError, match=r"made with distill_weight 1.0 \(now 2.0\)"):
        train_adain(AdaINConfig(**{**config.__dict__, "resume": True, "distill_weight": 2.0, "iterations": 5}))


def test_a_run_fine_tunes_from_a_model_file_with_other_loss_weights(tmp_path, folders, teacher, capsys):  # noqa: F811
    """``init_from``: a new run (its own settings) starts from another run's network, not from the
    pruned teacher; its first step's loss shows it, and a file of another architecture is refused."""
    first = train_adain(_config(tmp_path, folders, "first", distill_from=str(teacher), iterations=4))
    tuned = train_adain(_config(tmp_path, folders, "tuned", distill_from=str(teacher), iterations=1, lr=1e-12,
                                distill_weight=0.25, init_from=str(tmp_path / "first.safetensors")))  # fmt: skip
    for (name, a), b in zip(first.model.state_dict().items(), tuned.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name  # a step of lr 1e-12 changes nothing to see
    record = read_model_file(tmp_path / "tuned.safetensors")[1]["init_from"]  # what it started from
    assert record["file"] == "first.safetensors" and record["iterations"] == 4
    assert record["training"]["distill_weight"] == 1.0 and len(record["sha256"]) == 64
    # the record is the start's even when the start file is replaced before a resumed run ends
    import hashlib
    import shutil

    start = tmp_path / "start.safetensors"
    shutil.copyfile(tmp_path / "first.safetensors", start)
    sha = hashlib.sha256(start.read_bytes()).hexdigest()
    config = _config(tmp_path, folders, "again", distill_from=str(teacher), iterations=2, init_from=str(start))
    train_adain(config)
    shutil.copyfile(tmp_path / "tuned.safetensors", start)
    train_adain(AdaINConfig(**{**config.__dict__, "resume": True, "iterations": 3}))
    assert read_model_file(tmp_path / "again.safetensors")[1]["init_from"]["sha256"] == sha
    fresh = train_adain(_config(tmp_path, folders, "fresh", distill_from=str(teacher), iterations=1, lr=1e-12))
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(fresh.model.parameters(), tuned.model.parameters()))
    # the decoder run fine-tunes a decoder; a pair is not one
    from instyle.apps.cli import main

    output = tmp_path / "decoder.safetensors"
    assert main(_cli_args(folders, output, "--iterations", "1", "--init-from", str(tmp_path / "first.safetensors"))) == 1
    err = capsys.readouterr().err
    assert "first.safetensors" in err and "not one of adain-decoder" in err and "Traceback" not in err
    assert main(_cli_args(folders, output, "--iterations", "1", "--init-from", str(tmp_path / "none.safetensors"))) == 1
    assert "--init-from" in capsys.readouterr().err and not output.exists()


def test_bad_teachers_and_flags_are_refused_by_name(tmp_path, folders, capsys):  # noqa: F811
    from instyle.apps.cli import main

    output = tmp_path / "fast.safetensors"
    missing = tmp_path / "nowhere.safetensors"
    assert main(_cli_args(folders, output, "--iterations", "1", "--distill-from", str(missing))) == 1
    assert f"--distill-from {missing}: no such decoder file" in capsys.readouterr().err
    generator = tmp_path / "generator.safetensors"
    from instyle.engine.models import TransformerNet

    save_model(TransformerNet(), generator, {})
    assert main(_cli_args(folders, output, "--iterations", "1", "--distill-from", str(generator))) == 1
    err = capsys.readouterr().err
    assert str(generator) in err and "not one of adain-decoder" in err and "Traceback" not in err
    assert not output.exists()

    photo = tmp_path / "photo.png"
    save_image(torch.rand(3, 64, 64), photo)
    args = ["stylize", str(photo), "-o", str(tmp_path / "out")]
    assert main([*args, "--model", "starry_night", "--fast"]) == 2
    assert "--fast: only with a painting as --style" in capsys.readouterr().err
    assert main([*args, "--style", str(photo), "--fast", "--decoder", str(generator)]) == 2
    assert "--fast chooses the bundled distilled model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_demo_has_a_row_for_any_painting_through_each_bundled_adain_model(tmp_path, monkeypatch, teacher, shared_data):
    """`make demo`: a painting through the decoder and the distilled pair (here a held-out Van Gogh
    of the shared data, in place of the bundled thumbnail the demo takes)."""
    from instyle.apps.demo import run_demo
    from instyle.engine import catalog

    assert catalog.ADAIN_DEMO_PAINTING.is_file()  # ships with the package
    monkeypatch.setattr(catalog, "ADAIN_DEMO_PAINTING", shared_data / "train" / "paintings" / "vangogh_00466.jpg")
    monkeypatch.setattr(catalog, "STYLES_DIR", tmp_path / "styles")
    (tmp_path / "styles").mkdir()
    fast = tmp_path / "fast.safetensors"
    save_model(FastAdaIN(), fast, {})
    monkeypatch.setattr(catalog, "ADAIN_DECODER", teacher)
    monkeypatch.setattr(catalog, "ADAIN_FAST", fast)
    rows, grid = run_demo(tmp_path / "out", size=32, device="cpu")
    assert list(dict.fromkeys(r.style for r in rows)) == ["adain:vangogh_00466", "adain-fast:vangogh_00466"]
    assert grid is not None and (tmp_path / "out" / "astronaut_adain-fast-vangogh_00466.png").is_file()


def test_the_pair_exports_to_onnx_and_onnxruntime_matches_it(tmp_path):
    """`instyle export adain --decoder PAIR --onnx OUT.onnx`: the two graphs, the pair's own encoder
    in both; onnxruntime within 1e-3 of the torch model."""
    pytest.importorskip("onnxruntime")
    from instyle.apps.cli import main
    from instyle.engine.inference.onnx_adain import OnnxAdaIN

    from .test_export_adain import PAINTING, STYLE, _image

    torch.manual_seed(2)
    pair = tmp_path / "fast.safetensors"
    save_model(FastAdaIN(), pair, {})
    out = tmp_path / "fast.onnx"
    assert main(["export", "adain", "--decoder", str(pair), "--onnx", str(out)]) == 0
    runner, model = OnnxAdaIN(out, threads=1), load_adain(pair)
    photo = _image(67, 91, 1)
    expected = model.stylize(photo, style=PAINTING, strength=0.7, style_size=STYLE, dtype="fp32")
    mean, std = runner.style(PAINTING, style_size=STYLE)
    assert mean.shape == (1, 256)
    got = runner.run(photo[None], mean, std, 0.7)[0]
    assert float((got - expected).abs().max()) <= 1e-3
