"""What a run leaves in its log folder besides the checkpoint: the CSV logs, the loss curve and
grids of stylized photos."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from torch import Tensor

from instyle.engine.fileio import write_atomic
from instyle.engine.image import resize_long_side, save_image


def write_rows(rows: list[dict[str, float]], path: Path) -> None:
    """``rows`` as a CSV file with a header (the keys of the first row), written atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def write_log(
    history: list[dict[str, float]], log_dir: Path, heldout: list[dict[str, float]] = (), plot: bool = True
) -> None:
    """The CSV log and (with ``plot``) the loss-curve PNG, with the held-out total where evaluated."""
    if not history:
        return
    write_rows(history, log_dir / "log.csv")
    if plot:
        _plot_losses(history, heldout, log_dir / "loss_curve.png")


def _plot_losses(history: list[dict[str, float]], heldout: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    for key in history[0]:
        if key not in ("step", "images_per_s"):
            ax.plot(steps, [h[key] for h in history], label=key)
    if heldout:
        ax.plot([h["step"] for h in heldout], [h["total"] for h in heldout], "ko-", label="held-out total")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    try:
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


@torch.no_grad()
def save_samples(model: torch.nn.Module, images: list[Tensor], path: Path, device: torch.device) -> None:
    """A grid of up to four photos (256 px long side) above their stylized versions, in eval mode."""
    was_training = model.training
    model.eval()
    row = [resize_long_side(img, 256) for img in images[:4]]
    outputs = [model(img.unsqueeze(0).to(device)).float().cpu()[0] for img in row]
    height = min(img.shape[1] for img in row)
    tiles = [torch.cat([a[:, :height], b[:, :height]], dim=1) for a, b in zip(row, outputs)]
    save_image(torch.cat(tiles, dim=2), path)
    model.train(was_training)
