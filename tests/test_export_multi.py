"""Issue #19: a multi-style model exported to ONNX with its mixing weights as an input
(``image``, ``style_weights`` -> ``stylized``), run by onnxruntime against the torch model."""

import json
import os
import subprocess
import sys

import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from instyle.apps.cli import main  # noqa: E402
from instyle.engine.image import load_image, save_image  # noqa: E402
from instyle.engine.inference.export import STYLE_WEIGHTS, export_model, onnx_metadata  # noqa: E402
from instyle.engine.inference.onnx_runtime import OnnxStyleModel  # noqa: E402
from instyle.engine.inference.stylize import load_model  # noqa: E402

from .test_multi_style import multi_file  # noqa: E402

NAMES = ("wave", "udnie", "cezanne")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "multi.safetensors"
    multi_file(path, NAMES)
    return path


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def exported(request, model_file, tmp_path_factory):
    if request.param == "dynamo":
        pytest.importorskip("onnxscript")
    return export_model(model_file, tmp_path_factory.mktemp("onnx") / f"multi_{request.param}.onnx", exporter=request.param)


def test_the_graph_takes_the_image_and_the_style_weights_and_names_the_styles(exported):
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["image", STYLE_WEIGHTS]
    assert inputs[STYLE_WEIGHTS].type == "tensor(float)" and inputs[STYLE_WEIGHTS].shape[1] == len(NAMES)
    assert isinstance(inputs[STYLE_WEIGHTS].shape[0], str)  # 1 or N: dynamic
    meta = onnx_metadata(exported)
    assert json.loads(meta["styles"]) == list(NAMES) and meta["style_name"] == "multi"


@pytest.mark.parametrize("weights", [(0.0, 1.0, 0.0), (0.6, 0.4, 0.0), (0.2, 0.3, 0.5)])
def test_onnxruntime_matches_the_torch_model_for_a_style_and_a_mix(exported, model_file, weights):
    x = torch.rand(2, 3, 37, 45, generator=torch.Generator().manual_seed(1))
    model = OnnxStyleModel(exported)
    assert model.styles == NAMES
    got = model.run(x, weights)
    with torch.no_grad():
        expected = load_model(model_file).generator(x, torch.tensor(weights))
    assert got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-3


def test_each_image_of_a_batch_takes_its_own_weights(exported, model_file):
    x = torch.rand(2, 3, 24, 28, generator=torch.Generator().manual_seed(2))
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    got = OnnxStyleModel(exported).run(x, weights)
    generator = load_model(model_file).generator
    with torch.no_grad():
        for i in range(2):
            assert (got[i] - generator(x[i : i + 1], weights[i])[0]).abs().max().item() <= 1e-3


@pytest.mark.parametrize("weights", [None, (0.5, 0.5), ((1.0, 0.0, 0.0),) * 3, (0.5, float("nan"), 0.5)])
def test_style_weights_of_the_wrong_shape_are_a_clear_error(exported, weights):
    with pytest.raises(ValueError, match=STYLE_WEIGHTS) as error:
        OnnxStyleModel(exported).run(torch.rand(2, 3, 16, 16), weights)
    if weights is not None and len(weights) == 2:
        assert "(3,)" in str(error.value) and "wave, udnie, cezanne" in str(error.value)


def test_stylize_runtime_onnxruntime_runs_a_multi_style_model(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTYLE_HOME", str(tmp_path))
    image = torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(3))
    model = load_model(model_file)
    for style in ("udnie", {"wave": 3, "cezanne": 2}):
        expected = model.stylize(image, style=style, dtype="fp32")
        got = model.stylize(image, style=style, runtime="onnxruntime")
        assert (got - expected).abs().max().item() <= 1e-3
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1  # one graph for every style and mix


def test_cli_export_and_stylize_of_a_multi_style_model(model_file, tmp_path, monkeypatch):
    out = tmp_path / "multi.onnx"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "INSTYLE_HOME": str(tmp_path / "home")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "instyle", *map(str, a)], env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
    done = run("export", model_file, "--onnx", out, "--exporter", "torchscript")
    assert done.returncode == 0, done.stderr
    assert "wave, udnie, cezanne" in done.stdout and STYLE_WEIGHTS in done.stdout
    photo = tmp_path / "photo.png"
    save_image(torch.rand(3, 30, 34), photo)
    done = run("stylize", photo, "--model", model_file, "--style-mix", "wave=0.6,udnie=0.4", "--runtime", "onnxruntime", "-o", tmp_path / "o")
    assert done.returncode == 0, done.stderr
    expected = load_model(model_file).stylize(load_image(photo), style={"wave": 0.6, "udnie": 0.4}, dtype="fp32")
    assert (load_image(tmp_path / "o" / "photo_wave60+udnie40.png") - expected).abs().max().item() <= 2 / 255
