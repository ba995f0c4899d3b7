"""``instyle demo``: stylize scikit-image's photos with the bundled styles, then compare instance norms."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from instyle import __version__
from instyle.apps.cli.common import add_device, fail, number
from instyle.apps.demo import DEMO_SIZES


def add_parser(sub) -> None:
    demo = sub.add_parser("demo", help="run the main demo on embedded defaults")
    demo.add_argument("--out", default="out", help="output folder (default: out)")
    low, high = DEMO_SIZES
    demo.add_argument(
        "--size", type=number(int, low, high), default=512, help=f"long side of the demo photos, {low}..{high} (default: 512)"
    )  # fmt: skip
    add_device(demo)
    demo.add_argument("--no-bench", action="store_true", help="skip the instance-norm comparison")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.apps.demo import run_demo
    from instyle.engine.device import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as error:
        return fail("demo", error, 2)
    out = Path(args.out)  # made once the options are known to be good
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # --out names an existing file, or a folder that cannot be made
        return fail("demo", f"--out {out}: {'is a file' if out.is_file() else error.strerror or error}", 2)
    print(f"instyle {__version__}, torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads\n")
    rows, grid = run_demo(out, size=args.size, device=str(device))
    if rows:
        print(f"Stylization of scikit-image's photos at {args.size} px (seconds per image)")
        width = max(18, *(len(row.style) + 2 for row in rows))  # a mix's label is long
        for row in rows:
            print(f"  {row.style:<{width}}{row.photo:<12}{row.seconds:>8.3f} s  -> {row.output}")
        print(f"grid: {grid}\n")
    else:
        print("no bundled styles in this installation: skipping the stylization grid\n")
    if not args.no_bench:
        _norm_comparison(out)
    return 0


def _norm_comparison(out: Path) -> None:
    from instyle.apps.compare import accuracy_rows, speed_rows

    print("Instance norm: accuracy against a float64 oracle (max abs error; lower is better)")
    print(f"{'input':<22}{'torch':>14}{'instyle':>14}")
    accuracy = accuracy_rows()
    for row in accuracy:
        print(f"{row.case:<22}{row.torch_error:>14.3g}{row.instyle_error:>14.3g}")
    print("\nInstance norm: forward time, median of 10 (ms)")
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
