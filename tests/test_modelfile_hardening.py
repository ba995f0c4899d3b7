"""Model files and ONNX exports as untrusted input (issue #17): stored settings are bounded and checked
against the weights the header lists before anything is built; the ONNX cache checks the source hash
a cached file records; a failed export names the file asked for."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from instyle.engine.modelfile import FORMAT, ModelFileError, load_generator, read_model_file, save_model
from instyle.engine.models import TransformerNet

# The issue's two files: 1.7 KB that asked for ~7.8 GB, and 16 s and 0.9 GB spent before "missing keys".
ISSUE_CONFIGS = {
    "wide": ({"arch": "transformer_net", "width": 64.0, "num_residual": 1}, "config.width must be a number from"),
    "deep": ({"arch": "transformer_net", "num_residual": 20000, "width": 0.03125}, "config.num_residual must be an integer from"),
}


def craft(path, config, tensors=None):
    """A real safetensors file with an instyle header around ``tensors`` (one dummy by default)."""
    header = {"format": FORMAT, "format_version": "1", "config": json.dumps(config), "instyle": json.dumps({"style_name": "x"})}
    save_file(tensors if tensors is not None else {"dummy": torch.zeros(4)}, str(path), metadata=header)
    return path


@pytest.fixture(params=sorted(ISSUE_CONFIGS))
def issue_file(request, tmp_path):
    config, message = ISSUE_CONFIGS[request.param]
    return craft(tmp_path / f"{request.param}.safetensors", config), message


def _never_built(monkeypatch):
    """Make building any generator fail the test: a refusal must come before the build."""
    import instyle.engine.models as models

    def built(config):
        raise AssertionError(f"a generator was built for {config}")

    monkeypatch.setattr(models, "generator_from_config", built)


def test_issue_files_are_refused_before_anything_is_built(issue_file, monkeypatch):
    path, message = issue_file
    _never_built(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=message) as error:
        load_generator(path)
    assert time.perf_counter() - start < 1.0  # was 16 s (or a MemoryError) building the network
    assert str(path) in str(error.value)


@pytest.mark.parametrize("command", ["stylize", "export", "serve"])
def test_cli_refuses_issue_files_in_one_line(command, issue_file, tmp_path):
    """`instyle stylize`, `instyle export` and `instyle serve --model` load through the same checks:
    one line naming the file and the setting, exit 2, nothing written, no traceback."""
    path, message = issue_file
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"")  # never opened: the model is refused first
    out = tmp_path / "out"
    argv = {
        "stylize": ["stylize", str(photo), "--model", str(path), "-o", str(out)],
        "export": ["export", str(path), "--onnx", str(out / "x.onnx")],
        "serve": ["serve", "--model", str(path), "--port", "0"],
    }[command]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "instyle", *argv], capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"instyle {command}: error: model file {path} is not usable: ")
    assert message in lines[0]
    assert not out.exists()
    assert elapsed < 30  # the interpreter and torch starting; building the deep network alone took 16 s


def _tiny_state() -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in TransformerNet(width=0.25, num_residual=1).state_dict().items()}


TINY = {"arch": "transformer", "norm": "instance", "width": 0.25, "num_residual": 1}


@pytest.mark.parametrize("change, message", [
    (lambda s: {"dummy": torch.zeros(1)}, r"unexpected keys \['dummy'\]"),
    (lambda s: {k: v for k, v in s.items() if not k.startswith("residual.")}, r"missing keys \['residual.0.conv1.conv.weight'"),
    (lambda s: {**s, "extra.weight": torch.zeros(2)}, r"unexpected keys \['extra.weight'\]"),
    (lambda s: {**s, "head.conv.weight": torch.zeros(3, 8, 9, 8)}, r"head.conv.weight: \(3, 8, 9, 8\) instead of \(3, 8, 9, 9\)"),
    (lambda s: {**s, "head.conv.bias": torch.zeros(3, dtype=torch.int32)}, "head.conv.bias is stored as I32, not floating point"),
])  # fmt: skip
def test_weights_are_checked_against_the_config_from_the_header(tmp_path, monkeypatch, change, message):
    path = craft(tmp_path / "m.safetensors", TINY, change(_tiny_state()))
    _never_built(monkeypatch)
    with pytest.raises(ModelFileError, match=message) as error:
        read_model_file(path)
    assert str(path) in str(error.value) and "do not match the generator config" in str(error.value)


@pytest.mark.parametrize("config, message", [
    ({**TINY, "norm": "adain"}, "config.norm must be one of"),
    ({**TINY, "norm": "conditional_instance"}, "config.num_styles must be an integer from 1 to 1024, got None"),
    ({**TINY, "depth": 2}, "unknown keys: depth"),
    ({**TINY, "num_residual": 1.0}, "config.num_residual must be an integer"),
    ({**TINY, "arch": "gan"}, "unknown architecture 'gan'"),
    ({"arch": "texture", "num_scales": 5000}, "config.num_scales must be an integer from 1 to 10"),
    ({"arch": "texture_net", "channels": 2.5}, "config.channels must be an integer"),
])  # fmt: skip
def test_bad_settings_name_the_file_and_the_setting(tmp_path, monkeypatch, config, message):
    path = craft(tmp_path / "m.safetensors", config, _tiny_state())
    _never_built(monkeypatch)
    with pytest.raises(ModelFileError, match=message) as error:
        load_generator(path)
    assert str(error.value).startswith(f"model file {path} is not usable: ")


def test_a_good_file_still_loads_and_batch_norm_counters_stay_integers(tmp_path):
    for norm in ("instance", "batch", "none"):
        net = TransformerNet(norm=norm, width=0.25, num_residual=1)
        save_model(net, tmp_path / f"{norm}.safetensors", {"style_name": norm}, dtype=torch.float16)
        loaded, metadata = load_generator(tmp_path / f"{norm}.safetensors")
        assert loaded.config == net.config and metadata["style_name"] == norm
    counters = craft(tmp_path / "float_counter.safetensors", {**TINY, "norm": "batch"},
                     {k: v.float() for k, v in TransformerNet(norm="batch", width=0.25, num_residual=1).state_dict().items()})  # fmt: skip
    with pytest.raises(ModelFileError, match="num_batches_tracked is stored as F32, not integer"):
        load_generator(counters)


def test_nothing_is_saved_that_would_not_load(tmp_path):
    class Bigger(TransformerNet):  # more state than its config describes
        def __init__(self, **kw):
            super().__init__(**kw)
            self.extra = torch.nn.Parameter(torch.zeros(2))

    out = tmp_path / "bigger.safetensors"
    with pytest.raises(ModelFileError, match=r"refusing to save .*bigger.safetensors.*unexpected keys \['extra'\]"):
        save_model(Bigger(width=0.25, num_residual=1), out, {"style_name": "bigger"})
    assert not out.exists()


# --- the ONNX cache -----------------------------------------------------------------------------------------------
def test_onnx_cache_rebuilds_a_file_of_another_style(tmp_path, monkeypatch):
    """A valid ONNX export of cezanne copied over udnie's cache entry is not used: its recorded
    source hash is not udnie's, so the entry is exported again."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from instyle.engine.catalog import resolve_model_path
    from instyle.engine.inference.export import cached_onnx_path, export_model, onnx_metadata
    from instyle.engine.inference.onnx_runtime import OnnxStyleModel
    from instyle.engine.inference.stylize import load_model
    from instyle.engine.weights import file_sha256

    monkeypatch.setenv("INSTYLE_HOME", str(tmp_path))
    udnie = resolve_model_path("udnie")
    cached = cached_onnx_path(udnie)
    cached.parent.mkdir(parents=True)
    export_model("cezanne", tmp_path / "cezanne.onnx", exporter="torchscript")
    shutil.copyfile(tmp_path / "cezanne.onnx", cached)
    image = torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(0))
    wrong = OnnxStyleModel(cached, threads=1).run(image[None])[0]

    got = load_model("udnie").stylize(image, runtime="onnxruntime")
    expected = load_model("udnie").stylize(image, dtype="fp32")
    assert (got - expected).abs().max().item() <= 1e-3
    assert (wrong - expected).abs().max().item() > 0.05  # the copied file really is another style
    assert onnx_metadata(cached)["source_sha256"] == file_sha256(udnie)
    assert cached.read_bytes() != (tmp_path / "cezanne.onnx").read_bytes()


# --- export's errors ---------------------------------------------------------------------------------------------
@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write in: a read-only tmpfs as root (for whom modes do not count), else 0o555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]).returncode:
        pytest.skip("mounting a read-only tmpfs failed")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("where", ["out.onnx", "sub/out.onnx"])
def test_export_into_a_read_only_folder_names_the_output(read_only_folder, where):
    out = read_only_folder / where
    result = subprocess.run(
        [sys.executable, "-m", "instyle", "export", "cezanne", "--onnx", str(out), "--exporter", "torchscript"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and ".tmp" not in result.stderr
    assert result.stderr.strip() == f"instyle export: error: cannot write {out}: Read-only file system" or (
        os.geteuid() != 0 and result.stderr.strip() == f"instyle export: error: cannot write {out}: Permission denied"
    ), result.stderr
    assert list(read_only_folder.iterdir()) == []


def test_an_adain_decoder_is_not_taken_for_a_style_generator(tmp_path):
    """AdaIN's decoder is a model file too (its settings bounded like a generator's), but it
    stylizes only with its encoder: `stylize --model` refuses it in one line, naming the file."""
    from instyle.engine.models import AdaINDecoder

    decoder = AdaINDecoder(blocks=((8,), (4, 4), (16,)))
    path = tmp_path / "decoder.safetensors"
    save_model(decoder, path, {"style_name": "adain"})
    loaded, _ = load_generator(path, archs=("adain-decoder",))
    assert loaded.config == decoder.config
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"")  # never opened: the model is refused first
    argv = ["stylize", str(photo), "--model", str(path), "-o", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-m", "instyle", *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"model file {path} holds a network of architecture 'adain-decoder'" in result.stderr
    assert not (tmp_path / "out").exists()
