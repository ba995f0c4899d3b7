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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instyle", description="Instance normalization and fast neural style transfer for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"instyle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the main demo on embedded defaults")
    demo.add_argument("--out", default="out", help="output folder (default: out)")
    demo.set_defaults(func=_cmd_demo)
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
