"""Rewrites the style targets a model file carries (every style's, in a multi-style file) in another
dtype, weights and metadata unchanged, atomically:

    .venv/bin/python tools/pack_style_targets.py out/multi/multi.safetensors --dtype bfloat16

bf16 halves them (a Gram target of relu1_1..relu4_1 is 0.70 MB a style in fp32) at 3 significant
digits, with fp32's range; the bundled multi-style model stores its ten styles' targets so, to stay
under 6 MB. Every reader of the format reads them (the packed triangle is cast to fp32 on reading).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="+", help="model file(s) (.safetensors) with style targets")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)

    from instyle.engine.modelfile import ModelFileError, recast_style_targets

    failed = 0
    for model in args.model:
        try:
            targets = recast_style_targets(model, args.dtype)
        except (ModelFileError, OSError) as error:
            failed += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        print(f"{model}: {len(targets)} style(s)' targets in {args.dtype} ({Path(model).stat().st_size / 1e6:.2f} MB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
