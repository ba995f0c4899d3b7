"""Small thumbnails of the bundled styles' paintings for the web page's style picker.

The style files store the paintings' statistics, not the paintings; the page shows each style as a
96 px square JPEG of its painting (a few KB), written to src/instyle/styles/thumbs/NAME.jpg, NAME
the style's name (a single-style file's stem, or the style's name inside a multi-style file). The
bundled paintings are public domain (src/instyle/styles/MODEL_CARD.md).

    python tools/make_style_thumbs.py [--paintings ../shared/data/styles] [--size 96]

A bundled style whose painting (NAME.jpg or NAME.png) is not in the folder is reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageOps

from instyle.engine.catalog import STYLES_DIR, bundled_styles

THUMBS = STYLES_DIR / "thumbs"


def thumbnail(painting: Path, out: Path, size: int) -> Path:
    """``painting`` centre-cropped to a square, scaled to ``size`` px, as a JPEG at ``out``."""
    with Image.open(painting) as image:
        square = ImageOps.fit(ImageOps.exif_transpose(image).convert("RGB"), (size, size), Image.LANCZOS)
    square.save(out, format="JPEG", quality=85, optimize=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paintings", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "styles")
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    THUMBS.mkdir(exist_ok=True)
    missing = 0
    for style in bundled_styles():
        name = style.style or style.name
        found = [p for p in (args.paintings / f"{name}.jpg", args.paintings / f"{name}.png") if p.is_file()]
        if not found:
            print(f"{name}: no painting in {args.paintings}, skipped", file=sys.stderr)
            missing += 1
            continue
        out = thumbnail(found[0], THUMBS / f"{name}.jpg", args.size)
        print(f"{out} ({out.stat().st_size / 1024:.1f} KiB)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
