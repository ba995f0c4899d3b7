"""Adds the style targets (the painting's VGG Gram statistics) to existing model files, so that their
style can be used by name without the painting (``instyle train/optimize/texture/experiment --style NAME``).

    .venv/bin/python tools/attach_style_targets.py src/instyle/styles/starry_night.safetensors \\
        --style ../shared/data/styles/starry_night.jpg [--extra-layers relu5_1]

The painting must be the one the model was trained on (its sha256 is checked against the model's
metadata); the targets are computed with the recorded style size, style layers and VGG weights, and
the file is rewritten atomically (weights and metadata unchanged). Running it again recomputes them.
``--extra-layers relu5_1`` also stores that layer, which ``instyle optimize`` and ``instyle texture``
use by default (+0.5 MB per 512-channel layer, fp32).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="+", help="model file(s) (.safetensors)")
    parser.add_argument(
        "--style", required=True, nargs="+",
        help="the painting(s) the models were trained on, one per model, in the same order",
    )  # fmt: skip
    parser.add_argument("--extra-layers", nargs="+", default=(), metavar="LAYER", help="VGG layers to store besides the training's")
    args = parser.parse_args(argv)
    if len(args.style) != len(args.model):
        print(f"error: {len(args.model)} model files but {len(args.style)} --style paintings", file=sys.stderr)
        return 2

    from instyle.engine.image import ImageError
    from instyle.engine.modelfile import ModelFileError
    from instyle.engine.targets import StyleTargetsError, attach_style_targets
    from instyle.engine.weights import WeightsError

    failed = 0
    for model, painting in zip(args.model, args.style):
        try:
            targets = attach_style_targets(model, painting, extra_layers=args.extra_layers)
        except (StyleTargetsError, ModelFileError, ImageError, WeightsError, OSError) as error:
            failed += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        size = Path(model).stat().st_size / 1e6
        print(f"{model}: style targets of {', '.join(targets.layers)} at {targets.style_size} px written ({size:.2f} MB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
