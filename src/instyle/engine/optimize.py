"""The Gatys et al. optimisation: L-BFGS (or Adam) on the pixels of one image against VGG
content and style losses. The slow, exact baseline the fast generators are measured against.

``optimize(content, style, ...)`` returns an ``OptimizeResult``; it prints nothing (pass
``on_iteration`` for progress).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from instyle.engine.color import PRESERVE_COLOR, preserve_color
from instyle.engine.config import (
    ConfigError, LossConfig, check_config, device_option, dtype_option, loss_defaults, nests_loss, option,
)
from instyle.engine.device import DeviceConfig
from instyle.engine.image import load_image, resize_long_side
from instyle.engine.losses import PerceptualLoss
from instyle.engine.models.vgg import VGGFeatures
from instyle.engine.targets import (
    StyleSource, StyleTargets, adopt_target_weights, check_targets, compute_style_targets, resolve_style,
)  # fmt: skip

VGG_WEIGHTS_ENV = "INSTYLE_VGG_WEIGHTS"


def _default_network() -> str:
    """optimize's loss network: ``$INSTYLE_VGG_WEIGHTS`` when set (a weight file), else the HED VGG-16."""
    override = os.environ.get(VGG_WEIGHTS_ENV)
    return os.path.expanduser(override) if override else "hed-vgg16"


# The weights follow jcjohnson/neural-style (Gram / (C*H*W), MSE, Caffe-convention VGG), whose
# defaults are content 5 and style 100, on the HED VGG-16.
_OPTIMIZE_LOSS = loss_defaults(
    vgg_weights=_default_network, content_layers=("relu4_2",),
    style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), content_weight=5.0, style_weight=100.0,
    tv_weight=1e2, style_weight_network="hed-vgg16",
)  # fmt: skip


@nests_loss
@dataclass
class OptimizeConfig:
    """One source of defaults, help and bounds for ``instyle optimize`` and ``instyle.optimize``.
    The loss fields may also be given flat (``OptimizeConfig(style_weight=30)``)."""

    size: int = option(512, min=16, help="long side of the output")
    iterations: int = option(
        500, min=1, help="optimizer steps per scale (L-BFGS also stops at 1.25 x this many loss evaluations)"
    )
    optimizer: str = option("lbfgs", choices=("lbfgs", "adam"), help="L-BFGS (Gatys et al.) or Adam")
    lr: float = option(1.0, help="L-BFGS step size; Adam uses lr x 0.02 on [0, 1] pixels")
    init: str = option("content", choices=("content", "noise"), help="start image")
    loss: LossConfig = option(default_factory=_OPTIMIZE_LOSS, help="the perceptual loss")
    style_scale: float = option(1.0, above=0, help="style image long side as a multiple of --size")
    style_blend: tuple[float, ...] | None = option(
        None, flag=False, help="weights per style image, e.g. 0.7,0.3 (default: equal)"
    )
    scales: int = option(1, min=1, help="coarse-to-fine: optimize at size / 2^(N-1) first, then double")
    preserve_color: str = option(
        "none", choices=PRESERVE_COLOR,
        help="keep the content's colours: luminance transfer, mean/covariance colour transfer or per-channel "
        "histogram matching",
    )
    seed: int = option(0, help="seed of the noise start")
    device: str = device_option()
    # auto: bf16 ends where fp32 does, sooner (docs/performance.md#optimize-lbfgs)
    dtype: str = dtype_option()
    # With a strong-Wolfe line search every L-BFGS step lowers the loss and every curvature pair it
    # keeps is sound. Fixed steps of lr (neural-style's L-BFGS) overshoot this loss by orders of
    # magnitude now and then, fill the memory with those pairs and can stall (docs/performance.md#optimize-lbfgs).
    line_search: str | None = option(
        "strong_wolfe", choices=("strong_wolfe",), flag=False,
        help="L-BFGS line search: strong_wolfe, or None for fixed steps of lr (neural-style's L-BFGS)",
    )  # fmt: skip
    # Free pixels drift out of range where that lowers the loss, and clamping them only at the end
    # undid it; benchmarks/bench_optimize_quality.py measures both (docs/performance.md#optimize-lbfgs).
    clamp_pixels_in_loss: bool = option(
        True, flag=False, help="the loss sees the pixels clamped to [0, 1], as the saved image has them"
    )


@dataclass
class OptimizeResult:
    image: Tensor  # (3, H, W) in [0, 1]
    config: OptimizeConfig
    initial_losses: dict[str, float]
    final_losses: dict[str, float]
    seconds: float
    weights_sha256: str
    history: list[dict[str, float]] = field(default_factory=list)
    styles: list[dict] = field(default_factory=list)  # what each style was: an image, or stored targets
    precision: str = "fp32"  # the resolved compute precision (dtype "auto" settled)

    def summary(self) -> dict:
        return {
            "settings": asdict(self.config),
            "precision": self.precision,
            "weights_sha256": self.weights_sha256,
            "initial_losses": self.initial_losses,
            "final_losses": self.final_losses,
            "seconds": self.seconds,
            "size": list(self.image.shape[-2:]),
            "styles": self.styles,
        }


def _validate(config: OptimizeConfig, n_styles: int) -> None:
    """The declared bounds, then what they cannot say: the blend against the number of styles."""
    check_config(config)
    if config.style_blend is not None:
        if len(config.style_blend) != n_styles:
            raise ConfigError("style_blend", f"has {len(config.style_blend)} weights for {n_styles} style images")
        if any(w < 0 for w in config.style_blend) or sum(config.style_blend) <= 0:
            raise ConfigError("style_blend", f"weights must be non-negative with a positive sum: {config.style_blend}")


def _style_source(style) -> StyleSource:
    """A path (an image, a bundled style name or a model file with style targets), stored targets,
    or an image (tensor, PIL image, bytes, array)."""
    if isinstance(style, StyleSource):
        return style
    if isinstance(style, StyleTargets):
        return StyleSource(style.style_name, style.style_name, path=style.source, targets=style)
    if isinstance(style, (str, os.PathLike)):
        return resolve_style(style)
    image = style if isinstance(style, Tensor) else load_image(style)
    return StyleSource("<image>", "image", image=image)


def _blended_targets(sources, config, style_size, extractor, device) -> dict[str, Tensor]:
    """The blended Gram targets when any style comes as stored targets; images are computed at
    ``style_size``, stored targets keep the size they were computed at."""
    if config.style_blend is None:
        blend = [1.0 / len(sources)] * len(sources)
    else:
        blend = [w / sum(config.style_blend) for w in config.style_blend]
    layers = config.loss.style_layers
    blended: dict[str, Tensor] = {}
    for source, w in zip(sources, blend):
        if source.targets is not None:
            grams = source.targets.grams
        else:
            grams = compute_style_targets(
                source.image, style_size=style_size, layers=layers, extractor=extractor,
                style_name=source.name, style_sha256=None, device=device,
            ).grams  # fmt: skip
        for layer in layers:
            g = grams[layer].to(device) * w
            blended[layer] = g if layer not in blended else blended[layer] + g
    return blended


def _loss_network(config: OptimizeConfig, extractor, dc: DeviceConfig, sources) -> torch.nn.Module:
    """The VGG of the loss (``extractor`` when given), on the device, checked against stored targets."""
    loss = config.loss
    if extractor is None:
        extractor = VGGFeatures(tuple(loss.content_layers) + tuple(loss.style_layers), weights=loss.vgg_weights)
    extractor = extractor.to(dc.device, memory_format=dc.memory_format)
    for source in sources:
        if source.targets is not None:
            check_targets(source.targets, loss.style_layers, extractor, f"style {source.spec}")
    return extractor


def _scale_loss(config, extractor, dc: DeviceConfig, sources, target: Tensor, size: int) -> PerceptualLoss:
    """The loss at one scale: the style at ``size * style_scale`` (stored targets at their own size)
    and the content ``target``."""
    style_size = max(16, round(size * config.style_scale))
    loss_fn = PerceptualLoss.from_config(config.loss, extractor)
    with dc.autocast_context():
        if any(source.targets is not None for source in sources):
            loss_fn.set_style_targets(
                _blended_targets(sources, config, style_size, extractor, dc.device),
                vgg_weights_sha256=getattr(extractor, "weights_sha256", None), source="the blended style targets",
            )  # fmt: skip
        else:
            loss_fn.set_style([resize_long_side(s.image, style_size).to(dc.device) for s in sources], config.style_blend)
        loss_fn.set_content(target)
    return loss_fn


def _start_image(previous: Tensor | None, target: Tensor, config: OptimizeConfig) -> Tensor:
    """The pixels a scale starts from: the content or seeded noise, else the previous scale's result.
    They stay NCHW (L-BFGS flattens their gradient with .view); the VGG input is converted to the
    fast layout inside the closure."""
    if previous is None and config.init == "content":
        image = target.clone()
    elif previous is None:
        image = torch.rand(target.shape, generator=torch.Generator().manual_seed(config.seed)).to(target.device)
    else:  # coarse-to-fine: start from the previous scale's result
        image = F.interpolate(previous, size=target.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    return image.detach().contiguous().requires_grad_(True)


@dataclass
class _Record:
    """The losses seen so far: the first evaluation's, and one row per evaluation."""

    on_iteration: Callable[[int, int, dict[str, float]], None] | None
    initial: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def _closure(image, optimizer, loss_fn, config, dc: DeviceConfig, record: _Record, scale_index: int, size: int):
    count = [0]

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        pixels = image.clamp(0, 1) if config.clamp_pixels_in_loss else image
        with dc.autocast_context():
            total, terms = loss_fn(pixels.contiguous(memory_format=dc.memory_format))
        total.backward()
        count[0] += 1
        # the step this evaluation belongs to: L-BFGS's line search may evaluate a step more than once
        step = optimizer.state[image].get("n_iter", 0) if config.optimizer == "lbfgs" else count[0]
        losses = {"total": total.item(), **{k: v.item() for k, v in terms.items()}}
        if not math.isfinite(losses["total"]):
            raise RuntimeError(f"loss became {losses['total']} at iteration {step} (scale {size} px)")
        if not record.initial and scale_index == 0:
            record.initial.update(losses)
        record.history.append({"scale": size, "iteration": step, "evaluation": count[0], **losses})
        if record.on_iteration is not None:
            record.on_iteration(scale_index, step, losses)
        return total

    return closure


def _run_scale(image: Tensor, loss_fn, config, dc: DeviceConfig, record: _Record, scale_index: int, size: int) -> None:
    """Optimize ``image`` in place at one scale."""
    if config.optimizer == "lbfgs":
        optimizer = torch.optim.LBFGS(
            [image], lr=config.lr, max_iter=config.iterations, max_eval=config.iterations * 5 // 4,
            history_size=50, tolerance_grad=-1, tolerance_change=-1, line_search_fn=config.line_search,
        )  # fmt: skip
        optimizer.step(_closure(image, optimizer, loss_fn, config, dc, record, scale_index, size))
    else:
        optimizer = torch.optim.Adam([image], lr=config.lr * 0.02)
        closure = _closure(image, optimizer, loss_fn, config, dc, record, scale_index, size)
        for _ in range(config.iterations):
            optimizer.step(closure)


def _final(image: Tensor, content: Tensor, loss_fn, config, dc: DeviceConfig) -> tuple[Tensor, dict[str, float]]:
    """The image returned (clamped, colours preserved) and its losses, which the optimizer's last
    evaluation need not be (a line search trial, the point before Adam's last update, or before
    the colour preservation)."""
    result = preserve_color(image.detach().clamp(0, 1), content, config.preserve_color)
    with torch.no_grad(), dc.autocast_context():
        total, terms = loss_fn(result.contiguous(memory_format=dc.memory_format))
    return result, {"total": total.item(), **{k: v.item() for k, v in terms.items()}}


def optimize(
    content,
    style,
    config: OptimizeConfig | None = None,
    *,
    extractor: torch.nn.Module | None = None,
    on_iteration: Callable[[int, int, dict[str, float]], None] | None = None,
    **overrides,
) -> OptimizeResult:
    """Stylize ``content`` with one or several styles: images (paths, PIL images or tensors), bundled
    style names or model files with style targets, or :class:`~instyle.engine.modelfile.StyleTargets`.

    Stored style targets keep the style size they were computed at (``style_scale`` applies to
    images only). ``overrides`` replace fields of ``config`` (e.g. ``iterations=100``; the loss fields
    flat, e.g. ``style_weight=30``). ``extractor`` replaces the VGG (tests pass a tiny stand-in).
    """
    config = dataclasses.replace(config or OptimizeConfig(), **overrides)
    styles: Sequence = style if isinstance(style, (list, tuple)) else [style]
    _validate(config, len(styles))
    dc = DeviceConfig.resolve(config.device, config.dtype, "train")
    torch.manual_seed(config.seed)

    content_full = load_image(content) if not isinstance(content, Tensor) else content
    sources = [_style_source(s) for s in styles]
    config = adopt_target_weights(config, *sources)
    extractor = _loss_network(config, extractor, dc, sources)
    record = _Record(on_iteration)
    start = time.perf_counter()
    image: Tensor | None = None
    sizes = [max(16, round(config.size / 2 ** (config.scales - 1 - k))) for k in range(config.scales)]
    for scale_index, size in enumerate(sizes):
        target = resize_long_side(content_full, size).unsqueeze(0).to(dc.device)  # (1, 3, H, W)
        loss_fn = _scale_loss(config, extractor, dc, sources, target, size)
        image = _start_image(image, target, config)
        _run_scale(image, loss_fn, config, dc, record, scale_index, size)
    assert image is not None
    content_last = resize_long_side(content_full, sizes[-1]).unsqueeze(0).to(dc.device)
    result, final = _final(image, content_last, loss_fn, config, dc)
    return OptimizeResult(
        result[0].float().cpu(), config, record.initial, final, time.perf_counter() - start,
        getattr(extractor, "weights_sha256", "") or "", record.history, [source.to_json() for source in sources],
        dc.precision,
    )  # fmt: skip
