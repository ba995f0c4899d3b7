"""Texture synthesis from noise with a feed-forward ``TextureNet`` (Ulyanov et al. 2016).

``synthesize_texture(TextureConfig(style=...), size=512, seed=S)`` returns a texture of the
style image; each seed gives a different sample of the same texture. The first call for a
(style, configuration) pair trains a noise-only generator (``content_channels=0``) with the
style loss alone (Gram matrices of VGG features, Adam) and caches it as
``$INSTYLE_HOME/textures/<style sha256>-<config hash>.safetensors``; later calls load it.

The training loop is small on purpose: no content, no data set, no DDP and no resumable
checkpoints (a texture trains in minutes; an interrupted run just starts again). Loss,
extractor, model files, devices and the learning-rate schedule are the ones :mod:`instyle.engine.training`
uses. Library code: prints nothing, returns values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from instyle import __version__
from instyle.engine.config import (
    ConfigError, LossConfig, check_config, device_option, dtype_option, loss_defaults, nests_loss, option,
)
from instyle.engine.device import DeviceConfig
from instyle.engine.fileio import OutputError, check_writable_output
from instyle.engine.image import resize_long_side
from instyle.engine.losses import PerceptualLoss
from instyle.engine.modelfile import ModelFileError, load_generator, save_model
from instyle.engine.paths import HOME_ENV
from instyle.engine.weights import TRAIN_VGG_WEIGHTS, file_sha256 as sha256_file
from instyle.engine.models import TextureNet
from instyle.engine.models.vgg import VGGFeatures
from instyle.engine.targets import StyleSource, apply_targets, check_targets, resolve_style, adopt_target_weights
from instyle.engine.training import TrainingError, cosine_lr, stored_style_size

# the generator's own bounds (those a model file may hold)
_SETTING = {setting.name: setting for setting in TextureNet.SETTINGS}
CACHE_SUBDIR = "textures"
DEFAULT_STYLE_SIZE = 384
# The settings that shape the trained generator, by their names before LossConfig (the cache key
# of generators cached then stays theirs); the style image is hashed on its own.
_HASHED = (
    "iterations", "batch_size", "train_size", "style_size", "style_layers", "style_weight", "tv_weight", "lr",
    "lr_final_fraction", "num_scales", "channels", "noise_channels", "norm", "train_seed",
)  # fmt: skip

# Style only: the content fields of the loss are unused. The style weight is the ImageNet VGG-19's;
# the HED VGG-16 needs 8x (1e5, scaled by adopt_target_weights).
_TEXTURE_LOSS = loss_defaults(
    vgg_weights=TRAIN_VGG_WEIGHTS, content_layers=(), content_weight=0.0,
    style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), style_weight=1.25e4, tv_weight=0.0,
    style_weight_network=TRAIN_VGG_WEIGHTS,
)  # fmt: skip


@nests_loss
@dataclass
class TextureConfig:
    """One source of defaults, help and bounds: the CLI derives its flags from these fields. The
    loss fields may also be given flat (``TextureConfig(style_weight=1e4)``)."""

    style: str = option("", help="a style image, a bundled style name, or a model file with style targets")
    # CPU-sized defaults (the figures: docs/performance.md#texture-defaults); raise them on a GPU.
    iterations: int = option(1000, min=1, help="training steps of the texture generator")
    batch_size: int = option(1, min=1, help="textures generated per training step")
    train_size: int = option(128, min=1, help="side of the square textures generated while training")
    # the long side of the style image sets the scale of the texture's elements
    style_size: int | None = option(
        None, min=1, metavar="STYLE_SIZE",
        help=f"style image long side (default: {DEFAULT_STYLE_SIZE}, or the size of stored style targets)",
    )  # fmt: skip
    loss: LossConfig = option(
        default_factory=_TEXTURE_LOSS, help="the style loss; its weight is for imagenet-vgg19 and becomes 1e5 on hed-vgg16"
    )
    lr: float = option(2e-2, above=0, help="Adam learning rate")
    lr_final_fraction: float = option(0.1, min=0, help="the learning rate decays on a cosine to lr x this")
    num_scales: int = option(5, min=_SETTING["num_scales"].low, max=_SETTING["num_scales"].high, help="scales of the multi-scale generator (each halves the resolution)")
    channels: int = option(8, min=_SETTING["channels"].low, max=_SETTING["channels"].high, help="channels per scale of the generator")
    noise_channels: int = option(3, min=1, max=_SETTING["noise_channels"].high, help="noise channels fed in at each scale")
    norm: str = option("instance", choices=("instance", "batch", "none"), help="normalization in the generator")
    # the sampling seed is synthesize_texture's
    train_seed: int = option(0, help="seed of the generator training (the sampling seed is --seed)")
    device: str = device_option()
    # auto: bf16 autocast on CUDA (NCHW), bf16 autocast + channels_last on CPUs with native bf16, else fp32
    dtype: str = dtype_option("compute precision of training")

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["loss"] = self.loss.to_json()
        return data


@dataclass
class TextureTrainResult:
    model: TextureNet
    losses: dict[str, float]
    history: list[dict[str, float]]
    seconds: float


@dataclass
class TextureResult:
    image: Tensor  # (3, H, W) float32 in [0, 1], on the CPU
    model_path: Path
    trained: bool  # False: the cached generator was loaded
    train_seconds: float
    seconds: float  # the whole call, training included


def _check_config(config: TextureConfig) -> None:
    if not config.style:
        raise ConfigError("style", "is required: a style image, a bundled style name or a model file with style targets")
    check_config(config)


def resolve_style_size(config: TextureConfig) -> tuple[TextureConfig, StyleSource]:
    """The config with its style size filled in, and the style: an image (default size 384) or stored
    style targets (their size; a different explicit ``style_size`` is an error)."""
    _check_config(config)
    source = resolve_style(config.style)
    config = adopt_target_weights(config, source)
    if source.targets is not None:
        return dataclasses.replace(config, style_size=stored_style_size(source, config.style, config.style_size)), source
    return dataclasses.replace(config, style_size=config.style_size or DEFAULT_STYLE_SIZE), source


def build_texture_net(config: TextureConfig) -> TextureNet:
    return TextureNet(
        num_scales=config.num_scales,
        channels=config.channels,
        noise_channels=config.noise_channels,
        content_channels=0,
        norm=config.norm,
    )


def _extractor_sha(extractor: torch.nn.Module) -> str | None:
    return getattr(extractor, "weights_sha256", None)


def config_hash(config: TextureConfig, autocast: torch.dtype | None, extractor_sha: str | None) -> str:
    """16 hex digits naming everything that shapes the trained generator except the style
    image (hashed on its own): the training fields, the autocast dtype actually used ("auto"
    resolved) and the extractor's weights."""
    settings = {**config.to_json(), **config.loss.to_json()}
    key = {k: settings[k] for k in _HASHED}
    key["autocast"] = str(autocast) if autocast is not None else "fp32"
    key["extractor"] = extractor_sha
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def texture_cache_dir() -> Path:
    from instyle.engine.paths import cache_dir

    return cache_dir() / CACHE_SUBDIR


def train_texture(
    config: TextureConfig,
    *,
    extractor: torch.nn.Module | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TextureTrainResult:
    """Train a noise-only ``TextureNet`` on the style loss of ``config.style`` (an image or stored
    style targets); ``extractor`` replaces the VGG (tests). Deterministic for a given ``train_seed`` on CPU."""
    config, source = resolve_style_size(config)
    dc = DeviceConfig.resolve(config.device, config.dtype, "train")
    device, memory_format = dc.device, dc.memory_format

    loss_fn = PerceptualLoss.from_config(config.loss, extractor).to(device, memory_format=memory_format)
    if source.targets is not None:
        apply_targets(loss_fn, source.targets, what=f"style {config.style}")
    else:
        style_image = resize_long_side(source.image, config.style_size)
        with dc.autocast_context():
            loss_fn.set_style(style_image.unsqueeze(0).to(device))

    torch.manual_seed(config.train_seed)
    model = build_texture_net(config).to(device, memory_format=memory_format)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr(config))
    size = (config.train_size, config.train_size)
    history: list[dict[str, float]] = []
    losses: dict[str, float] = {}
    start = time.perf_counter()
    for step in range(1, config.iterations + 1):
        # The noise of a step depends only on (train_seed, step).
        noise_generator = torch.Generator().manual_seed(config.train_seed * 1_000_003 + step)
        with dc.autocast_context():
            textures = model(None, size=size, batch_size=config.batch_size, generator=noise_generator)
            total, terms = loss_fn(textures)
        if not torch.isfinite(total):
            raise TrainingError(f"texture loss became {float(total)} at step {step}; nothing was saved")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        losses = {"total": total.item(), "style": terms["style"].item(), "tv": terms["tv"].item()}
        history.append({"step": step, **losses})
        if on_step is not None:
            on_step(step, losses)
    model.eval()
    return TextureTrainResult(model.to(memory_format=torch.contiguous_format), losses, history, time.perf_counter() - start)


def _check_cache_writable(folder: Path) -> None:
    """The generator is cached once trained: a cache that cannot take it is refused before training."""
    try:
        check_writable_output(folder, field="cache", folder=True, make_parents=True)
    except OutputError as error:
        raise TrainingError(
            f"cannot cache the texture generator in {error.reason}; set {HOME_ENV} to a writable folder"
        ) from error


def load_or_train_texture(
    config: TextureConfig,
    *,
    retrain: bool = False,
    extractor: torch.nn.Module | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[TextureNet, Path, TextureTrainResult | None]:
    """The cached generator for ``config`` (style and configuration), training and caching
    it first when there is none, when ``retrain`` is set, or when the cached file is unusable.
    Returns ``(model, path, result)``; ``result`` is None when the cache was used."""
    config, source = resolve_style_size(config)
    dc = DeviceConfig.resolve(config.device, config.dtype, "train")
    if extractor is None:
        extractor = VGGFeatures(config.loss.style_layers, weights=config.loss.vgg_weights)
    if source.targets is not None:
        check_targets(source.targets, config.loss.style_layers, extractor, f"style {config.style}")
        style_key = f"targets-{source.targets.digest()[:32]}"  # the statistics themselves name the style
    else:
        style_key = sha256_file(source.path)
    style_sha = source.style_sha256
    path = texture_cache_dir() / f"{style_key}-{config_hash(config, dc.autocast, _extractor_sha(extractor))}.safetensors"
    if path.exists() and not retrain:
        try:
            model, _ = load_generator(path)
        except ModelFileError:
            pass  # a corrupt cache entry is rebuilt below
        else:
            if isinstance(model, TextureNet) and model.config["content_channels"] == 0:
                return model, path, None
    _check_cache_writable(path.parent)
    result = train_texture(config, extractor=extractor, on_step=on_step)
    metadata = {
        "texture": config.to_json(),
        "style_name": source.name,
        "style_sha256": style_sha,
        "style_source": source.to_json(),
        "vgg_weights_sha256": _extractor_sha(extractor),
        "final_losses": result.losses,
        "iterations": config.iterations,
        "device": dc.device.type,
        "precision": dc.precision,
        "instyle_version": __version__,
    }
    save_model(result.model, path, metadata)
    return result.model, path, result


@torch.no_grad()
def sample_texture(
    model: TextureNet, size: tuple[int, int], seed: int, *, device: str = "auto", dtype: str = "fp32"
) -> Tensor:
    """One (3, H, W) texture from ``model``; the noise depends only on ``seed`` (drawn on the
    CPU), so a seed gives the same sample on every device, up to the dtype's rounding."""
    dc = DeviceConfig.resolve(device, dtype, "inference")
    model = model.to(dc.device, memory_format=dc.memory_format).eval()
    with dc.autocast_context():
        out = model(None, size=size, generator=torch.Generator().manual_seed(seed))
    out = out.float()
    if not torch.isfinite(out).all():
        raise RuntimeError("the texture generator produced NaN or inf values; nothing was written")
    return out[0].clamp(0, 1).cpu().contiguous()


def synthesize_texture(
    config: TextureConfig,
    size: int | tuple[int, int],
    seed: int,
    *,
    retrain: bool = False,
    sample_dtype: str = "fp32",
    extractor: torch.nn.Module | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TextureResult:
    """A ``size`` (side, or (H, W)) texture of ``config.style`` for ``seed``, training and
    caching the generator on first use."""
    start = time.perf_counter()
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in hw):
        raise ValueError(f"size must be a positive integer (or (H, W)), got {size!r}")
    model, path, result = load_or_train_texture(config, retrain=retrain, extractor=extractor, on_step=on_step)
    image = sample_texture(model, hw, seed, device=config.device, dtype=sample_dtype)
    return TextureResult(
        image, path, result is not None, result.seconds if result else 0.0, time.perf_counter() - start
    )

