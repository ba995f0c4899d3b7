"""``instyle export``: a style model as ONNX."""

from __future__ import annotations

import argparse

from instyle.apps.cli.common import fail


def add_parser(sub) -> None:
    export = sub.add_parser("export", help="export a style model to ONNX (dynamic batch, height and width)")
    export.add_argument("model", help="bundled style name or model file (.safetensors)")
    export.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument(
        "--exporter", default="dynamo", choices=("dynamo", "torchscript"),
        help="torch.onnx.export's torch.export-based exporter or the legacy TorchScript one (default: dynamo)",
    )  # fmt: skip
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.engine.fileio import WriteError
    from instyle.engine.inference.export import ExportError, export_model, onnx_metadata
    from instyle.engine.modelfile import ModelFileError

    try:
        path = export_model(args.model, args.onnx, exporter=args.exporter)
    except ModelFileError as error:
        return fail("export", error, 2)
    except WriteError as error:  # "cannot write OUT.onnx: ...", without the "[Errno N]" of str()
        return fail("export", error.strerror, 1)
    except (ExportError, ValueError, OSError) as error:
        return fail("export", error, 1)
    meta = onnx_metadata(path)
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, style {meta.get('style_name')}, {args.exporter} exporter): "
        f"input {meta.get('input')}"
    )
    return 0
