"""``instyle experiment in-vs-bn``: the seed's claims, measured (instyle.apps.experiment)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from instyle.apps.cli.common import add_device, fail


# ExperimentConfig's fields that errors name, and their flags
_FLAGS = {"style": "--style", "eval_dir": "--eval", "output": "-o", "device": "--device", "seed": "--seed"}


def add_parser(sub) -> None:
    experiment = sub.add_parser("experiment", help="reproduce the seed's claims with numbers and figures")
    names = experiment.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    in_vs_bn = names.add_parser(
        "in-vs-bn", help="instance vs batch norm in the generator: loss, contrast, batch dependence, data size, speed"
    )
    in_vs_bn.add_argument("--quick", action="store_true", help="small sizes for a CPU (under 20 minutes on 2 cores)")
    in_vs_bn.add_argument(
        "--style", default=None, metavar="NAME_OR_IMAGE",
        help="a style image, a bundled style name or a model file with style targets "
        "(default: the first bundled style with style targets)",
    )  # fmt: skip
    in_vs_bn.add_argument("--eval", default=None, metavar="DIR", help="held-out photos (default: 2 held back from the content set)")
    in_vs_bn.add_argument("-o", "--output", default="out/in_vs_bn", help="output folder (default: out/in_vs_bn)")
    add_device(in_vs_bn)
    in_vs_bn.add_argument("--seed", type=int, default=0, help="seed of both trainings (default: 0)")
    in_vs_bn.set_defaults(func=run)


def _command(args: argparse.Namespace, style: str) -> str:
    """The command line recorded at the top of report.md, with the style it resolved to."""
    words = ["instyle", "experiment", args.experiment] + ["--quick"] * args.quick + ["--style", style]
    words += ["--eval", args.eval] * (args.eval is not None) + ["-o", args.output]
    words += ["--device", args.device] * (args.device != "auto") + ["--seed", str(args.seed)] * (args.seed != 0)
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from instyle.apps.experiment import ExperimentConfig, ExperimentError, run_in_vs_bn
    from instyle.engine.image import ImageError
    from instyle.engine.modelfile import ModelFileError
    from instyle.engine.targets import ATTACH_TOOL, StyleTargetsError, default_style
    from instyle.engine.training import TrainingError
    from instyle.engine.weights import WeightsError

    style = args.style or default_style()
    if style is None:
        return fail(
            "experiment", "no bundled style carries style targets; pass --style IMG (a painting), or attach targets "
            f"to a model with `{ATTACH_TOOL} MODEL --style PAINTING` and pass --style MODEL", 2,
        )  # fmt: skip
    options = dict(style=str(style), output=args.output, eval_dir=args.eval, device=args.device, seed=args.seed)
    options["command"] = _command(args, str(style))
    config = ExperimentConfig.quick_preset(**options) if args.quick else ExperimentConfig(**options)
    started = [0.0]

    def on_progress(message: str) -> None:
        now = time.perf_counter()
        started[0] = started[0] or now
        print(f"[{now - started[0]:6.0f} s] {message}", file=sys.stderr, flush=True)

    try:
        report = run_in_vs_bn(config, on_progress=on_progress)
    except (ExperimentError, ImageError, TrainingError, WeightsError, ModelFileError, StyleTargetsError, OSError) as error:
        code = 2 if isinstance(error, (ExperimentError, ImageError, StyleTargetsError)) else 1
        return fail("experiment", error, code, names=_FLAGS)
    for claim in report["claims"]:
        verdict = {True: "holds", False: "does NOT hold", None: "not tested"}[claim["holds"]]
        print(f"{claim['claim']}: {verdict} ({claim['evidence']})")
    print(f"wrote report.md, report.json and figure.png in {config.output} ({report['meta']['wall_seconds'] / 60:.1f} min)")
    return 0
