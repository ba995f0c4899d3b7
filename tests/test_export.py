"""ONNX export (instyle.export, `instyle export`) and `instyle stylize --runtime onnxruntime`:
the exported graph run by onnxruntime against the PyTorch generator."""

import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from instyle.apps.cli import main  # noqa: E402
from instyle.engine.inference.export import (  # noqa: E402
    OPSET,
    ExportError,
    cached_onnx_path,
    export_generator,
    export_model,
    onnx_metadata,
)
from instyle.engine.image import load_image, save_image  # noqa: E402
from instyle.engine.modelfile import ModelFileError, load_generator, save_model  # noqa: E402
from instyle.engine.weights import file_sha256 as sha256_file  # noqa: E402
from instyle.engine.models import TextureNet, TransformerNet  # noqa: E402
from instyle.engine.inference.onnx_runtime import OnnxStyleModel  # noqa: E402
from instyle.engine.inference.stylize import load_model  # noqa: E402

# Both of torch.onnx.export's exporters; "dynamo" (the default) also needs onnxscript.
EXPORTERS = ["dynamo", "torchscript"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1)
    with torch.no_grad():  # non-trivial affine parameters, so that a dropped one shows
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("norm.bias"):
                p.uniform_(-0.5, 0.5)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(net, path, {"style_name": "tiny"})
    return path


@pytest.fixture(scope="module", params=EXPORTERS)
def exported(request, model_file, tmp_path_factory):
    if request.param == "dynamo":
        pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("onnx") / f"tiny_{request.param}.onnx"
    return export_model(model_file, out, exporter=request.param)


def _torch_output(model_file, x):
    generator, _ = load_generator(model_file)
    with torch.no_grad():
        return generator(x)


@pytest.mark.parametrize(
    "shape",
    [
        (1, 3, 67, 91),  # odd sides: stride-2 rounding and the crop back to the input size
        (1, 3, 128, 128),  # a second size from the same graph: the sides really are dynamic
        (2, 3, 40, 33),  # a batch of two, dynamic too
    ],
)
def test_onnxruntime_matches_pytorch(exported, model_file, shape):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"image": x.numpy()})
    expected = _torch_output(model_file, x)
    assert y.shape == tuple(shape)
    assert abs(torch.from_numpy(y) - expected).max().item() <= 1e-3


def test_graph_is_standard_onnx_with_dynamic_axes(exported):
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    # 3 down + 2 per residual block + 2 up; the head has no norm.
    assert ops.count("InstanceNormalization") == 7
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)  # no custom ops
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == OPSET and opset >= 17  # InstanceNormalization as ONNX defines it today
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert dims[1].dim_value == 3
        assert all(dims[i].dim_param and not dims[i].dim_value for i in (0, 2, 3))


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_other_norms_export(norm, tmp_path):
    # The norm registry's other layers: eval-mode BatchNormalization, GroupNorm (which torch
    # writes with InstanceNormalization nodes), none.
    torch.manual_seed(0)
    net = TransformerNet(norm=norm, width=0.25, num_residual=1).eval()
    path = export_generator(net, tmp_path / f"{norm}.onnx", exporter="torchscript")
    x = torch.rand(1, 3, 37, 41)
    with torch.no_grad():
        assert (OnnxStyleModel(path, threads=1).run(x) - net(x)).abs().max().item() <= 1e-3


def test_metadata_props(exported, model_file):
    meta = onnx_metadata(exported)
    import instyle

    assert meta["style_name"] == "tiny"
    assert meta["instyle_version"] == instyle.__version__
    assert meta["source_sha256"] == sha256_file(model_file)
    assert '"arch": "transformer"' in meta["generator_config"]
    assert meta["min_size"] == "5"


def test_small_images_through_onnx_style_model(exported, model_file):
    model = OnnxStyleModel(exported, threads=1)
    for shape in [(1, 3, 3, 7), (1, 3, 2, 7)]:  # below the graph's 5-pixel minimum: padded
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(6))
        assert (model.run(x) - _torch_output(model_file, x)).abs().max().item() <= 1e-3
    # A 1x1 image pads to a constant one: every norm then sees a (nearly) constant plane and
    # amplifies rounding differences (torch's and instyle's own backends differ there too),
    # so only the shape and finiteness are checked.
    y = model.run(torch.rand(1, 3, 1, 1))
    assert y.shape == (1, 3, 1, 1) and torch.isfinite(y).all()


def test_bad_model_paths_write_nothing(tmp_path, model_file):
    out = tmp_path / "out.onnx"
    with pytest.raises(ModelFileError, match="no_such_style"):
        export_model("no_such_style", out)
    with pytest.raises(ModelFileError, match="missing.safetensors"):
        export_model(tmp_path / "missing.safetensors", out)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="garbage.safetensors"):
        export_model(garbage, out)
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_model(model_file, tmp_path / "out.txt", exporter="torchscript")
    assert list(tmp_path.iterdir()) == [garbage]


def test_failed_export_keeps_the_previous_file(tmp_path, model_file):
    out = tmp_path / "kept.onnx"
    out.write_bytes(b"previous export")
    texture = TextureNet(num_scales=2, channels=4)
    with pytest.raises(ExportError, match="'texture'"):
        export_generator(texture, out)
    with pytest.raises(ValueError, match="exporter"):
        export_model(model_file, out, exporter="tflite")
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.onnx"]


def test_cli_export(model_file, tmp_path, capsys):
    out = tmp_path / "sub" / "tiny.onnx"
    assert main(["export", str(model_file), "--onnx", str(out), "--exporter", "torchscript"]) == 0
    assert str(out) in capsys.readouterr().out
    assert onnx_metadata(out)["style_name"] == "tiny"
    assert main(["export", "no_such_style", "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "no_such_style" in capsys.readouterr().err
    assert main(["export", str(model_file), "--onnx", str(tmp_path / "x.pt")]) == 1
    assert ".onnx" in capsys.readouterr().err


# --- stylize --runtime onnxruntime ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def instyle_home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


def test_stylize_runtime_onnxruntime_matches_torch_and_caches(model_file, instyle_home, monkeypatch):
    monkeypatch.setenv("INSTYLE_HOME", str(instyle_home))
    image = torch.rand(3, 45, 61, generator=torch.Generator().manual_seed(3))
    expected = load_model(model_file).stylize(image, dtype="fp32")
    model = load_model(model_file)
    got = model.stylize(image, runtime="onnxruntime")
    assert got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-3
    cached = cached_onnx_path(model_file)
    assert cached.parent == instyle_home / "onnx" and cached.is_file()
    assert onnx_metadata(cached)["style_name"] == "tiny"
    stamp = cached.stat().st_mtime_ns
    again = load_model(model_file).stylize(image, runtime="onnxruntime")  # a fresh model reuses the file
    assert cached.stat().st_mtime_ns == stamp
    torch.testing.assert_close(again, got, atol=0, rtol=0)
    # Tiled images fall back to torch; the result is still the stylized image.
    big = torch.rand(3, 150, 170, generator=torch.Generator().manual_seed(4))
    tiled = model.stylize(big, tile=64, runtime="onnxruntime")
    assert (tiled - model.stylize(big, tile=64, dtype="fp32")).abs().max().item() <= 1e-6


def test_stylize_runtime_onnxruntime_options(model_file, instyle_home, monkeypatch):
    monkeypatch.setenv("INSTYLE_HOME", str(instyle_home))
    model = load_model(model_file)
    with pytest.raises(ValueError, match="runtime must be one of"):
        model.stylize(torch.rand(3, 8, 8), runtime="tensorrt")
    with pytest.raises(ValueError, match="fp32"):
        model.stylize(torch.rand(3, 8, 8), runtime="onnxruntime", dtype="bf16")
    with pytest.raises(ValueError, match="CPU"):
        model.stylize(torch.rand(3, 8, 8), runtime="onnxruntime", device="cuda")


def test_corrupt_cache_file_is_exported_again(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTYLE_HOME", str(tmp_path))
    cached = cached_onnx_path(model_file)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x08\x07truncated")
    out = load_model(model_file).stylize(torch.rand(3, 20, 24), runtime="onnxruntime")
    assert out.shape == (3, 20, 24)
    assert onnx_metadata(cached)["source_sha256"] == sha256_file(model_file)


def test_cli_stylize_runtime_onnxruntime(model_file, instyle_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSTYLE_HOME", str(instyle_home))
    photos = tmp_path / "in"
    photos.mkdir()
    g = torch.Generator().manual_seed(5)
    save_image(torch.rand(3, 33, 47, generator=g), photos / "a.png")
    save_image(torch.rand(3, 4, 6, generator=g), photos / "b.png")  # below the graph's minimum side
    out = tmp_path / "out"
    code = main(["stylize", str(photos), "--model", str(model_file), "-o", str(out), "--runtime", "onnxruntime"])
    assert code == 0, capsys.readouterr().err
    assert load_image(out / "a_tiny.png").shape == (3, 33, 47)
    assert load_image(out / "b_tiny.png").shape == (3, 4, 6)
    code = main(["stylize", str(photos), "--model", str(model_file), "-o", str(out), "--runtime", "onnxruntime",
                 "--dtype", "bf16"])  # fmt: skip
    assert code == 1 and "fp32" in capsys.readouterr().err


def test_export_imports_neither_stylize_nor_the_runtime():
    """stylize -> onnx_runtime -> export, one way: export.py names neither module."""
    import ast
    from pathlib import Path

    import instyle.engine.inference.export as export

    tree = ast.parse(Path(export.__file__).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in modules if m and ("stylize" in m or "onnx_runtime" in m)}
