"""figure.png: the style, a held-out photo, both generators' outputs, and the contrast series."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from instyle.apps.experiment.config import NORMS, ExperimentConfig
from instyle.apps.experiment.measures import forward
from instyle.engine.fileio import write_atomic
from instyle.engine.image import resize_long_side
from instyle.engine.modelfile import ModelFileError
from instyle.engine.targets import StyleSource


def _show(ax, image: Tensor, title: str) -> None:
    ax.imshow(image.squeeze(0).clamp(0, 1).permute(1, 2, 0).cpu().numpy())
    ax.set_title(title, fontsize=9)


def _style_panel(ax, style: StyleSource, x: Tensor, config: ExperimentConfig) -> None:
    """The painting when there is one; for stored targets (no painting shipped), the output of the
    model file that carries them, or a text panel when it cannot be run."""
    if style.image is not None:
        _show(ax, resize_long_side(style.image, config.figure_size), "style")
        return
    try:
        from instyle.engine.modelfile import load_generator

        generator, _ = load_generator(style.path)
        _show(ax, forward(generator.to(x.device), x), f"style {style.name}: its model's output\n(no painting shipped)")
    except (ModelFileError, RuntimeError, ValueError):
        ax.text(0.5, 0.5, f"style: {style.name}\nstored statistics at\n{style.targets.style_size} px (no painting)",
                ha="center", va="center", fontsize=9, transform=ax.transAxes)  # fmt: skip


def write_figure(
    config: ExperimentConfig, models, photo: Tensor, name: str, style: StyleSource, path: Path, device: torch.device
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = resize_long_side(photo, config.figure_size).unsqueeze(0).to(device)  # (1, 3, H, W)
    mean = x.mean(dim=(2, 3), keepdim=True)
    factors = config.contrast_factors
    inputs = [(mean + k * (x - mean)).clamp(0, 1) for k in factors]
    outputs = {norm: [forward(models[norm], xk) for xk in inputs] for norm in NORMS}
    columns = max(4, len(factors))
    fig, axes = plt.subplots(4, columns, figsize=(2.6 * columns, 2.6 * 4 * x.shape[2] / x.shape[3] + 0.6))
    for ax in axes.flat:
        ax.axis("off")
    k1 = factors.index(1.0)
    _style_panel(axes[0, 0], style, x, config)
    _show(axes[0, 1], x, f"content ({name})")
    _show(axes[0, 2], outputs["instance"][k1], "instance norm")
    _show(axes[0, 3], outputs["batch"][k1], "batch norm (eval)")
    for j, k in enumerate(factors):
        _show(axes[1, j], inputs[j], f"contrast x{k:g}")
        _show(axes[2, j], outputs["instance"][j], f"IN, contrast x{k:g}")
        _show(axes[3, j], outputs["batch"][j], f"BN, contrast x{k:g}")
    fig.suptitle(f"instyle experiment in-vs-bn{' --quick' if config.quick else ''}: held-out photo", fontsize=10)
    fig.tight_layout()
    try:
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
