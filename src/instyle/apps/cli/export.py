"""``instyle export``: a style model, or the arbitrary model (any painting), as ONNX."""

from __future__ import annotations

import argparse
import json

from instyle.apps.cli.common import fail


def add_parser(sub) -> None:
    export = sub.add_parser(
        "export", help="export a style model, or AdaIN for any painting, to ONNX (dynamic batch, height and width)",
        description="Export a style model to OUT.onnx: image -> stylized. MODEL adain (or an AdaIN decoder file) "
        "exports the arbitrary model as two files: OUT.onnx (image, style_mean, style_std, strength -> stylized), one "
        "file for every painting, and OUT.style.onnx (painting -> style_mean, style_std), a painting's relu4_1 "
        "statistics. The painting goes in scaled to a long side of 512 px; see docs/adain.md. A multi-style model "
        "exports whole: image, style_weights (N or 1, S; one weight per style, in the order the metadata "
        "'styles' lists) -> stylized; see docs/multi_style.md.",
    )  # fmt: skip
    export.add_argument(
        "model", metavar="MODEL", help="bundled style name, model file (.safetensors), or adain (any painting)"
    )
    export.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument(
        "--decoder", metavar="FILE",
        help="with MODEL adain: the AdaIN decoder, trained with `instyle train-adain` (default: the bundled one)",
    )  # fmt: skip
    export.add_argument(
        "--exporter", default="dynamo", choices=("dynamo", "torchscript"),
        help="torch.onnx.export's torch.export-based exporter or the legacy TorchScript one (default: dynamo)",
    )  # fmt: skip
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.engine.config import ConfigError
    from instyle.engine.fileio import WriteError
    from instyle.engine.inference.export import ExportError, onnx_metadata
    from instyle.engine.inference.onnx_adain import export_any
    from instyle.engine.modelfile import ModelFileError
    from instyle.engine.weights import WeightsError

    try:
        path = export_any(args.model, args.onnx, exporter=args.exporter, decoder=args.decoder)
    except (ModelFileError, ConfigError, WeightsError) as error:
        return fail("export", error, 2, {"decoder"})
    except WriteError as error:  # "cannot write OUT.onnx: ...", without the "[Errno N]" of str()
        return fail("export", error.strerror, 1)
    except (ExportError, ValueError, OSError) as error:
        return fail("export", error, 1)
    meta = onnx_metadata(path)
    what = f"{path} ({_size(path)}, style {meta.get('style_name')}, {args.exporter} exporter)"
    if meta.get("style_graph"):
        style = path.with_name(meta["style_graph"])
        print(f"wrote {what} and {style} ({_size(style)}, a painting's statistics): input {meta.get('input')}")
    elif meta.get("styles"):
        names = ", ".join(json.loads(meta["styles"]))
        print(f"wrote {what}: inputs {meta.get('input')} and {meta.get('style_weights')}; styles in order: {names}")
    else:
        print(f"wrote {what}: input {meta.get('input')}")
    return 0


def _size(path) -> str:
    return f"{path.stat().st_size / 1024:.0f} KiB"
