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
    runs = [(style, load_model(style), None) for style in list_models()] + demo_mixes() + demo_paintings(device)
    for style, model, mix in runs:
        model.stylize(torch.rand(3, 64, 64), device=device, style=mix)  # warm-up: first-call set-up is not the model's time
        row = []
        for name, img in photos.items():
            start = time.perf_counter()
            result = model.stylize(img, device=device, dtype="auto", style=mix)
            seconds = time.perf_counter() - start
            path = save_image(result, out / f"{name}_{style.replace(':', '-')}.png")
            rows.append(DemoRow(name, style, seconds, path))
            row.append(_fit(result, size))
        grid_rows.append(row)
    if len(grid_rows) == 1:
        return rows, None
    grid = torch.cat([torch.cat(r, dim=2) for r in grid_rows], dim=1)
    return rows, save_image(grid, out / "demo.png")


def demo_mixes() -> list:
    """``(label, model, mix)`` of each bundled multi-style file: its first two styles half and half,
    labelled ``FILE:a50+b50`` (what `instyle stylize --style-mix` does between two styles)."""
    from instyle.engine.catalog import bundled_styles
    from instyle.engine.inference.stylize import load_model, mix_label

    files = list(dict.fromkeys(s.path for s in bundled_styles() if s.style is not None))
    mixes = []
    for path in files:
        model = load_model(path)
        mix = dict.fromkeys(model.styles[:2], 0.5)
        if len(mix) == 2:
            mixes.append((f"{path.stem}:{mix_label(model.style_weights(mix), model.styles)}", model, mix))
    return mixes


def demo_paintings(device: str) -> list:
    """``(label, model, painting's statistics)`` of AdaIN with the demo painting (a bundled style's
    thumbnail), through the bundled decoder and the distilled pair, those bundled."""
    from instyle.engine import catalog
    from instyle.engine.image import load_image
    from instyle.engine.inference.adain import DEFAULT_STYLE_SIZE, load_adain

    painting, runs = catalog.ADAIN_DEMO_PAINTING, []
    if not painting.is_file():
        return runs
    image = load_image(painting)
    # at its own size when smaller than the default: a thumbnail enlarged loses its strokes
    size = min(DEFAULT_STYLE_SIZE, max(image.shape[-2:]))
    for label, path in (("adain", catalog.ADAIN_DECODER), ("adain-fast", catalog.ADAIN_FAST)):
        if path.is_file():
            model = load_adain(path)
            runs.append((f"{label}:{painting.stem}", model, model.style(image, style_size=size, device=device)))
    return runs


def _fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop/pad to size x size so the grid lines up."""
    c, h, w = image.shape
    canvas = torch.ones(c, size, size)
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    crop = image[:, top : top + size, left : left + size]
    y, x = (size - crop.shape[1]) // 2, (size - crop.shape[2]) // 2
    canvas[:, y : y + crop.shape[1], x : x + crop.shape[2]] = crop
    return canvas


SHEET_PHOTO = "astronaut"  # the contact sheet's default photo: one of the demo's
SHEET_LABEL = 18  # pixels of label under each tile


def style_sheet(photo: torch.Tensor, size: int = 256, columns: int = 4, device: str = "auto"):
    """One photo in every bundled style (each style of a multi-style file too) as a PIL contact
    sheet: the photo first, then one tile per style, each with its name under it. ``photo`` is a
    (3, H, W) float tensor; it is scaled to a long side of ``size`` and each result centre-cropped
    to ``size`` x ``size``. ValueError when there is no bundled style."""
    from instyle.engine.catalog import list_models
    from instyle.engine.image import resize_long_side, to_pil
    from instyle.engine.inference.stylize import load_model

    names = list_models()
    if not names:
        raise ValueError("no bundled styles in this installation: nothing to put on a contact sheet")
    small = resize_long_side(photo, size)
    tiles = [("photo", _fit(small, size))]
    for name in names:
        tiles.append((name, _fit(load_model(name).stylize(small, device=device), size)))
    return labelled_grid([(label, to_pil(tile)) for label, tile in tiles], size, columns)


def labelled_grid(tiles, size: int, columns: int):
    """``(label, PIL image of size x size)`` pairs on a white sheet, ``columns`` a row, each label
    under its tile (PIL's default font, so that no font file is needed)."""
    from PIL import Image, ImageDraw

    pad, columns = 4, max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    cell_w, cell_h = size + pad, size + SHEET_LABEL + pad
    sheet = Image.new("RGB", (columns * cell_w + pad, rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, tile) in enumerate(tiles):
        x, y = pad + (index % columns) * cell_w, pad + (index // columns) * cell_h
        sheet.paste(tile, (x, y))
        text = label if draw.textlength(label) <= size else label[: max(1, size // 7)] + "..."
        draw.text((x + 2, y + size + 3), text, fill="black")
    return sheet
