"""The main demo: every bundled style applied to scikit-image's photos, and a grid."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

DEMO_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
DEMO_SIZES = (16, 4096)  # the long sides offered: big enough to see a style, small enough for the grid's memory


@dataclass
class DemoRow:
    photo: str
    style: str
    seconds: float
    output: Path


def run_demo(out: Path, size: int = 512, device: str = "auto") -> tuple[list[DemoRow], Path | None]:
    """Stylize the demo photos with each bundled style into ``out``; returns the rows and the grid.
    A ``size`` outside :data:`DEMO_SIZES` is a ValueError, before anything is made."""
    # imported here: the command line reads DEMO_SIZES to build its parser, at every start
    from instyle.engine.catalog import list_models
    from instyle.engine.image import default_content_images, resize_long_side, save_image
    from instyle.engine.inference.stylize import load_model

    low, high = DEMO_SIZES
    if isinstance(size, bool) or not isinstance(size, int) or not low <= size <= high:
        raise ValueError(f"size must be an int in [{low}, {high}], got {size!r}")
    out.mkdir(parents=True, exist_ok=True)
    photos = {name: resize_long_side(img, size) for name, img in default_content_images() if name in DEMO_PHOTOS}
    photos = {name: photos[name] for name in DEMO_PHOTOS if name in photos}
    rows: list[DemoRow] = []
    grid_rows = [[_fit(img, size) for img in photos.values()]]
    for style in list_models():
        model = load_model(style)
        model.stylize(torch.rand(3, 64, 64), device=device)  # warm-up: first-call set-up is not the model's time
        row = []
        for name, img in photos.items():
            start = time.perf_counter()
            result = model.stylize(img, device=device, dtype="auto")
            seconds = time.perf_counter() - start
            path = save_image(result, out / f"{name}_{style}.png")
            rows.append(DemoRow(name, style, seconds, path))
            row.append(_fit(result, size))
        grid_rows.append(row)
    if len(grid_rows) == 1:
        return rows, None
    grid = torch.cat([torch.cat(r, dim=2) for r in grid_rows], dim=1)
    return rows, save_image(grid, out / "demo.png")


def _fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop/pad to size x size so the grid lines up."""
    c, h, w = image.shape
    canvas = torch.ones(c, size, size)
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    crop = image[:, top : top + size, left : left + size]
    y, x = (size - crop.shape[1]) // 2, (size - crop.shape[2]) // 2
    canvas[:, y : y + crop.shape[1], x : x + crop.shape[2]] = crop
    return canvas
