"""`instyle export adain` (issue #18, part 4): the arbitrary model as ONNX, the painting's statistics
an input, so that one file serves every painting; the statistics graph beside it. Checked in
onnxruntime within 1e-3 against the torch AdaINModel (fp32) on the same photo and painting, for
both exporters. Every run uses the real VGG-19 encoder and a seeded, untrained decoder, saved in
fp16 as the bundled one will be, on small images."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from instyle.apps.cli import main  # noqa: E402
from instyle.engine import catalog  # noqa: E402
from instyle.engine.config import ConfigError  # noqa: E402
from instyle.engine.fileio import WriteError  # noqa: E402
from instyle.engine.inference.adain import load_adain  # noqa: E402
from instyle.engine.inference.export import OPSET, ExportError, onnx_metadata  # noqa: E402
from instyle.engine.inference.onnx_adain import OnnxAdaIN, export_adain, export_any, style_graph_path  # noqa: E402
from instyle.engine.modelfile import ModelFileError, save_model  # noqa: E402
from instyle.engine.models import TransformerNet  # noqa: E402
from instyle.engine.weights import file_sha256  # noqa: E402

from .conftest import save_spread_decoder  # noqa: E402
from .test_cli import run_cli  # noqa: E402

EXPORTERS = ["dynamo", "torchscript"]
STYLE = 128  # the paintings' long side for their statistics: 512 by default, smaller for speed
TOLERANCE = 1e-3  # the issue's: max abs on pixels in [0, 1]


@pytest.fixture(scope="module")
def decoder_file(tmp_path_factory) -> Path:
    """The shared spread test decoder, fp16 as the decoder ships."""
    return save_spread_decoder(tmp_path_factory.mktemp("decoder") / "decoder.safetensors", torch.float16)


@pytest.fixture(scope="module")
def model(decoder_file):
    return load_adain(decoder_file)


@pytest.fixture(scope="module", params=EXPORTERS)
def exported(request, model, tmp_path_factory):
    if request.param == "dynamo":
        pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("onnx") / f"adain_{request.param}.onnx"
    return export_adain(model, out, exporter=request.param)


@pytest.fixture(scope="module")
def runner(exported):
    return OnnxAdaIN(exported[0], threads=1)


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth gradient with noise: structure for the encoder, colours for the statistics."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([ys, xs, (ys + xs) / 2]) * torch.rand(3, 1, 1, generator=g)
    return (base + 0.3 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


PAINTING = _image(96, 128, 2)  # long side STYLE: the statistics see it as it is


def _far(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


@pytest.mark.parametrize(
    "h, w, strength",
    [(67, 91, 1.0),  # sides not multiples of 8: padded inside the graph, cropped back
     (48, 64, 0.6),  # a second size from the same file, and alpha in feature space
     (12, 20, 0.3)],  # under the 16 px the decoder needs: padded by the runner, as AdaINModel pads
)  # fmt: skip
def test_onnxruntime_matches_the_torch_model(runner, model, h, w, strength):
    photo = _image(h, w, 1)
    expected = model.stylize(photo, style=PAINTING, strength=strength, style_size=STYLE, dtype="fp32")
    mean, std = runner.style(PAINTING, style_size=STYLE)
    got = runner.run(photo[None], mean, std, strength)[0]
    assert got.shape == expected.shape == (3, h, w)
    assert _far(got, expected) <= TOLERANCE
    assert 0.05 < float(((expected > 0) & (expected < 1)).float().mean())  # the clamp hides nothing much


def test_the_files_alone_in_onnxruntime_and_numpy(exported, model):
    """No torch and no instyle: the painting (already at its style size) through OUT.style.onnx,
    its statistics and the photo through OUT.onnx, as a user of the files runs them."""
    stylize_path, style_path = exported
    mix = model.style(PAINTING, style_size=STYLE, dtype="fp32")
    style = ort.InferenceSession(str(style_path), providers=["CPUExecutionProvider"])
    mean, std = style.run(["style_mean", "style_std"], {"painting": PAINTING[None].numpy()})
    assert mean.shape == std.shape == (1, 512)
    scale = float(mix.means.abs().max())  # relu4_1 features run to hundreds: fp32 round-off relative to that
    assert _far(mean, mix.means) <= 1e-5 * scale and _far(std, mix.stds) <= 1e-5 * scale
    photo = _image(67, 91, 1)
    session = ort.InferenceSession(str(stylize_path), providers=["CPUExecutionProvider"])
    feeds = {"image": photo[None].numpy(), "style_mean": mean, "style_std": std, "strength": np.array(0.8, np.float32)}
    (got,) = session.run(["stylized"], feeds)
    expected = model.stylize(photo, style=mix, strength=0.8, dtype="fp32")
    assert got.shape == (1, 3, 67, 91) and _far(got[0], expected) <= TOLERANCE


def test_a_batch_with_one_painting_or_one_each(runner, model):
    photos = torch.stack([_image(40, 56, 3), _image(40, 56, 4)])
    other = _image(128, 80, 5)
    one = runner.style(PAINTING, style_size=STYLE)
    each = [torch.cat(pair) for pair in zip(one, runner.style(other, style_size=STYLE))]
    shared = runner.run(photos, *one)
    paired = runner.run(photos, *each)
    for i, painting in enumerate([PAINTING, other]):
        assert _far(shared[i], model.stylize(photos[i], style=PAINTING, style_size=STYLE, dtype="fp32")) <= TOLERANCE
        assert _far(paired[i], model.stylize(photos[i], style=painting, style_size=STYLE, dtype="fp32")) <= TOLERANCE
    assert _far(paired[1], shared[1]) > 0.01  # the second painting did reach the second photo


def test_graphs_are_standard_onnx_with_dynamic_axes_and_metadata(exported, decoder_file):
    stylize_path, style_path = exported
    assert style_path == style_graph_path(stylize_path) and style_path.name.endswith(".style.onnx")
    dims = {}
    for path in exported:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)  # no custom ops
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == OPSET
        for value in (*proto.graph.input, *proto.graph.output):
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            dims[value.name, path.name] = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    main_name, style_name = stylize_path.name, style_path.name
    assert dims["image", main_name] == dims["stylized", main_name] == ["batch", 3, "height", "width"]
    assert dims["style_mean", main_name] == dims["style_std", main_name] == ["style_batch", 512]
    assert dims["strength", main_name] == []
    assert dims["painting", style_name] == ["batch", 3, "height", "width"]
    assert dims["style_mean", style_name] == dims["style_std", style_name] == ["batch", 512]
    meta, style_meta = onnx_metadata(stylize_path), onnx_metadata(style_path)
    for m in (meta, style_meta):
        assert m["style_name"] == m["arch"] == "adain"
        assert m["source_sha256"] == file_sha256(decoder_file) and m["style_size"] == "512"
    assert meta["style_graph"] == style_name and style_meta["stylize_graph"] == main_name
    assert "style_mean" in meta["input"] and "strength" in meta["input"] and meta["min_size"] == "16"
    assert "painting" in style_meta["input"] and "512 px" in style_meta["input"]


def test_the_runner_refuses_other_files_and_bad_statistics(exported, runner):
    stylize_path, style_path = exported
    with pytest.raises(ExportError, match="is not the stylize graph"):
        OnnxAdaIN(style_path, style_path)
    with pytest.raises(ExportError, match="is not the style graph"):
        OnnxAdaIN(stylize_path, stylize_path)
    photos = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"style_mean and style_std must be \(1 or N, C\)"):
        runner.run(photos, torch.zeros(3, 512), torch.ones(3, 512))
    with pytest.raises(ValueError, match="strength must be in"):
        runner.run(photos, torch.zeros(1, 512), torch.ones(1, 512), 1.5)


# ---------------------------------------------------------------------------- the command


def test_cli_export_adain_with_a_decoder_the_bundled_one_or_the_file_as_model(
    decoder_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "sub" / "adain.onnx"
    out.parent.mkdir()
    out.write_bytes(b"an older export")  # replaced, as export replaces any output
    code = main(["export", "adain", "--decoder", str(decoder_file), "--onnx", str(out), "--exporter", "torchscript"])
    printed = capsys.readouterr().out
    assert code == 0 and str(out) in printed and str(style_graph_path(out)) in printed
    assert onnx_metadata(out)["source_sha256"] == onnx_metadata(style_graph_path(out))["source_sha256"]
    # Once a decoder is bundled, `instyle export adain --onnx OUT` needs nothing else.
    monkeypatch.setattr(catalog, "ADAIN_DECODER", decoder_file)
    bundled = tmp_path / "bundled.onnx"
    assert main(["export", "adain", "--onnx", str(bundled), "--exporter", "torchscript"]) == 0
    assert onnx_metadata(bundled)["source_model"] == decoder_file.name
    # A decoder file given as the model is exported as the arbitrary model it serves.
    named = tmp_path / "named.onnx"
    assert main(["export", str(decoder_file), "--onnx", str(named), "--exporter", "torchscript"]) == 0
    assert onnx_metadata(named)["arch"] == "adain" and style_graph_path(named).is_file()


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("generator") / "tiny.safetensors"
    save_model(TransformerNet(width=0.25, num_residual=1), path, {"style_name": "tiny"})
    return path


@pytest.mark.parametrize(
    "args, code, message",
    [(["adain"], 2, "--decoder is needed: none given, and the AdaIN decoder is not bundled in this build"),
     (["adain", "--decoder", "{generator}"], 2, "holds a network of architecture 'transformer', not one of adain-decoder"),
     (["adain", "--decoder", "{missing}"], 2, "model file {missing} does not exist"),
     (["{generator}", "--decoder", "{decoder}"], 2, "--decoder goes with the model 'adain' (any painting), not with"),
     (["adain", "--decoder", "{decoder}", "--onnx", "{out}.pt"], 1, "the file name must end in .onnx")],
)  # fmt: skip
def test_cli_bad_input_is_one_line_and_writes_nothing(
    args, code, message, decoder_file, generator_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(catalog, "ADAIN_DECODER", tmp_path / "not_bundled.safetensors")
    out = tmp_path / "out" / "adain.onnx"
    missing = tmp_path / "missing.safetensors"
    names = {"generator": generator_file, "decoder": decoder_file, "missing": missing, "out": out}
    argv = ["export", *(a.format(**names) for a in args)]
    argv += [] if "--onnx" in argv else ["--onnx", str(out)]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("instyle export: error: ") and message.format(**names) in err, err
    assert not out.parent.exists()


def test_cli_generator_as_decoder_in_a_real_process(generator_file, tmp_path):
    out = tmp_path / "out" / "adain.onnx"
    result = run_cli("export", "adain", "--decoder", generator_file, "--onnx", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"instyle export: error: model file {generator_file} holds a network of architecture 'transformer', "
        "not one of adain-decoder, adain-fast"
    )
    assert not out.parent.exists()


def test_a_failed_write_leaves_neither_file(model, decoder_file, tmp_path):
    """The statistics graph is written first; when the stylizing graph then cannot be written (here
    its name is taken by a folder), the new statistics graph is taken back: the pair or nothing."""
    out = tmp_path / "adain.onnx"
    (out / "inside").mkdir(parents=True)
    with pytest.raises(WriteError, match="cannot write"):
        export_adain(model, out, exporter="torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adain.onnx"] and not style_graph_path(out).exists()
    with pytest.raises(ValueError, match="is the model file itself"):  # the decoder is never overwritten
        copy = shutil.copyfile(decoder_file, tmp_path / "decoder.onnx")
        export_any("adain", copy, decoder=copy, exporter="torchscript")
    with pytest.raises(ConfigError, match="decoder"):
        export_any(decoder_file, tmp_path / "x.onnx", decoder=decoder_file)
    with pytest.raises(ModelFileError, match="missing.safetensors does not exist"):
        export_any("adain", tmp_path / "x.onnx", decoder=tmp_path / "missing.safetensors")
