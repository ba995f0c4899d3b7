"""The Gatys et al. optimisation: L-BFGS (or Adam) on the pixels of one image against VGG
content and style losses. The slow, exact baseline the fast generators are measured against.

``optimize(content, style, ...)`` returns an ``OptimizeResult``; it prints nothing (pass
``on_iteration`` for progress).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from instyle.engine.color import PRESERVE_COLOR, preserve_color
from instyle.engine.image import load_image, resize_long_side
from instyle.engine.losses import PerceptualLoss
from instyle.engine.models.vgg import VGGFeatures
from instyle.engine.device import preferred_memory_format, resolve_autocast_dtype, resolve_device
from instyle.engine.weights import VGG_WEIGHTS_HELP
from instyle.engine.targets import (
    StyleSource, StyleTargets, check_targets, compute_style_targets, resolve_style, adopt_target_weights,
)  # fmt: skip

# With a strong-Wolfe line search every L-BFGS step lowers the loss and every curvature pair it
# keeps is sound. Fixed steps of lr (neural-style's L-BFGS; None here) overshoot this loss by
# orders of magnitude now and then, fill the memory with those pairs and can stall: amber.jpg with
# Starry Night at 512 px barely moved in 500 fp32 steps. Their last step is never evaluated, so it
# may also be an overshoot.
LBFGS_LINE_SEARCH: str | None = "strong_wolfe"
# The loss sees the pixels clamped to [0, 1], as the saved image has them. Free pixels drift out of
# range where that lowers the loss, and clamping them at the end undid it: the saved image's loss
# was up to 38 times the reported one at 512 px. benchmarks/bench_optimize_quality.py measures both.
CLAMP_PIXELS_IN_LOSS = True


@dataclass
class OptimizeConfig:
    """One source of defaults for ``instyle optimize`` and ``instyle.optimize``.

    The weights follow jcjohnson/neural-style (Gram / (C*H*W), MSE, Caffe-convention VGG),
    whose defaults are content 5 and style 100.
    """

    size: int = 512  # long side of the output
    iterations: int = 500  # per scale
    optimizer: str = field(default="lbfgs", metadata={"choices": ("lbfgs", "adam")})
    lr: float = 1.0  # lbfgs step; adam uses lr * 0.02 on [0, 1] pixels
    init: str = field(default="content", metadata={"choices": ("content", "noise")})
    content_weight: float = 5.0
    style_weight: float = 100.0
    tv_weight: float = 1e2
    style_scale: float = 1.0  # style image long side = size * style_scale
    style_blend: tuple[float, ...] | None = None  # one weight per style image; default equal
    scales: int = 1  # coarse-to-fine: the first scale is size / 2^(scales - 1)
    preserve_color: str = field(default="none", metadata={"choices": PRESERVE_COLOR})
    content_layers: tuple[str, ...] = ("relu4_2",)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    seed: int = 0
    device: str = "auto"
    # auto: bf16 ends where fp32 does, 2.2x sooner on a 2-core CPU with AMX (bench_optimize_quality.py)
    dtype: str = field(default="auto", metadata={"choices": ("auto", "fp32", "bf16", "fp16")})
    vgg_weights: str | None = None

    # the --help text of each flag
    FLAG_HELP: ClassVar[dict[str, str]] = {
        "size": "long side of the output",
        "iterations": "optimizer steps per scale (L-BFGS also stops at 1.25 x this many loss evaluations)",
        "optimizer": "L-BFGS (Gatys et al.) or Adam",
        "lr": "L-BFGS step size; Adam uses lr x 0.02 on [0, 1] pixels",
        "init": "start image",
        "content_weight": "content loss weight",
        "style_weight": "style loss weight",
        "tv_weight": "total-variation (smoothness) loss weight",
        "style_scale": "style image long side as a multiple of --size",
        "scales": "coarse-to-fine: optimize at size / 2^(N-1) first, then double",
        "preserve_color": "keep the content's colours: luminance transfer or histogram matching",
        "content_layers": "VGG layers of the content loss",
        "style_layers": "VGG layers whose Gram matrices make the style loss",
        "seed": "seed of the noise start",
        "device": "auto, cpu, cuda or cuda:N",
        "dtype": "compute precision: auto is bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
        "vgg_weights": VGG_WEIGHTS_HELP,
    }


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

    def summary(self) -> dict:
        return {
            "settings": asdict(self.config),
            "weights_sha256": self.weights_sha256,
            "initial_losses": self.initial_losses,
            "final_losses": self.final_losses,
            "seconds": self.seconds,
            "size": list(self.image.shape[-2:]),
            "styles": self.styles,
        }


def _validate(config: OptimizeConfig, n_styles: int) -> None:
    if config.optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be lbfgs or adam, got {config.optimizer!r}")
    if config.init not in ("content", "noise"):
        raise ValueError(f"init must be content or noise, got {config.init!r}")
    if config.preserve_color not in PRESERVE_COLOR:
        raise ValueError(f"preserve_color must be one of {', '.join(PRESERVE_COLOR)}, got {config.preserve_color!r}")
    for name, low in (("size", 16), ("iterations", 1), ("scales", 1)):
        if getattr(config, name) < low:
            raise ValueError(f"--{name} must be at least {low}, got {getattr(config, name)}")
    if config.style_scale <= 0:
        raise ValueError(f"style_scale must be positive, got {config.style_scale}")
    if config.style_blend is not None:
        if len(config.style_blend) != n_styles:
            raise ValueError(f"style_blend has {len(config.style_blend)} weights for {n_styles} style images")
        if any(w < 0 for w in config.style_blend) or sum(config.style_blend) <= 0:
            raise ValueError(f"style_blend weights must be non-negative with a positive sum: {config.style_blend}")


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
    blended: dict[str, Tensor] = {}
    for source, w in zip(sources, blend):
        if source.targets is not None:
            grams = source.targets.grams
        else:
            grams = compute_style_targets(
                source.image, style_size=style_size, layers=config.style_layers, extractor=extractor,
                style_name=source.name, style_sha256=None, device=device,
            ).grams  # fmt: skip
        for layer in config.style_layers:
            g = grams[layer].to(device) * w
            blended[layer] = g if layer not in blended else blended[layer] + g
    return blended


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
    images only). ``overrides`` replace fields of ``config`` (e.g. ``iterations=100``). ``extractor``
    replaces the VGG (tests pass a tiny stand-in).
    """
    config = config or OptimizeConfig()
    if overrides:
        config = OptimizeConfig(**{**asdict(config), **overrides})
    styles: Sequence = style if isinstance(style, (list, tuple)) else [style]
    _validate(config, len(styles))
    device = resolve_device(config.device)
    autocast = resolve_autocast_dtype(config.dtype, device)
    torch.manual_seed(config.seed)

    content_full = load_image(content) if not isinstance(content, Tensor) else content
    sources = [_style_source(s) for s in styles]
    config = adopt_target_weights(config, *sources)
    if extractor is None:
        extractor = VGGFeatures(
            tuple(config.content_layers) + tuple(config.style_layers), weights=config.vgg_weights or "default"
        )
    memory_format = preferred_memory_format(device, autocast)
    extractor = extractor.to(device, memory_format=memory_format)
    weights_sha256 = getattr(extractor, "weights_sha256", "") or ""
    for source in sources:
        if source.targets is not None:
            check_targets(source.targets, config.style_layers, extractor, f"style {source.spec}")
    stored = any(source.targets is not None for source in sources)

    start = time.perf_counter()
    image: Tensor | None = None
    initial: dict[str, float] = {}
    history: list[dict[str, float]] = []
    sizes = [max(16, round(config.size / 2 ** (config.scales - 1 - k))) for k in range(config.scales)]
    for scale_index, size in enumerate(sizes):
        target = resize_long_side(content_full, size).unsqueeze(0).to(device)  # (1, 3, H, W)
        style_size = max(16, round(size * config.style_scale))
        loss_fn = PerceptualLoss.from_config(config, extractor)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            if stored:
                loss_fn.set_style_targets(
                    _blended_targets(sources, config, style_size, extractor, device),
                    vgg_weights_sha256=getattr(extractor, "weights_sha256", None), source="the blended style targets",
                )  # fmt: skip
            else:
                loss_fn.set_style([resize_long_side(s.image, style_size).to(device) for s in sources], config.style_blend)
            loss_fn.set_content(target)
        if image is None:
            if config.init == "content":
                image = target.clone()
            else:
                image = torch.rand(target.shape, generator=torch.Generator().manual_seed(config.seed)).to(device)
        else:  # coarse-to-fine: start from the previous scale's result
            image = F.interpolate(image, size=target.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        # The pixels stay NCHW (L-BFGS flattens their gradient with .view); the VGG input is
        # converted to the fast layout inside the closure.
        image = image.detach().contiguous().requires_grad_(True)
        count = [0]

        def closure() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            pixels = image.clamp(0, 1) if CLAMP_PIXELS_IN_LOSS else image
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                total, terms = loss_fn(pixels.contiguous(memory_format=memory_format))
            total.backward()
            count[0] += 1
            # the step this evaluation belongs to: L-BFGS's line search may evaluate a step more than once
            step = optimizer.state[image].get("n_iter", 0) if config.optimizer == "lbfgs" else count[0]
            losses = {"total": total.item(), **{k: v.item() for k, v in terms.items()}}
            if not math.isfinite(losses["total"]):
                raise RuntimeError(f"loss became {losses['total']} at iteration {step} (scale {size} px)")
            if not initial and scale_index == 0:
                initial.update(losses)
            history.append({"scale": size, "iteration": step, "evaluation": count[0], **losses})
            if on_iteration is not None:
                on_iteration(scale_index, step, losses)
            return total

        if config.optimizer == "lbfgs":
            optimizer = torch.optim.LBFGS(
                [image], lr=config.lr, max_iter=config.iterations, max_eval=config.iterations * 5 // 4,
                history_size=50, tolerance_grad=-1, tolerance_change=-1, line_search_fn=LBFGS_LINE_SEARCH,
            )  # fmt: skip
            optimizer.step(closure)
        else:
            optimizer = torch.optim.Adam([image], lr=config.lr * 0.02)
            for _ in range(config.iterations):
                optimizer.step(closure)
    assert image is not None
    result = image.detach().clamp(0, 1)
    result = preserve_color(result, resize_long_side(content_full, sizes[-1]).unsqueeze(0).to(device), config.preserve_color)
    # The losses of the image returned, which the optimizer's last evaluation need not be (a line
    # search trial, the point before Adam's last update, or before the colour preservation).
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        total, terms = loss_fn(result.contiguous(memory_format=memory_format))
    final = {"total": total.item(), **{k: v.item() for k, v in terms.items()}}
    return OptimizeResult(
        result[0].float().cpu(), config, initial, final, time.perf_counter() - start, weights_sha256, history,
        [source.to_json() for source in sources],
    )  # fmt: skip
